//! Launchers of the reduction kernels in kernels/reduce.cu, and of `broadcast_to_fwd` in
//! kernels/shape.cu, which is the reverse of `sum_to`.
//!
//! Every sum is taken in an order fixed by the shapes alone, because the launch shapes below
//! depend on nothing else, so results are bit-identical from run to run. Launches are
//! queued on the input's stream, and nothing waits for them unless `SINGAN_CUDA_SYNC=1` is set.

use cudarc::driver::PushKernelArg;

use crate::cuda::launch::{
    blocks, count_arg, grid_arg, grid_stride, int_arg, kernel, BLOCK_THREADS,
    MAX_BLOCK_PER_OUTPUT_GRID,
};
use crate::cuda::params::{BroadcastShapes, ChannelShape};
use crate::cuda::{CudaBuffer, KernelModule, Pass};
use crate::element::Element;
use crate::error::{Error, Result};

/// Threads per block of `sum_to_shape_fwd` when each output sums fewer than
/// [`LONG_SUM`] elements. One warp keeps short sums from leaving most threads idle.
const SHORT_SUM_THREADS: u32 = 32;

/// Summed elements per output from which `sum_to_shape_fwd` uses [`BLOCK_THREADS`] threads.
const LONG_SUM: usize = 2048;

/// Elements per block of the first pass of a total sum, and the cap on its block count.
const SUM_ALL_ELEMENTS_PER_BLOCK: usize = 2048;
const SUM_ALL_MAX_BLOCKS: usize = 1024;

/// Role of a run of neighbouring dims in a reduction or broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Present in both shapes.
    Kept,
    /// Size 1 in the smaller shape: summed by `sum_to`, repeated by `broadcast_to`.
    Collapsed,
}

/// Builds the rank-4 [`BroadcastShapes`] of a full shape and a smaller shape of the same rank
/// whose dims are each 1 or the full dim. Size-1 full dims are dropped and neighbouring dims of
/// the same role are merged, so any rank works as long as at most 4 runs remain.
fn broadcast_shapes(op: &'static str, full: &[usize], small: &[usize]) -> Result<BroadcastShapes> {
    let mut runs: Vec<(usize, Role)> = Vec::with_capacity(full.len());
    for (&dim, &small_dim) in full.iter().zip(small) {
        if dim == 1 {
            continue;
        }
        let role = if small_dim == dim {
            Role::Kept
        } else {
            Role::Collapsed
        };
        match runs.last_mut() {
            Some(last) if last.1 == role => last.0 *= dim,
            _ => runs.push((dim, role)),
        }
    }
    if runs.len() > 4 {
        return Err(Error::shape(
            op,
            format!(
                "the CUDA kernels take at most 4 dims after merging neighbouring dims, and these shapes need {}",
                runs.len()
            ),
            &[full, small],
        ));
    }
    let mut shapes = BroadcastShapes {
        full_shape: [1; 4],
        reduced_shape: [1; 4],
    };
    let offset = 4 - runs.len();
    for (index, &(dim, role)) in runs.iter().enumerate() {
        shapes.full_shape[offset + index] = dim as i64;
        shapes.reduced_shape[offset + index] = match role {
            Role::Kept => dim as i64,
            Role::Collapsed => 1,
        };
    }
    Ok(shapes)
}

