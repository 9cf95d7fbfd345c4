//! Time from `Env::start()` to a ready kube-apiserver (bootstrap RBAC served) + OpenBao (healthy,
//! Kubernetes auth configured), with cached binaries. Prints figures; asserts nothing.
//!
//! `cargo bench -p phantom-conformance --bench env_start` (PHANTOM_BENCH_RUNS, default 5)

use std::time::{Duration, Instant};

use phantom_conformance::{Env, Tools};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("PHANTOM_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    Tools::ensure().expect("tools installed");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut ready = Vec::new();
    let mut teardown = Vec::new();
    for _ in 0..runs {
        let env = rt.block_on(Env::start()).expect("environment starts");
        ready.push(env.started_in());
        let t = Instant::now();
        drop(env);
        teardown.push(t.elapsed());
    }
    report("start() → API server + OpenBao ready", &mut ready);
    report("drop → every process stopped, dir removed", &mut teardown);
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let p50 = samples[samples.len() / 2];
    println!(
        "{what}: n={} min={:.2?} p50={:.2?} max={:.2?}",
        samples.len(),
        samples[0],
        p50,
        samples[samples.len() - 1]
    );
}
