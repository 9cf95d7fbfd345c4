//! What the bench targets share: timing a closure and printing its percentiles. Benches print
//! figures for docs/benchmarks.md; they assert nothing.

use std::time::{Duration, Instant};

/// Runs `f` `n / 10` times to warm up, then `n` times, each timed.
pub fn time(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..n / 10 {
        f();
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

/// Prints `what` with the sample count, p50, p99 and max.
pub fn percentiles(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{what:<52} n={:<6} p50={:>9.2?} p99={:>9.2?} max={:>9.2?}",
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
