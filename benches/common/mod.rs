//! Timing and setup shared by the op benches.

use std::time::{Duration, Instant};

/// How many times to run an op: at least `min_runs`, then more while the elapsed time is under
/// `budget`, up to `max_runs`.
pub struct Runs {
    pub min_runs: usize,
    pub max_runs: usize,
    pub budget: Duration,
}

/// Runs `op` once untimed, then times it the number of times `runs` sets; returns the median and the minimum in
/// milliseconds.
pub fn time_op(runs: &Runs, mut op: impl FnMut()) -> (f64, f64) {
    op();
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < runs.min_runs
        || (start.elapsed() < runs.budget && samples.len() < runs.max_runs)
    {
        let t = Instant::now();
        op();
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    (samples[samples.len() / 2], samples[0])
}

/// Runs `bench` the way the `singan` binary runs its commands: with glibc keeping freed memory,
/// on a thread of a rayon pool. From a thread outside the pool each parallel op would wake a
/// worker and sleep until it finished, which adds a context switch to every timed op.
pub fn run_like_the_binary(bench: impl FnOnce() + Send) {
    singan::tensor::keep_freed_memory();
    rayon::ThreadPoolBuilder::new()
        .build()
        .expect("start the rayon worker threads")
        .install(bench);
}
