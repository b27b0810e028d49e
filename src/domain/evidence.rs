//! Evidence for guard decisions: confidence sequences, intervals that hold at every look at once.
//!
//! The controller looks at a guard after every push and every tick. An interval that is valid for
//! one look (Wilson, normal) excludes the true rate far more often than its nominal 5% when it is
//! recomputed hundreds of times (the peeking problem), so a flag would be rolled back or advanced
//! on noise. The intervals here are *confidence sequences*: with probability at least the
//! confidence, they contain the true value at every look at once (Ville's inequality applied to a
//! nonnegative martingale), so every look may be acted on.
//!
//! - [`rate_interval`]: one rate (k events in n trials) by the beta-binomial mixture martingale
//!   (Robbins 1970; Howard, Ramdas, McAuliffe, Sekhon 2021). Chosen over betting sequences for its
//!   closed form (one `ln B` per look, the ends found by bisection) and because it is exact for
//!   Bernoulli counts, which is what every rate guard counts.
//! - [`difference_interval`]: a linear contrast of two rates (treatment − (1 + ρ)·control − δ) by
//!   the normal-mixture SPRT (Johari, Pekelis, Walsh 2017), which takes unequal cohorts (10% vs
//!   90%) through the estimated variance; it rests on the normal approximation, so callers keep a
//!   minimum count per cohort before it may act.
//! - [`share_mismatch`]: a sample-ratio check, the beta-binomial mixture tested at the share the
//!   flag should serve.

use statrs::function::beta::ln_beta;

/// The confidence of a guard decision when the flag does not set one.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// Weight, in pseudo-observations, of the Beta prior mixed over in [`rate_interval`], centred on
/// the guard's threshold `c`: `2(1 − s)/s` with `s = min(c, 1 − c)`, a prior whose standard
/// deviation is about 70% of the threshold's distance from 0 (or 1), so alternatives a few times
/// the threshold carry most of the weight. Chosen with the simulator
/// (`cargo run --release --example guard-sim`) over weights 10–500 at a threshold of 0.01
/// (weight 198 here): fewest false advances at 1.5× and rollbacks at 0.5× with the 3× median still
/// under 400 requests; see docs/guards.md.
pub fn prior_weight(center: f64) -> f64 {
    let s = center.min(1.0 - center).clamp(1e-6, 0.5);
    (2.0 * (1.0 - s) / s).clamp(2.0, 1e7)
}

/// The sample-ratio check acts at this significance (p < 0.001), whatever the flag's confidence.
pub const SHARE_MISMATCH_ALPHA: f64 = 0.001;

/// Both ends of an interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.lower <= x && x <= self.upper
    }
}

/// `ln M(θ)` of the beta-binomial mixture: the evidence, after `k` events in `n` trials, against a
/// true rate of `θ`. Under rate θ, `M` is a nonnegative martingale with mean 1.
struct Mixture {
    k: f64,
    n: f64,
    /// `ln B(a + k, b + n − k) − ln B(a, b)`.
    norm: f64,
}

impl Mixture {
    fn new(k: u64, n: u64, center: f64) -> Self {
        let weight = prior_weight(center);
        let (k, n) = (k as f64, n as f64);
        let c = center.clamp(1e-9, 1.0 - 1e-9);
        let (a, b) = (c * weight, (1.0 - c) * weight);
        Self { k, n, norm: ln_beta(a + k, b + n - k) - ln_beta(a, b) }
    }

    fn ln_m(&self, theta: f64) -> f64 {
        let hits = if self.k > 0.0 { self.k * theta.ln() } else { 0.0 };
        let misses = if self.n > self.k { (self.n - self.k) * (1.0 - theta).ln() } else { 0.0 };
        self.norm - hits - misses
    }
}

/// `ln(1/α)` for a confidence of `1 − α`.
fn log_bound(confidence: f64) -> f64 {
    -(1.0 - confidence.clamp(0.5, 1.0 - 1e-12)).ln()
}