/// Sums `x` (dims `x_dims`) down to `target`, which has the same rank and is 1 on every
/// summed axis.
pub(crate) fn sum_to<T: Element>(
    x: &CudaBuffer<T>,
    x_dims: &[usize],
    target: &[usize],
) -> Result<CudaBuffer<T>> {
    const OP: &str = "sum_to";
    let device = x.device();
    let out_numel: usize = target.iter().product();
    if out_numel == 0 || x.is_empty() {
        // A sum over no elements is zero.
        return Ok(CudaBuffer::zeros(device, out_numel)?);
    }
    if out_numel == x.len() {
        // Only size-1 axes differ, so nothing is summed.
        return Ok(x.try_clone()?);
    }
    if out_numel == 1 {
        return sum_all(x);
    }
    let shapes = broadcast_shapes(OP, x_dims, target)?;
    let summed = x.len() / out_numel;
    let threads = if summed >= LONG_SUM {
        BLOCK_THREADS
    } else {
        SHORT_SUM_THREADS
    };
    // SAFETY: the kernel writes out[o] for every o < out_numel.
    let mut out = unsafe { CudaBuffer::uninit(device, out_numel) }?;
    let (function, entry) = kernel::<T>(
        device,
        KernelModule::Reduce,
        "sum_to_shape",
        Some(Pass::Forward),
    )?;
    let out_numel_arg = count_arg(out_numel);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(&shapes) // BroadcastShapes s
        .arg(x.slice()) // const T* x
        .arg(out.slice_mut()) // T* out
        .arg(&out_numel_arg); // long long out_numel

    // One block per output element, looping past 65535: grid = min(out_numel, 65535),
    // block = 256 threads for sums of at least 2048 elements and 32 otherwise, and 32 elements
    // of static shared memory in the kernel.
    let grid = grid_arg(OP, "the output", out_numel.min(MAX_BLOCK_PER_OUTPUT_GRID))?;
    let config = blocks((grid, 1, 1), threads);
    // SAFETY: the arguments match sum_to_shape_fwd_<T>(BroadcastShapes, const T*, T*,
    // long long). `shapes` describes x's x.len() elements and out's out_numel, the block size
    // is a multiple of 32 and at most 1024, and out aliases nothing.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(out)
}

/// Sums every element of `x` into a one-element buffer, in two passes.
fn sum_all<T: Element>(x: &CudaBuffer<T>) -> Result<CudaBuffer<T>> {
    const OP: &str = "sum";
    let device = x.device();
    let numel = x.len();
    // The block count depends on numel only, as reduce.cu requires for a repeatable order.
    let partial_count = numel
        .div_ceil(SUM_ALL_ELEMENTS_PER_BLOCK)
        .clamp(1, SUM_ALL_MAX_BLOCKS);
    // SAFETY: block b of the first pass writes partials[b] for every b < partial_count.
    let mut partials = unsafe { CudaBuffer::<T>::uninit(device, partial_count) }?;
    // SAFETY: the second pass writes out[0].
    let mut out = unsafe { CudaBuffer::<T>::uninit(device, 1) }?;

    let (function, entry) = kernel::<T>(device, KernelModule::Reduce, "sum_all_partial", None)?;
    let numel_arg = count_arg(numel);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(x.slice()) // const T* x
        .arg(partials.slice_mut()) // T* partials
        .arg(&numel_arg); // long long numel

    // grid = min(ceil(numel / 2048), 1024) blocks, block = 256 threads, and 32 elements of
    // static shared memory in the kernel.
    let config = blocks(
        (grid_arg(OP, "the input", partial_count)?, 1, 1),
        BLOCK_THREADS,
    );
    // SAFETY: the arguments match sum_all_partial_<T>(const T*, T*, long long), x has numel
    // elements and partials one per block.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;

    let (function, entry) = kernel::<T>(device, KernelModule::Reduce, "sum_all_final", None)?;
    let scale = T::ONE;
    let partial_count_arg = count_arg(partial_count);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(partials.slice()) // const T* partials
        .arg(out.slice_mut()) // T* out
        .arg(&scale) // T scale
        .arg(&partial_count_arg); // long long count

    // One block of 256 threads, and 32 elements of static shared memory in the kernel.
    let config = blocks((1, 1, 1), BLOCK_THREADS);
    // SAFETY: the arguments match sum_all_final_<T>(const T*, T*, T, long long), partials holds
    // count elements and out one.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(out)
}

