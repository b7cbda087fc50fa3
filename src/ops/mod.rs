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
/// worker thread the same call runs the first part of the job in place. The pool's size follows
/// `RAYON_NUM_THREADS`, as rayon's global pool does.
pub fn run_on_worker_thread<R: Send>(work: impl FnOnce() -> R + Send) -> crate::Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|index| format!("singan-worker-{index}"))
        .stack_size(WORKER_STACK_BYTES)
        .build()
        .map_err(|error| {
            crate::Error::Message(format!("failed to start the worker threads: {error}"))
        })?;
    Ok(pool.install(work))
}

/// Stack size of the worker threads: that of a Linux main thread (8 MiB).
const WORKER_STACK_BYTES: usize = 8 << 20;

/// Number of elements one rayon task handles in element-wise kernels.
///
/// Work is split by this fixed size, never by the thread count, so results do not depend on how
/// many threads run.
pub(crate) const CHUNK: usize = 1 << 14;
