//! Launch shapes and argument conversions shared by the op launchers in `src/ops/*/cuda.rs`.
//!
//! NOTE: the launchers have been compiled and checked against the kernel sources by reading
//! only; no GPU has run them yet. tests/cuda_ops.rs and `scripts/gpu-check run` are the checks
//! that do.

use cudarc::driver::{CudaFunction, LaunchConfig};

use super::{entry_name, CudaDevice, CudaError, KernelModule, Pass};
use crate::element::Element;

/// Threads per block of the 1-D grid-stride kernels and of the per-channel reductions.
pub(crate) const BLOCK_THREADS: u32 = 256;

/// Largest grid of a grid-stride launch. More blocks than the GPU can have at once only add
/// scheduling work, because each thread loops over the rest. Results do not depend on it.
const MAX_GRID_STRIDE_BLOCKS: usize = 1 << 14;

/// Returns the launch shape of a 1-D grid-stride loop over `count` items: blocks of
/// [`BLOCK_THREADS`] threads, one item per thread and step, and no dynamic shared memory.
pub(crate) fn grid_stride(count: usize) -> LaunchConfig {
    let blocks = count
        .div_ceil(BLOCK_THREADS as usize)
        .clamp(1, MAX_GRID_STRIDE_BLOCKS);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (BLOCK_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Looks up the `T` entry point of `op` in `module` and returns it with its name, for
/// [`CudaDevice::after_launch`] and error messages.
pub(crate) fn kernel<T: Element>(
    device: &CudaDevice,
    module: KernelModule,
    op: &str,
    pass: Option<Pass>,
) -> Result<(CudaFunction, String), CudaError> {
    let entry = entry_name(op, pass, T::KERNEL_DTYPE);
    let function = device.function(module, &entry)?;
    Ok((function, entry))
}

/// Converts an element count to the `long long` that kernels take.
pub(crate) fn count_arg(count: usize) -> i64 {
    // A buffer never has more than isize::MAX bytes, so its element count fits in i64.
    count as i64
}
