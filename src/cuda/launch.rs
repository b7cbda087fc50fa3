//! Launch shapes and argument conversions shared by the op launchers in `src/ops/*/cuda.rs`.
//!
//! NOTE: the launchers have been compiled and checked against the kernel sources by reading
//! only; no GPU has run them yet. tests/cuda_ops.rs and `scripts/gpu-check run` are the checks
//! that do.

use cudarc::driver::{CudaFunction, LaunchConfig};

use super::{entry_name, CudaDevice, CudaError, KernelModule, Pass};
use crate::element::Element;
use crate::error::{Error, Result};

/// Threads per block of the 1-D grid-stride kernels and of the per-channel reductions.
pub(crate) const BLOCK_THREADS: u32 = 256;

/// Largest grid of a grid-stride launch. More blocks than the GPU can have at once only add
/// scheduling work, because each thread loops over the rest. Results do not depend on it.
const MAX_GRID_STRIDE_BLOCKS: usize = 1 << 14;

/// Largest grid of the one-block-per-output reductions; those kernels loop past it.
pub(crate) const MAX_BLOCK_PER_OUTPUT_GRID: usize = 65_535;

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

/// Returns a launch shape of `grid` blocks of `threads` threads and no dynamic shared memory.
pub(crate) fn blocks(grid: (u32, u32, u32), threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (threads, 1, 1),
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

/// Converts a size to the `int` that kernel parameter structs take, or fails naming `op`.
pub(crate) fn int_arg(op: &'static str, quantity: &str, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        Error::invalid(
            op,
            format!("{quantity} = {value} exceeds the 32-bit range of the CUDA kernels"),
        )
    })
}

/// Converts a grid dimension to `u32`, or fails naming `op`.
pub(crate) fn grid_arg(op: &'static str, quantity: &str, value: usize) -> Result<u32> {
    u32::try_from(value.max(1)).map_err(|_| {
        Error::invalid(
            op,
            format!("{quantity} needs {value} blocks, more than a CUDA grid allows"),
        )
    })
}
