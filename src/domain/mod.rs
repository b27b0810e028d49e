//! The pure core: bucketing, the staged plan, the rollout state machine, guard verdicts, the review
//! timeline. No I/O, no clock.

pub mod bucket;
pub mod calendar;
pub mod evidence;
pub mod guards;
pub mod plan;
pub mod report;
pub mod rollout;
