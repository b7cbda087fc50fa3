//! Launchers of the batch normalisation kernels in kernels/batchnorm.cu.
//!
//! The per-channel kernels (statistics, fused backward) run one block of 256 threads per
//! channel. Each thread sums a fixed strided part of its channel and a shuffle tree combines the
//! parts, so results are bit-identical from run to run. Launches are queued on the input's
//! stream, and nothing waits for them unless `SINGAN_CUDA_SYNC=1` is set.

use std::sync::Arc;

use cudarc::driver::PushKernelArg;

use crate::cuda::launch::{
    blocks, count_arg, grid_arg, grid_stride, int_arg, kernel, BLOCK_THREADS,
};
use crate::cuda::params::ChannelShape;
use crate::cuda::{CudaBuffer, CudaDevice, KernelModule, Pass};
use crate::element::Element;
use crate::error::Result;

/// Per-channel statistics of a batch, each `C` elements.
pub(crate) struct Stats<T> {
    pub(crate) mean: CudaBuffer<T>,
    /// Biased variance.
    pub(crate) var: CudaBuffer<T>,
    /// `1 / sqrt(var + eps)`.
    pub(crate) inv_std: CudaBuffer<T>,
}

/// Gradients of training-mode batch norm: input `(N, C, H, W)`, weight and bias `(C)`.
pub(crate) struct Grads<T> {
    pub(crate) grad_input: CudaBuffer<T>,
    pub(crate) grad_weight: CudaBuffer<T>,
    pub(crate) grad_bias: CudaBuffer<T>,
}

fn channel_shape(op: &'static str, dims: [usize; 4]) -> Result<ChannelShape> {
    let [n, c, h, w] = dims;
    Ok(ChannelShape {
        n: int_arg(op, "N", n)?,
        c: int_arg(op, "C", c)?,
        hw: int_arg(op, "H * W", h * w)?,
    })
}

/// Returns the launch shape of the per-channel kernels: one block of 256 threads per channel,
/// and 32 elements of static shared memory in the kernel.
fn per_channel(op: &'static str, channels: usize) -> Result<cudarc::driver::LaunchConfig> {
    Ok(blocks(
        (grid_arg(op, "the channels", channels)?, 1, 1),
        BLOCK_THREADS,
    ))
}

/// Computes each channel's mean, biased variance and `1 / sqrt(var + eps)` over `(N, H, W)`.
/// The caller has checked that every channel has at least one value.
pub(crate) fn stats<T: Element>(x: &CudaBuffer<T>, dims: [usize; 4], eps: T) -> Result<Stats<T>> {
    const OP: &str = "batch_norm_train";
    let device = x.device();
    let channels = dims[1];
    let shape = channel_shape(OP, dims)?;
    // SAFETY: the kernel writes all three outputs of every channel.
    let (mut mean, mut var, mut inv_std) = unsafe {
        (
            CudaBuffer::uninit(device, channels)?,
            CudaBuffer::uninit(device, channels)?,
            CudaBuffer::uninit(device, channels)?,
        )
    };
    if channels > 0 {
        let (function, entry) = kernel::<T>(
            device,
            KernelModule::Batchnorm,
            "batchnorm_stats",
            Some(Pass::Forward),
        )?;
        let mut launch = device.stream().launch_builder(&function);
        launch
            .arg(&shape) // ChannelShape s
            .arg(x.slice()) // const T* x
            .arg(mean.slice_mut()) // T* mean
            .arg(var.slice_mut()) // T* var
            .arg(inv_std.slice_mut()) // T* invstd
            .arg(&eps); // T eps

        // grid = (C, 1, 1), block = 256 threads, 32 elements of static shared memory.
        let config = per_channel(OP, channels)?;
        // SAFETY: the arguments match batchnorm_stats_fwd_<T>(ChannelShape, const T*, T*, T*,
        // T*, T). x has n * c * hw elements and each output c, and no buffer aliases another.
        let launched = unsafe { launch.launch(config) };
        device.after_launch(&entry, launched)?;
    }
    Ok(Stats { mean, var, inv_std })
}

