//! Launchers of the convolution kernels in kernels/conv2d.cu.
//!
//! The three kernels are implicit GEMMs that require blocks of exactly 128 threads and tile the
//! GEMM output in 32 x 64 tiles. The bias is not fused: `Var::conv2d` adds it with a broadcast
//! add. Launches are queued on the input's stream, and nothing waits for them unless
//! `SINGAN_CUDA_SYNC=1` is set.

use cudarc::driver::PushKernelArg;

use super::ConvGeometry;
use crate::cuda::launch::{blocks, count_arg, grid_arg, grid_stride, int_arg, kernel};
use crate::cuda::params::{Conv2dParams, NULL_DEVICE_PTR};
use crate::cuda::{CudaBuffer, KernelModule, Pass};
use crate::element::Element;
use crate::error::{Error, Result};

/// Threads per block that the convolution kernels require (they trap on any other shape).
const CONV_THREADS: u32 = 128;
/// GEMM tile of one block: rows (channels) by columns (pixels or weight columns).
const TILE_ROWS: usize = 32;
const TILE_COLUMNS: usize = 64;

/// Output pixels that one split of the weight gradient's reduction covers, and the maximum
/// number of splits. The split count depends on nothing but the shape, so the split-K sum
/// order is the same on every GPU and from run to run.
const PIXELS_PER_SPLIT: usize = 512;
const MAX_SPLITS: usize = 128;

/// Converts a geometry to the kernels' parameter struct, failing naming `op` when a size
/// exceeds 32 bits or the padding differs between the axes (the kernels take one padding).
fn params(op: &'static str, g: &ConvGeometry) -> Result<Conv2dParams> {
    if g.pad_h != g.pad_w {
        return Err(Error::invalid(
            op,
            format!(
                "the CUDA kernels take one padding for both axes, not {} and {}",
                g.pad_h, g.pad_w
            ),
        ));
    }
    let padding = i32::try_from(g.pad_h)
        .map_err(|_| Error::invalid(op, format!("padding {} exceeds 32 bits", g.pad_h)))?;
    Ok(Conv2dParams {
        n: int_arg(op, "N", g.n)?,
        c_in: int_arg(op, "C_in", g.c_in)?,
        c_out: int_arg(op, "C_out", g.c_out)?,
        h_in: int_arg(op, "H_in", g.h_in)?,
        w_in: int_arg(op, "W_in", g.w_in)?,
        h_out: int_arg(op, "H_out", g.h_out())?,
        w_out: int_arg(op, "W_out", g.w_out())?,
        k_h: int_arg(op, "K_h", g.k_h)?,
        k_w: int_arg(op, "K_w", g.k_w)?,
        padding,
    })
}

/// Computes `y = conv(x, weight)` without bias: `(N, C_out, H_out, W_out)`.
pub(crate) fn forward<T: Element>(
    x: &CudaBuffer<T>,
    weight: &CudaBuffer<T>,
    g: &ConvGeometry,
) -> Result<CudaBuffer<T>> {
    const OP: &str = "conv2d";
    let device = x.device();
    let pixels = g.n * g.h_out() * g.w_out();
    let y_numel = pixels * g.c_out;
    // SAFETY: the kernel writes every output element of every tile it covers (zeros when
    // C_in = 0), and the grid covers all pixels and channels.
    let mut y = unsafe { CudaBuffer::uninit(device, y_numel) }?;
    if y_numel == 0 {
        return Ok(y);
    }
    let p = params(OP, g)?;
    let grid = (
        grid_arg(OP, "the output pixels", pixels.div_ceil(TILE_COLUMNS))?,
        grid_arg(OP, "the output channels", g.c_out.div_ceil(TILE_ROWS))?,
        1,
    );
    let (function, entry) =
        kernel::<T>(device, KernelModule::Conv2d, "conv2d", Some(Pass::Forward))?;
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(&p) // Conv2dParams p
        .arg(x.slice()) // const T* x
        .arg(weight.slice()) // const T* weight
        .arg(&NULL_DEVICE_PTR) // const T* bias: null, no bias
        .arg(y.slice_mut()); // T* y

    // grid = (ceil(N * H_out * W_out / 64), ceil(C_out / 32), 1), block = 128 threads as the
    // kernel requires, static shared memory only (about 6 KiB for f32, 12 KiB for f64).
    let config = blocks(grid, CONV_THREADS);
    // SAFETY: the arguments match conv2d_fwd_<T>(Conv2dParams, const T*, const T*, const T*,
    // T*). x, weight and y have the element counts that `p` implies, the null bias is allowed,
    // and y aliases neither input.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(y)
}

