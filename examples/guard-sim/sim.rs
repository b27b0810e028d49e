//! Seeded simulation of guard decisions: Bernoulli traffic through the real `guards::assess`, with
//! the controller's rule on top (breach → roll back; sample-ratio mismatch → pause; soak over and
//! every guard `ok` → advance; otherwise hold). Shared by `cargo run --example guard-sim` (the
//! tables in docs/guards.md) and the test suite (the same targets on fewer runs).

use std::collections::VecDeque;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution};
use rollout_controller::domain::guards::{Cohorts, CompareRule, Guard, Verdict, WindowTotals, assess};
use rollout_controller::domain::plan::FlagDefinition;

/// How traffic reaches one simulated stage.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    /// Requests per push of each cohort that pushes.
    pub push_requests: u64,
    /// Pushes per second.
    pub pushes_per_sec: u64,
    pub soak_secs: u64,
    pub window_secs: u64,
    /// The stage gives up (held) after this long.
    pub max_secs: u64,
}

impl Default for Traffic {
    /// The operator's trial of the issue: pushes of 20 requests at ~40 requests/s, a 2 s soak,
    /// the default 5-minute window; a stage gives up after 2 h.
    fn default() -> Self {
        Self { push_requests: 20, pushes_per_sec: 2, soak_secs: 2, window_secs: 300, max_secs: 2 * 3600 }
    }
}

/// What a simulated stage ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    RolledBack,
    Paused,
    Advanced,
    Held,
}

/// A stage's outcome and the treatment requests seen until the decision.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub end: End,
    pub requests: u64,
}

/// One scenario: the true error rates of the cohorts (control `None`: only the treatment pushes),
/// the rate after `jump_at_secs` if it changes mid-stage, and the treatment's true share of users.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub treatment_rate: f64,
    pub control_rate: Option<f64>,
    pub jump: Option<(u64, f64)>,
    /// Share of all requests that come from treatment users, when the control pushes too.
    pub true_share: f64,
    /// The share the flag serves (its percent / 100).
    pub served_share: f64,
    pub definition: FlagDefinition,
}

impl Scenario {
    /// One rate guard (`error_rate`, threshold 0.01, the defaults otherwise) on a 10% stage.
    pub fn threshold(rate: f64) -> Self {
        Self {
            treatment_rate: rate,
            control_rate: None,
            jump: None,
            true_share: 0.1,
            served_share: 0.1,
            definition: FlagDefinition::default(),
        }
    }

    /// Treatment against control, `error_rate` judged only by `max_increase` (no absolute threshold).
    pub fn compare(treatment: f64, control: f64, max_increase: f64) -> Self {
        let definition = FlagDefinition {
            thresholds: [(Guard::ErrorRate, None)].into(),
            compare: [(Guard::ErrorRate, CompareRule { max_increase: Some(max_increase), ..CompareRule::default() })]
                .into(),
            ..FlagDefinition::default()
        };
        Self { treatment_rate: treatment, control_rate: Some(control), ..Self::threshold(treatment) }
            .with_definition(definition)
    }

    pub fn with_definition(mut self, definition: FlagDefinition) -> Self {
        self.definition = definition;
        self
    }
}

/// Counts of one cohort in 5-second buckets, as the stores keep them.
struct Window {
    buckets: VecDeque<WindowTotals>,
    keep: usize,
}

impl Window {
    fn new(window_secs: u64) -> Self {
        let keep = usize::try_from((window_secs / 5).max(1)).unwrap_or(usize::MAX);
        Self { buckets: VecDeque::from([WindowTotals::default()]), keep }
    }

    fn add(&mut self, requests: u64, errors: u64) {
        if let Some(b) = self.buckets.back_mut() {
            b.requests += requests;
            b.errors += errors;
        }
    }

    fn next_bucket(&mut self) {
        self.buckets.push_back(WindowTotals::default());
        while self.buckets.len() > self.keep {
            self.buckets.pop_front();
        }
    }

    fn totals(&self) -> WindowTotals {
        let mut t = WindowTotals::default();
        for b in &self.buckets {
            t.merge(b);
        }
        t
    }
}

fn draw(rng: &mut StdRng, n: u64, p: f64) -> u64 {
    Binomial::new(n, p.clamp(0.0, 1.0)).map_or(0, |b| b.sample(rng))
}

/// Simulates one stage with its own seed.
pub fn run_stage(scenario: &Scenario, traffic: Traffic, seed: u64) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let def = &scenario.definition;
    let mut config = def.guard_config(1);
    config.expected_share = def.sample_ratio_check.then_some(scenario.served_share);
    let (mut treatment, mut control) = (Window::new(traffic.window_secs), Window::new(traffic.window_secs));
    let mut seen = 0;
    let per_bucket = traffic.pushes_per_sec * 5;
    let total_pushes = traffic.max_secs * traffic.pushes_per_sec;
    for push in 1..=total_pushes {
        let secs = push / traffic.pushes_per_sec;
        let rate = match scenario.jump {
            Some((at, rate)) if secs >= at => rate,
            _ => scenario.treatment_rate,
        };
        // With both cohorts pushing, a push's requests split by the true share of treatment users.
        let (t_requests, c_requests) = match scenario.control_rate {
            Some(_) => {
                let total = traffic.push_requests * 10;
                let t = draw(&mut rng, total, scenario.true_share);
                (t, total - t)
            }
            None => (traffic.push_requests, 0),
        };
        treatment.add(t_requests, draw(&mut rng, t_requests, rate));
        if let Some(c_rate) = scenario.control_rate {
            control.add(c_requests, draw(&mut rng, c_requests, c_rate));
        }
        seen += t_requests;
        let windows = Cohorts { treatment: treatment.totals(), control: control.totals() };
        let health = assess(&config, &windows);
        if health.verdict == Verdict::Breach {
            return Run { end: End::RolledBack, requests: seen };
        }
        if health.sample_ratio.as_ref().is_some_and(|r| r.mismatch) {
            return Run { end: End::Paused, requests: seen };
        }
        if secs >= traffic.soak_secs && health.verdict == Verdict::Ok {
            return Run { end: End::Advanced, requests: seen };
        }
        if push % per_bucket == 0 {
            treatment.next_bucket();
            control.next_bucket();
        }
    }
    Run { end: End::Held, requests: seen }
}

/// Outcomes of `runs` seeded stages: shares and requests until decision.
#[derive(Debug, Clone)]
pub struct Summary {
    pub runs: usize,
    pub rolled_back: usize,
    pub paused: usize,
    pub advanced: usize,
    pub held: usize,
    pub median_requests: Option<u64>,
    pub p95_requests: Option<u64>,
}

impl Summary {
    pub fn share(&self, n: usize) -> f64 {
        n as f64 / self.runs as f64
    }
}

pub fn simulate(scenario: &Scenario, traffic: Traffic, runs: usize, seed: u64) -> Summary {
    let results: Vec<Run> = (0..runs as u64).map(|i| run_stage(scenario, traffic, seed.wrapping_add(i))).collect();
    let count = |e: End| results.iter().filter(|r| r.end == e).count();
    let mut decided: Vec<u64> = results.iter().filter(|r| r.end != End::Held).map(|r| r.requests).collect();
    decided.sort_unstable();
    let at = |q: f64| (!decided.is_empty()).then(|| decided[((decided.len() - 1) as f64 * q).round() as usize]);
    Summary {
        runs,
        rolled_back: count(End::RolledBack),
        paused: count(End::Paused),
        advanced: count(End::Advanced),
        held: count(End::Held),
        median_requests: at(0.5),
        p95_requests: at(0.95),
    }
}