/// Bisection for the boundary between `inside` (where `ln M < bound`) and `outside`.
fn boundary(mixture: &Mixture, bound: f64, mut inside: f64, mut outside: f64) -> f64 {
    for _ in 0..60 {
        let mid = 0.5 * (inside + outside);
        if mixture.ln_m(mid) < bound {
            inside = mid;
        } else {
            outside = mid;
        }
    }
    0.5 * (inside + outside)
}

/// The confidence sequence for a rate after `events` in `trials`: `{θ : M(θ) < 1/α}` with a
/// Beta prior of weight [`prior_weight`] centred on `center` (the guard's threshold). Holds at
/// every `trials` at once with probability ≥ `confidence`. With no trials it is `[0, 1]`.
pub fn rate_interval(events: u64, trials: u64, center: f64, confidence: f64) -> Interval {
    if trials == 0 {
        return Interval { lower: 0.0, upper: 1.0 };
    }
    let events = events.min(trials);
    let mixture = Mixture::new(events, trials, center);
    let bound = log_bound(confidence);
    // ln M is convex in θ and at most 0 at the estimate k/n (the mixture of likelihood ratios to
    // the maximum), so the set is one interval around it.
    let estimate = events as f64 / trials as f64;
    let lower = if events == 0 || mixture.ln_m(f64::MIN_POSITIVE) < bound {
        0.0
    } else {
        boundary(&mixture, bound, estimate, 0.0)
    };
    let upper = if events == trials || mixture.ln_m(1.0 - f64::EPSILON) < bound {
        1.0
    } else {
        boundary(&mixture, bound, estimate, 1.0)
    };
    Interval { lower, upper }
}

/// One cohort's counts of a rate: `events` in `trials`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub events: u64,
    pub trials: u64,
}

impl Counts {
    pub fn rate(&self) -> Option<f64> {
        (self.trials > 0).then(|| self.events as f64 / self.trials as f64)
    }

    /// The counts of the opposite event (for a rate where lower is worse).
    pub fn complement(&self) -> Counts {
        Counts { events: self.trials - self.events.min(self.trials), trials: self.trials }
    }
}

/// The contrast `treatment − (1 + relative)·control − absolute`, its estimate and its confidence
/// sequence (normal-mixture SPRT inverted in the contrast's value). Positive means the treatment
/// is worse than control by more than the margin, for a rate where higher is worse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contrast {
    pub estimate: f64,
    pub interval: Interval,
}

/// `Λ = sqrt(W/(W+τ²))·exp(τ²(D̂ − d)²/(2W(W+τ²)))` ≥ 1/α rejects the value `d`; the values not
/// rejected are `D̂ ± r` with `r² = 2W(W+τ²)/τ² · (ln(1/α) + ½·ln((W+τ²)/W))`. `tau` is the
/// mixing scale: the size of difference the test is most sensitive to.
pub fn difference_interval(
    treatment: Counts,
    control: Counts,
    relative: f64,
    absolute: f64,
    tau: f64,
    confidence: f64,
) -> Option<Contrast> {
    let (pt, pc) = (treatment.rate()?, control.rate()?);
    let scale = 1.0 + relative;
    let estimate = pt - scale * pc - absolute;
    // Both variances at the larger of the two rates (for rates under ½, the larger variance): a
    // cohort that saw no event by chance early on must not make the interval look tight; half an
    // event keeps W positive.
    let p = pt.max(pc).clamp(0.5 / (treatment.trials.min(control.trials) as f64), 0.5);
    let var = |n: u64| p * (1.0 - p) / n as f64;
    let w = var(treatment.trials) + scale * scale * var(control.trials);
    let tau2 = tau * tau;
    let r2 = 2.0 * w * (w + tau2) / tau2 * (log_bound(confidence) + 0.5 * ((w + tau2) / w).ln());
    let r = r2.sqrt();
    Some(Contrast { estimate, interval: Interval { lower: estimate - r, upper: estimate + r } })
}