/// Computes the input gradient `(N, C_in, H_in, W_in)` from `grad_y` `(N, C_out, H_out,
/// W_out)` and the weight.
pub(crate) fn input_grad<T: Element>(
    grad_y: &CudaBuffer<T>,
    weight: &CudaBuffer<T>,
    g: &ConvGeometry,
) -> Result<CudaBuffer<T>> {
    const OP: &str = "conv2d_input_grad";
    let device = grad_y.device();
    let pixels = g.n * g.h_in * g.w_in;
    // The kernel accumulates into grad_x, so it starts from zero.
    let mut grad_x = CudaBuffer::zeros(device, pixels * g.c_in)?;
    if pixels * g.c_in == 0 || g.c_out == 0 {
        return Ok(grad_x);
    }
    let p = params(OP, g)?;
    let grid = (
        grid_arg(OP, "the input pixels", pixels.div_ceil(TILE_COLUMNS))?,
        grid_arg(OP, "the input channels", g.c_in.div_ceil(TILE_ROWS))?,
        1,
    );
    let (function, entry) = kernel::<T>(
        device,
        KernelModule::Conv2d,
        "conv2d_input",
        Some(Pass::Backward),
    )?;
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(&p) // Conv2dParams p
        .arg(grad_y.slice()) // const T* grad_y
        .arg(weight.slice()) // const T* weight
        .arg(grad_x.slice_mut()); // T* grad_x

    // grid = (ceil(N * H_in * W_in / 64), ceil(C_in / 32), 1), block = 128 threads as the
    // kernel requires, static shared memory only.
    let config = blocks(grid, CONV_THREADS);
    // SAFETY: the arguments match conv2d_input_bwd_<T>(Conv2dParams, const T*, const T*, T*).
    // grad_y, weight and grad_x have the element counts that `p` implies, and grad_x is a
    // fresh zeroed buffer that aliases neither input.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(grad_x)
}

/// Computes the weight gradient `(C_out, C_in, K_h, K_w)` from the input `x` and `grad_y`, in
/// two steps: split-K partial sums, then their sum in split order.
pub(crate) fn weight_grad<T: Element>(
    x: &CudaBuffer<T>,
    grad_y: &CudaBuffer<T>,
    g: &ConvGeometry,
) -> Result<CudaBuffer<T>> {
    const OP: &str = "conv2d_weight_grad";
    let device = x.device();
    let columns = g.c_in * g.k_h * g.k_w;
    let weight_numel = g.c_out * columns;
    let pixels = g.n * g.h_out() * g.w_out();
    // The reduce kernel accumulates into grad_weight, so it starts from zero.
    let mut grad_weight = CudaBuffer::zeros(device, weight_numel)?;
    if weight_numel == 0 || pixels == 0 {
        return Ok(grad_weight);
    }
    let p = params(OP, g)?;
    let splits = pixels.div_ceil(PIXELS_PER_SPLIT).clamp(1, MAX_SPLITS);
    // SAFETY: every split writes all weight_numel of its partial sums, including splits that
    // lie past the last pixel, so every element is written before the reduce step reads it.
    let mut partials = unsafe { CudaBuffer::<T>::uninit(device, splits * weight_numel) }?;

    let grid = (
        grid_arg(OP, "the weight columns", columns.div_ceil(TILE_COLUMNS))?,
        grid_arg(OP, "the output channels", g.c_out.div_ceil(TILE_ROWS))?,
        grid_arg(OP, "the splits", splits)?,
    );
    let (function, entry) = kernel::<T>(
        device,
        KernelModule::Conv2d,
        "conv2d_weight",
        Some(Pass::Backward),
    )?;
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(&p) // Conv2dParams p
        .arg(grad_y.slice()) // const T* grad_y
        .arg(x.slice()) // const T* x
        .arg(partials.slice_mut()); // T* partials

    // grid = (ceil(C_in * K_h * K_w / 64), ceil(C_out / 32), splits) with splits =
    // clamp(ceil(N * H_out * W_out / 512), 1, 128), block = 128 threads as the kernel
    // requires, static shared memory only.
    let config = blocks(grid, CONV_THREADS);
    // SAFETY: the arguments match conv2d_weight_bwd_<T>(Conv2dParams, const T*, const T*, T*).
    // grad_y and x have the element counts that `p` implies, partials has gridDim.z *
    // weight_numel elements, and partials aliases neither input.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;

    let (function, entry) = kernel::<T>(
        device,
        KernelModule::Conv2d,
        "conv2d_weight_reduce",
        Some(Pass::Backward),
    )?;
    let splits_arg = int_arg(OP, "the splits", splits)?;
    let weight_numel_arg = count_arg(weight_numel);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(partials.slice()) // const T* partials
        .arg(grad_weight.slice_mut()) // T* grad_weight
        .arg(&splits_arg) // int splits
        .arg(&weight_numel_arg); // long long weight_numel

    // Grid-stride loop over weight_numel, one weight element per thread: grid =
    // ceil(weight_numel / 256) blocks (capped), block = 256, no dynamic shared memory.
    let config = grid_stride(weight_numel);
    // SAFETY: the arguments match conv2d_weight_reduce_bwd_<T>(const T*, T*, int, long long),
    // partials has splits * weight_numel elements and grad_weight weight_numel, and the two
    // do not alias.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(grad_weight)
}