/// Repeats `x` (dims `x_dims`, at most the rank of `target`) along its size-1 and missing
/// leading axes to reach `target`.
pub(crate) fn broadcast_to<T: Element>(
    x: &CudaBuffer<T>,
    x_dims: &[usize],
    target: &[usize],
) -> Result<CudaBuffer<T>> {
    const OP: &str = "broadcast_to";
    let device = x.device();
    let full_numel: usize = target.iter().product();
    // SAFETY: the kernel writes y[i] for every i < full_numel; an empty buffer is never read.
    let mut y = unsafe { CudaBuffer::uninit(device, full_numel) }?;
    if full_numel == 0 {
        return Ok(y);
    }
    let mut padded = vec![1; target.len() - x_dims.len()];
    padded.extend_from_slice(x_dims);
    let shapes = broadcast_shapes(OP, target, &padded)?;
    let (function, entry) = kernel::<T>(
        device,
        KernelModule::Shape,
        "broadcast_to",
        Some(Pass::Forward),
    )?;
    let full_numel_arg = count_arg(full_numel);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(&shapes) // BroadcastShapes s
        .arg(x.slice()) // const T* x
        .arg(y.slice_mut()) // T* y
        .arg(&full_numel_arg); // long long full_numel

    // Grid-stride loop over full_numel: grid = ceil(full_numel / 256) blocks (capped),
    // block = 256, no dynamic shared memory.
    let config = grid_stride(full_numel);
    // SAFETY: the arguments match broadcast_to_fwd_<T>(BroadcastShapes, const T*, T*,
    // long long). `shapes` describes x's elements and y's full_numel, and y aliases nothing.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(y)
}

/// Computes the L2 norm over axis 1 of an `(n, c, h, w)` buffer, giving `(n, 1, h, w)`.
pub(crate) fn channel_norm<T: Element>(
    x: &CudaBuffer<T>,
    dims: [usize; 4],
) -> Result<CudaBuffer<T>> {
    const OP: &str = "channel_norm";
    let device = x.device();
    let [n, c, h, w] = dims;
    let out_numel = n * h * w;
    // SAFETY: the kernel writes out[o] for every o < out_numel; an empty buffer is never read.
    let mut out = unsafe { CudaBuffer::uninit(device, out_numel) }?;
    if out_numel == 0 {
        return Ok(out);
    }
    let shape = ChannelShape {
        n: int_arg(OP, "N", n)?,
        c: int_arg(OP, "C", c)?,
        hw: int_arg(OP, "H * W", h * w)?,
    };
    let (function, entry) = kernel::<T>(
        device,
        KernelModule::Reduce,
        "channel_norm",
        Some(Pass::Forward),
    )?;
    let out_numel_arg = count_arg(out_numel);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(&shape) // ChannelShape s
        .arg(x.slice()) // const T* x
        .arg(out.slice_mut()) // T* out
        .arg(&out_numel_arg); // long long out_numel

    // Grid-stride loop over out_numel = N * H * W, one output (a loop over C) per thread:
    // grid = ceil(out_numel / 256) blocks (capped), block = 256, no dynamic shared memory.
    let config = grid_stride(out_numel);
    // SAFETY: the arguments match channel_norm_fwd_<T>(ChannelShape, const T*, T*, long long),
    // x has n * c * h * w elements, out has out_numel, and out aliases nothing.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::broadcast_shapes;

    #[test]
    fn channel_sum_merges_outer_and_inner_runs() {
        let s = broadcast_shapes("sum_to", &[2, 3, 7, 6], &[1, 3, 1, 1]).unwrap();
        assert_eq!(s.full_shape, [1, 2, 3, 42]);
        assert_eq!(s.reduced_shape, [1, 1, 3, 1]);
    }

    #[test]
    fn size_one_dims_are_dropped() {
        let s = broadcast_shapes("sum_to", &[1, 5, 1, 4, 1, 3], &[1, 1, 1, 4, 1, 1]).unwrap();
        assert_eq!(s.full_shape, [1, 5, 4, 3]);
        assert_eq!(s.reduced_shape, [1, 1, 4, 1]);
    }

    #[test]
    fn five_alternating_runs_are_rejected() {
        let error = broadcast_shapes("sum_to", &[2, 3, 4, 5, 6], &[1, 3, 1, 5, 1]).unwrap_err();
        assert!(error.to_string().contains("at most 4 dims"), "{error}");
    }
}