/// Whether `treatment` out of `total` requests is, at p < [`SHARE_MISMATCH_ALPHA`] uniformly over
/// looks, not the `expected` share: the beta-binomial mixture at θ = `expected`.
pub fn share_mismatch(treatment: u64, total: u64, expected: f64) -> bool {
    if total == 0 || !(0.0..=1.0).contains(&expected) {
        return false;
    }
    if expected <= 0.0 || expected >= 1.0 {
        // Every request should be on one side: any request on the other is a mismatch.
        let wrong = if expected <= 0.0 { treatment } else { total - treatment.min(total) };
        return wrong > 0;
    }
    let mixture = Mixture::new(treatment.min(total), total, expected);
    mixture.ln_m(expected) >= -(SHARE_MISMATCH_ALPHA.ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_interval_surrounds_the_estimate_and_narrows_with_samples() {
        let small = rate_interval(3, 100, 0.01, 0.95);
        let large = rate_interval(300, 10_000, 0.01, 0.95);
        assert!(small.contains(0.03) && large.contains(0.03), "{small:?} {large:?}");
        assert!(large.upper - large.lower < small.upper - small.lower);
        assert!(large.lower > 0.02 && large.upper < 0.04, "{large:?}");
    }

    #[test]
    fn rate_interval_edges_are_zero_and_one() {
        assert_eq!(rate_interval(0, 0, 0.01, 0.95), Interval { lower: 0.0, upper: 1.0 });
        let none = rate_interval(0, 1000, 0.01, 0.95);
        assert_eq!(none.lower, 0.0);
        assert!(none.upper > 0.0 && none.upper < 0.01, "{none:?}");
        let all = rate_interval(50, 50, 0.01, 0.95);
        assert_eq!(all.upper, 1.0);
        // The prior centred on 1% holds the lower end back, but 50 of 50 is far above it.
        assert!(all.lower > 0.05, "{all:?}");
    }

    #[test]
    fn higher_confidence_gives_a_wider_interval() {
        let at95 = rate_interval(20, 1000, 0.01, 0.95);
        let at99 = rate_interval(20, 1000, 0.01, 0.99);
        assert!(at99.lower < at95.lower && at99.upper > at95.upper);
    }

    #[test]
    fn ville_bound_holds_at_the_boundaries_it_reports() {
        // At either end the mixture's evidence against that value is 1/α (to bisection precision).
        let (k, n) = (37, 1500);
        let i = rate_interval(k, n, 0.01, 0.95);
        let m = Mixture::new(k, n, 0.01);
        for end in [i.lower, i.upper] {
            assert!((m.ln_m(end) - log_bound(0.95)).abs() < 1e-6, "{end}");
        }
    }

    #[test]
    fn a_contrast_detects_a_clear_regression_and_clears_an_equal_pair() {
        let t = Counts { events: 300, trials: 10_000 };
        let c = Counts { events: 900, trials: 90_000 };
        let worse = difference_interval(t, c, 0.0, 0.005, 0.01, 0.95).expect("both have data");
        assert!(worse.interval.lower > 0.0, "{worse:?}");
        let same = Counts { events: 100, trials: 10_000 };
        let equal = difference_interval(same, c, 0.0, 0.005, 0.01, 0.95).expect("both have data");
        assert!(equal.interval.upper < 0.0, "{equal:?}");
        assert!(difference_interval(Counts::default(), c, 0.0, 0.0, 0.01, 0.95).is_none());
    }

    #[test]
    fn share_mismatch_flags_a_wrong_share_only() {
        assert!(!share_mismatch(1_000, 10_000, 0.10));
        assert!(share_mismatch(2_000, 10_000, 0.10));
        assert!(!share_mismatch(12, 100, 0.10), "a few hundred requests are not evidence of 12%");
        assert!(share_mismatch(1, 100, 0.0));
        assert!(!share_mismatch(0, 100, 0.0));
    }
}
