//! The pure core: bucketing, the staged plan, the rollout state machine, guard verdicts. No I/O, no clock.

pub mod bucket;
pub mod guards;
pub mod plan;
pub mod rollout;
