//! Snapshot lookup plus evaluation, with 1 flag and with 10,000 flags: the cost must not grow with
//! the number of flags.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rollout_controller::domain::plan::{FlagDefinition, Stage};
use rollout_controller::domain::rollout::{Flag, Status};
use rollout_controller::snapshot::Snapshot;

fn flag(name: String) -> Flag {
    let definition = FlagDefinition {
        stages: vec![Stage::new("half", 50, 3600, false)],
        internal_users: vec!["ann@example.com".into(), "qa-bot".into()],
        salt: Some(name.clone()),
        ..FlagDefinition::default()
    };
    let mut flag = Flag::new(name, definition, 1_700_000_000_000);
    flag.state.status = Status::Running;
    flag
}

fn snapshot_of(n: usize) -> Snapshot {
    let snapshot = Snapshot::new();
    let flags = (0..n).map(|i| flag(format!("flag-{i}"))).collect();
    snapshot.replace_all("bench", flags);
    snapshot
}

fn lookup_and_evaluate(c: &mut Criterion) {
    let users: Vec<String> = (0..1024).map(|i| format!("user-{i}@example.com")).collect();
    let mut group = c.benchmark_group("snapshot_lookup_and_evaluate");
    group.throughput(Throughput::Elements(1));
    for n in [1, 10_000] {
        let snapshot = snapshot_of(n);
        // Look up a flag in the middle of the map, as a service with many flags would.
        let name = format!("flag-{}", n / 2);
        let mut i = 0;
        group.bench_with_input(BenchmarkId::from_parameter(format!("{n}_flags")), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % users.len();
                let view = snapshot.get(black_box(&name)).expect("present");
                view.evaluate(black_box(&users[i]))
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = lookup_and_evaluate
}
criterion_main!(benches);
