//! Differentiable ops, one folder per family, and two families outside the tape: random draws
//! (`random`) and the bicubic resize between scales (`resize`).
//!
//! Each family's `mod.rs` checks shapes and devices and computes the value through its backend
//! file: `cpu.rs` for host tensors, `cuda.rs` for GPU tensors. It registers a backward function
//! built from taped ops, so every op can be differentiated twice on either device. Operands on
//! different devices are rejected with [`crate::Error::DeviceMismatch`], and results stay on the
//! operands' device. GPU ops only queue kernels on the device's stream: nothing waits for the
//! GPU until a value is copied to the host. All ops take and return contiguous tensors; strided
//! input does not exist in this engine, so no family has to handle it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod activation;
pub mod conv2d;
pub mod elementwise;
pub mod loss;
pub mod norm;
pub mod random;
pub mod reduce;
pub mod resize;
pub mod shape;

/// Runs `work` on a thread of a new rayon pool and returns its result.
///
/// The CPU kernels split their work with rayon. From a thread outside the pool, every parallel
/// op hands its job to a worker and puts the caller to sleep until the job is done. That costs
/// a context switch per op, which was most of the time of a small training iteration. From a
/// worker thread the same call runs the first part of the job in place. The pool's other
/// workers poll for the command's jobs until it returns ([`wait_for_work`]). The pool's size
/// follows `RAYON_NUM_THREADS`, as rayon's global pool does.
pub fn run_on_worker_thread<R: Send>(work: impl FnOnce() -> R + Send) -> crate::Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|index| format!("singan-worker-{index}"))
        .stack_size(WORKER_STACK_BYTES)
        .build()
        .map_err(|error| {
            crate::Error::Message(format!("failed to start the worker threads: {error}"))
        })?;
    let threads = pool.current_num_threads();
    Ok(pool.install(|| {
        let pollers = Arc::new(Pollers {
            stop: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            command_thread: rayon::current_thread_index(),
        });
        let _stop_on_return = StopOnDrop(Arc::clone(&pollers));
        for _ in 1..threads {
            let pollers = Arc::clone(&pollers);
            rayon::spawn(move || wait_for_work(&pollers));
        }
        // Wait (without taking rayon jobs) until the other workers have taken the pollers, so
        // that this thread never finds one in its queue. The timeout only guards against a
        // worker that never starts; `wait_for_work` returns at once on this thread anyway.
        let started = std::time::Instant::now();
        while pollers.started.load(Ordering::Acquire) < threads - 1
            && started.elapsed() < POLLER_START_TIMEOUT
        {
            std::thread::yield_now();
        }
        work()
    }))
}

/// State shared by the command and the workers that poll for its jobs.
struct Pollers {
    stop: AtomicBool,
    started: AtomicUsize,
    /// The rayon index of the thread that runs the command.
    command_thread: Option<usize>,
}

/// Time the command waits for the pollers to start.
const POLLER_START_TIMEOUT: Duration = Duration::from_millis(100);

/// Sets the pollers' stop flag when dropped, so that they stop even when the command panics.
struct StopOnDrop(Arc<Pollers>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
    }
}

/// Runs the jobs that the command's parallel ops hand out, polling for them until the command
/// returns.
///
/// An idle rayon worker goes to sleep after a few dozen polls. Waking it costs more than the
/// whole of most ops of a small training iteration, because a virtual machine's idle core may
/// have to be woken by the hypervisor. Polling keeps the core busy instead, as OpenMP's default
/// wait policy does for PyTorch. After [`MAX_IDLE_POLL`] without a job, as while the command
/// writes files, the loop polls only every [`IDLE_NAP`].
///
/// On the command's own thread (which may pick up a poller while it waits inside a parallel
/// op) it returns at once, because looping there would stop the command.
fn wait_for_work(pollers: &Pollers) {
    if rayon::current_thread_index() == pollers.command_thread {
        return;
    }
    pollers.started.fetch_add(1, Ordering::AcqRel);
    let mut last_job = Instant::now();
    while !pollers.stop.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => last_job = Instant::now(),
            _ if last_job.elapsed() > MAX_IDLE_POLL => std::thread::sleep(IDLE_NAP),
            _ => {
                for _ in 0..16 {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

/// Time without a job after which [`wait_for_work`] stops polling continuously.
const MAX_IDLE_POLL: Duration = Duration::from_millis(5);

/// Interval of [`wait_for_work`]'s polls once it has been idle for [`MAX_IDLE_POLL`].
const IDLE_NAP: Duration = Duration::from_micros(500);

/// Stack size of the worker threads: that of a Linux main thread (8 MiB).
const WORKER_STACK_BYTES: usize = 8 << 20;

/// Runs `body` compiled for AVX-512 when the CPU has it, and as built otherwise.
///
/// The crate targets baseline x86-64, so the compiler vectorises loops with 128-bit registers.
/// Inlined into this call, the body is compiled a second time with AVX-512F enabled, and its
/// loops may use 512-bit registers. Both copies perform the same IEEE operations in the same
/// order, because Rust never fuses a multiply and an add on its own. They give the same bits
/// for every result that is not NaN, and a NaN's sign and payload may differ.
///
/// NOTE: the compiler decides whether to inline the body. In the release binary every body
/// is inlined, but in a test build some batch-norm loops were not, and those then run with
/// 128-bit registers: still correct, only slower.
#[inline]
pub(crate) fn vectorized<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if avx512_available() {
        // SAFETY: the CPU has AVX-512F, which is all that `run_with_avx512` assumes.
        return unsafe { run_with_avx512(body) };
    }
    body()
}

/// Reports whether this CPU has AVX-512F, detected once.
pub(crate) fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_with_avx512<R>(body: impl FnOnce() -> R) -> R {
    body()
}

/// Number of elements one rayon task handles in element-wise kernels.
///
/// Work is split by this fixed size, never by the thread count, so results do not depend on how
/// many threads run.
pub(crate) const CHUNK: usize = 1 << 14;
