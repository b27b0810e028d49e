//! MD5 bucketing alone: the arithmetic every evaluation does (target: ≥ 5 M evaluations/s on one core).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rollout_controller::domain::bucket;

fn users() -> Vec<String> {
    (0..1024).map(|i| format!("user-{i}@example.com")).collect()
}

fn bucketing(c: &mut Criterion) {
    let users = users();
    let mut group = c.benchmark_group("bucketing");
    group.throughput(Throughput::Elements(1));
    for (name, salt) in [("unsalted", None), ("salted", Some("checkout"))] {
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % users.len();
                bucket::user_bucket(black_box(salt), black_box(&users[i]))
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bucketing
}
criterion_main!(benches);