/// Computes `y = weight[c] * (x - mean[c]) * inv_std[c] + bias[c]`.
pub(crate) fn normalize<T: Element>(
    x: &CudaBuffer<T>,
    dims: [usize; 4],
    stats: &Stats<T>,
    weight: &CudaBuffer<T>,
    bias: &CudaBuffer<T>,
) -> Result<CudaBuffer<T>> {
    const OP: &str = "batch_norm_train";
    let device = x.device();
    let numel = x.len();
    // SAFETY: the kernel writes y[i] for every i < numel; an empty buffer is never read.
    let mut y = unsafe { CudaBuffer::uninit(device, numel) }?;
    if numel == 0 {
        return Ok(y);
    }
    let shape = channel_shape(OP, dims)?;
    let (function, entry) = kernel::<T>(
        device,
        KernelModule::Batchnorm,
        "batchnorm",
        Some(Pass::Forward),
    )?;
    let numel_arg = count_arg(numel);
    let null = crate::cuda::params::NULL_DEVICE_PTR;
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(&shape) // ChannelShape s
        .arg(x.slice()) // const T* x
        .arg(stats.mean.slice()) // const T* mean
        .arg(stats.inv_std.slice()) // const T* invstd
        .arg(weight.slice()) // const T* gamma
        .arg(bias.slice()) // const T* beta
        .arg(y.slice_mut()) // T* y
        .arg(&null) // T* xhat: null, not stored
        .arg(&numel_arg); // long long numel

    // Grid-stride loop over numel: grid = ceil(numel / 256) blocks (capped), block = 256,
    // no dynamic shared memory.
    let config = grid_stride(numel);
    // SAFETY: the arguments match batchnorm_fwd_<T>(ChannelShape, const T*, const T*,
    // const T*, const T*, const T*, T*, T*, long long). x and y have numel elements, the
    // per-channel buffers c each, the kernel allows a null xhat, and y aliases no input.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(y)
}

/// Computes the three training-mode gradients with the fused kernel.
pub(crate) fn backward<T: Element>(
    x: &CudaBuffer<T>,
    grad_y: &CudaBuffer<T>,
    dims: [usize; 4],
    mean: &CudaBuffer<T>,
    inv_std: &CudaBuffer<T>,
    weight: &CudaBuffer<T>,
) -> Result<Grads<T>> {
    const OP: &str = "batch_norm_train_backward";
    let device = x.device();
    let channels = dims[1];
    // The kernel accumulates into all three, so they start from zero.
    let mut grads = Grads {
        grad_input: CudaBuffer::zeros(device, x.len())?,
        grad_weight: CudaBuffer::zeros(device, channels)?,
        grad_bias: CudaBuffer::zeros(device, channels)?,
    };
    if x.is_empty() {
        return Ok(grads);
    }
    let shape = channel_shape(OP, dims)?;
    let (function, entry) = kernel::<T>(
        device,
        KernelModule::Batchnorm,
        "batchnorm",
        Some(Pass::Backward),
    )?;
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(&shape) // ChannelShape s
        .arg(x.slice()) // const T* x
        .arg(grad_y.slice()) // const T* grad_y
        .arg(mean.slice()) // const T* mean
        .arg(inv_std.slice()) // const T* invstd
        .arg(weight.slice()) // const T* gamma
        .arg(grads.grad_input.slice_mut()) // T* grad_x
        .arg(grads.grad_weight.slice_mut()) // T* grad_gamma
        .arg(grads.grad_bias.slice_mut()); // T* grad_beta

    // grid = (C, 1, 1), block = 256 threads, 32 elements of static shared memory.
    let config = per_channel(OP, channels)?;
    // SAFETY: the arguments match batchnorm_bwd_<T>(ChannelShape, const T*, const T*,
    // const T*, const T*, const T*, T*, T*, T*). x, grad_y and grad_x have n * c * hw
    // elements and the per-channel buffers c each. The three outputs are fresh zeroed buffers
    // that alias nothing, as the kernel requires of grad_x.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(grads)
}

/// Updates `running_mean` and `running_var` in place from a batch's statistics:
/// `running = (1 - momentum) running + momentum batch`, with the unbiased variance
/// `var * count / (count - 1)` (the biased one when `count = 1`), `count = N * H * W`.
pub(crate) fn update_running<T: Element>(
    device: &Arc<CudaDevice>,
    dims: [usize; 4],
    mean: &CudaBuffer<T>,
    var: &CudaBuffer<T>,
    running_mean: &mut CudaBuffer<T>,
    running_var: &mut CudaBuffer<T>,
    momentum: T,
) -> Result<()> {
    const OP: &str = "batch_norm_running_update";
    let channels = dims[1];
    if channels == 0 {
        return Ok(());
    }
    let shape = channel_shape(OP, dims)?;
    let (function, entry) = kernel::<T>(
        device,
        KernelModule::Batchnorm,
        "batchnorm_running_update",
        None,
    )?;
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(&shape) // ChannelShape s
        .arg(mean.slice()) // const T* mean
        .arg(var.slice()) // const T* var
        .arg(running_mean.slice_mut()) // T* running_mean
        .arg(running_var.slice_mut()) // T* running_var
        .arg(&momentum); // T momentum

    // Grid-stride loop over the C channels, one channel per thread: grid = ceil(C / 256)
    // blocks, block = 256, no dynamic shared memory.
    let config = grid_stride(channels);
    // SAFETY: the arguments match batchnorm_running_update_<T>(ChannelShape, const T*,
    // const T*, T*, T*, T), all four buffers have c elements, and the two updated buffers are
    // distinct and written only by this kernel.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(())
}
