//! One hour of a 10,000-pod burst (`examples/workloads/burst-10k.yaml`) replayed under the
//! example policies (`policies/`) on the virtual clock: engine, ledger, rate limits, cold starts,
//! report. The target is at most 5 s per run in release. A second benchmark measures the
//! smaller `burst.yaml` demo.
//!
//! Run: `cargo bench --bench simulate` (see docs/performance.md).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use burstgate::policy::load_dir;
use burstgate::simulate::{Workload, run};
use criterion::Criterion;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let policy =
        load_dir(&root.join("policies")).unwrap_or_else(|e| panic!("policies/ is invalid:\n{e}"));
    let workloads: Vec<(&str, Workload)> = ["burst-10k", "burst"]
        .into_iter()
        .map(|name| {
            let path = root.join("examples/workloads").join(format!("{name}.yaml"));
            let w = Workload::read(&path).unwrap_or_else(|e| panic!("{e}"));
            w.check_against(&policy).unwrap_or_else(|e| panic!("{e}"));
            (name, w)
        })
        .collect();

    // One timed run first, with what it did, so the number comes with its context (only when
    // benchmarking: `cargo test --benches` and test listers must not run it).
    let benchmarking = std::env::args().any(|a| a == "--bench");
    for (name, w) in workloads.iter().filter(|_| benchmarking) {
        let started = Instant::now();
        let report = run(&policy, w, 1, false);
        let took = started.elapsed();
        println!(
            "simulate/{name}: {} pods over {} virtual s in {:.3} s wall ({} decisions, {} retry sweeps, {} placed, {} pending at the end)",
            report.pods.total,
            report.duration_seconds,
            took.as_secs_f64(),
            report.totals.decisions,
            report.totals.retry_sweeps,
            report.pods.placed,
            report.pods.pending_at_end
        );
    }

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20))
        .configure_from_args();
    for (name, w) in &workloads {
        c.bench_function(&format!("simulate/{name}"), |b| {
            b.iter(|| black_box(run(&policy, black_box(w), 1, false)))
        });
    }
    c.final_summary();
}
