//! Prints the guard decision tables of docs/guards.md: `cargo run --release --example guard-sim [RUNS]`.
//!
//! Every stage is simulated with its own seed (seed = 1 + its index), so the tables are exactly
//! reproducible. RUNS defaults to 1,000 per row.

mod sim;

use rollout_controller::domain::guards::Decision;
use rollout_controller::domain::plan::FlagDefinition;
use sim::{Scenario, Summary, Traffic, simulate};

fn row(label: &str, s: &Summary) {
    let pct = |n: usize| format!("{:.1}%", 100.0 * s.share(n));
    let req = |r: Option<u64>| r.map_or_else(|| "—".to_owned(), |r| r.to_string());
    println!(
        "| {label} | {} | {} | {} | {} | {} | {} | {} |",
        s.runs,
        pct(s.rolled_back),
        pct(s.advanced),
        pct(s.paused),
        pct(s.held),
        req(s.median_requests),
        req(s.p95_requests)
    );
}

fn header(title: &str) {
    println!("\n{title}\n");
    println!(
        "| true rate | stages | rolled back | advanced | paused | held (2 h) | median requests to decision | p95 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
}

fn rule(decision: Decision) -> &'static str {
    match decision {
        Decision::Sequential => "sequential (95%)",
        Decision::Threshold => "threshold (point estimate)",
    }
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let traffic = Traffic::default();
    for decision in [Decision::Sequential, Decision::Threshold] {
        header(&format!("error_rate > 0.01, rule: {}", rule(decision)));
        for multiple in [0.5, 0.9, 1.5, 3.0, 10.0] {
            let def = FlagDefinition { decision, ..FlagDefinition::default() };
            let scenario = Scenario::threshold(0.01 * multiple).with_definition(def);
            row(&format!("{multiple}× (p = {:.3})", 0.01 * multiple), &simulate(&scenario, traffic, runs, 1));
        }
    }
    header("late regression: 0.5× for the first 30 min (72,000 requests), then 3× (sequential, 60-minute soak)");
    let late = Traffic { soak_secs: 3600, ..traffic };
    let scenario = Scenario { jump: Some((1800, 0.03)), ..Scenario::threshold(0.005) };
    row("0.005 → 0.03 at 30 min", &simulate(&scenario, late, runs, 1));

    header("treatment against control: error_rate max_increase 0.005, no absolute threshold (10% vs 90%)");
    for (label, t, c) in [
        ("A/A: both 0.01", 0.01, 0.01),
        ("global incident: both 0.05", 0.05, 0.05),
        ("treatment 0.02 vs control 0.01 (2×)", 0.02, 0.01),
        ("treatment 0.03 vs control 0.01 (3×)", 0.03, 0.01),
    ] {
        row(label, &simulate(&Scenario::compare(t, c, 0.005), traffic, runs, 1));
    }

    header("sample ratio: a 10% stage, both cohorts pushing, true error rate 0.002");
    for (label, share) in
        [("wired right: 10% observed", 0.10), ("mis-wired: 20% observed", 0.20), ("mis-wired: 12% observed", 0.12)]
    {
        let scenario = Scenario { true_share: share, ..Scenario::compare(0.002, 0.002, 0.005) };
        row(label, &simulate(&scenario, traffic, runs, 1));
    }
}
