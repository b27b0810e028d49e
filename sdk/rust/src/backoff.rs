//! Reconnection delays: exponential, capped, with "equal jitter" (a uniform draw in the upper
//! half) so that a fleet of clients dropped at once does not reconnect in lockstep.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        // A per-process random seed; `| 1` keeps xorshift away from its fixed point 0.
        let seed = RandomState::new().hash_one(std::process::id()) | 1;
        Backoff { base, max: max.max(base), attempt: 0, rng: seed }
    }

    /// The ceiling of the next delay: `base * 2^attempt`, at most `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay, uniform in `[ceiling / 2, ceiling]`; each call doubles the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.random() % span.saturating_add(1))
    }

    /// Starts over from `base` (after a connection that delivered events).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_stay_in_the_upper_half_and_never_pass_the_cap() {
        let (base, max) = (Duration::from_millis(250), Duration::from_secs(30));
        let mut backoff = Backoff::new(base, max);
        for attempt in 0..100u32 {
            let ceiling = base.saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX)).min(max);
            assert_eq!(backoff.ceiling(), if attempt < 31 { ceiling } else { max }, "attempt {attempt}");
            let delay = backoff.next_delay();
            assert!(delay >= backoff_floor(attempt, base, max) && delay <= max, "attempt {attempt}: {delay:?}");
        }
        backoff.reset();
        let first = backoff.next_delay();
        assert!(first >= base / 2 && first <= base, "after a reset: {first:?}");
    }

    fn backoff_floor(attempt: u32, base: Duration, max: Duration) -> Duration {
        base.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX)).min(max) / 2
    }

    #[test]
    fn delays_are_jittered_not_constant() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: std::collections::HashSet<Duration> = (0..50).map(|_| backoff.next_delay()).collect();
        assert!(delays.len() > 40, "only {} distinct delays in 50", delays.len());
        let mut other = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let mut again = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        assert_ne!(
            (0..5).map(|_| other.next_delay()).collect::<Vec<_>>(),
            (0..5).map(|_| again.next_delay()).collect::<Vec<_>>(),
            "two clients must not share a jitter sequence"
        );
    }
}
