//! The pure core: bucketing, the staged plan, the rollout state machine, guard verdicts, the review
//! timeline. No I/O, no clock.

pub mod bucket;
pub mod calendar;
pub mod duration;
pub mod evidence;
pub mod guards;
pub mod plan;
pub mod report;
pub mod rollout;

/// Seconds as milliseconds, saturating at `i64::MAX` (settings are `u64` seconds, time is `i64` ms).
pub fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}
