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
/// on a rayon worker thread, so that timed ops do not pay a worker wake-up each.
pub fn run_like_the_binary(bench: impl FnOnce() + Send) {
    singan::tensor::keep_freed_memory();
    singan::ops::run_on_worker_thread(bench).expect("start the rayon worker threads");
}

/// A memory-bound op to time: its name, the bytes it reads and writes, and a closure that
/// runs it once.
#[allow(dead_code)] // The conv2d bench reports FLOPs and does not use this.
pub type MemoryOp<'a> = (&'static str, f64, Box<dyn FnMut() + 'a>);

/// Timed runs per memory-bound op.
#[allow(dead_code)]
pub const MEMORY_RUNS: Runs = Runs {
    min_runs: 5,
    max_runs: 1000,
    budget: Duration::from_secs(2),
};

/// Returns the value of `--device` on the command line, in the `--device cuda` or the
/// `--device=cuda` form, or `None` without the option. A `--device` with no value (cargo
/// appends `--bench`, which does not count) gives an empty string.
pub fn device_argument() -> Option<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.iter().enumerate().find_map(|(index, arg)| {
        if let Some(value) = arg.strip_prefix("--device=") {
            return Some(value.to_string());
        }
        (arg == "--device").then(|| {
            args.get(index + 1)
                .filter(|value| !value.starts_with("--"))
                .cloned()
                .unwrap_or_default()
        })
    })
}

/// Exits with an error when the command line requests a device other than the CPU, which the
/// memory-bound benches do not support.
#[allow(dead_code)]
pub fn require_cpu_device(bench: &str) {
    match device_argument().as_deref() {
        None | Some("cpu") => {}
        Some("cuda") => {
            eprintln!(
                "error: --device cuda: the {bench} bench runs on the CPU only; `cargo bench \
                 --bench conv2d -- --device cuda` and `singan bench iteration --device cuda` \
                 time the GPU"
            );
            std::process::exit(2);
        }
        Some(other) => {
            eprintln!("error: --device must be cpu, not {other:?}; the {bench} bench runs on the CPU only");
            std::process::exit(2);
        }
    }
}

/// Prints the device line and the column header of a memory-bound bench.
#[allow(dead_code)]
pub fn print_memory_header() {
    println!("device: cpu, threads: {}", rayon::current_num_threads());
    println!(
        "{:<22} {:<13} {:>10} {:>10} {:>9} {:>9}",
        "shape (C, H, W)", "op", "median ms", "min ms", "MB", "GB/s"
    );
}

/// Times each op and prints a row with its median, minimum, megabytes and GB/s.
#[allow(dead_code)]
pub fn time_memory_ops<'a>(label: &str, ops: impl IntoIterator<Item = MemoryOp<'a>>) {
    for (name, bytes, op) in ops {
        let (median, min) = time_op(&MEMORY_RUNS, op);
        println!(
            "{:<22} {:<13} {:>10.4} {:>10.4} {:>9.2} {:>9.1}",
            label,
            name,
            median,
            min,
            bytes / 1e6,
            bytes / 1e9 / (median / 1e3)
        );
    }
}
