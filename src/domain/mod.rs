//! The pure core: bucketing, the staged plan, the rollout state machine. No I/O, no clock.

pub mod bucket;
pub mod plan;
pub mod rollout;
