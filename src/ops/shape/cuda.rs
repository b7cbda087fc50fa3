//! Launchers of the padding and cropping kernels in kernels/shape.cu.
//!
//! Both kernels are grid-stride window copies that overwrite their whole output. Launches are
//! queued on the input's stream, and nothing waits for them unless `SINGAN_CUDA_SYNC=1` is set.

use cudarc::driver::PushKernelArg;

use super::Margins;
use crate::cuda::launch::{count_arg, grid_stride, int_arg, kernel};
use crate::cuda::params::{Crop2dParams, Pad2dParams};
use crate::cuda::{CudaBuffer, KernelModule, Pass};
use crate::element::Element;
use crate::error::Result;

/// Zero-pads every `(h, w)` plane of an `(n, c, h, w)` buffer by `margins`.
pub(crate) fn pad<T: Element>(
    x: &CudaBuffer<T>,
    dims: [usize; 4],
    margins: Margins,
) -> Result<CudaBuffer<T>> {
    const OP: &str = "pad";
    let device = x.device();
    let [n, c, h, w] = dims;
    let out_numel = n * c * (h + margins.top + margins.bottom) * (w + margins.left + margins.right);
    // SAFETY: the kernel writes y[i] for every i < out_numel; an empty buffer is never read.
    let mut y = unsafe { CudaBuffer::uninit(device, out_numel) }?;
    if out_numel == 0 {
        return Ok(y);
    }
    let params = Pad2dParams {
        n: int_arg(OP, "N", n)?,
        c: int_arg(OP, "C", c)?,
        h_in: int_arg(OP, "H", h)?,
        w_in: int_arg(OP, "W", w)?,
        top: int_arg(OP, "top", margins.top)?,
        bottom: int_arg(OP, "bottom", margins.bottom)?,
        left: int_arg(OP, "left", margins.left)?,
        right: int_arg(OP, "right", margins.right)?,
    };
    let (function, entry) = kernel::<T>(device, KernelModule::Shape, "pad2d", Some(Pass::Forward))?;
    let out_numel_arg = count_arg(out_numel);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(&params) // Pad2dParams p
        .arg(x.slice()) // const T* x
        .arg(y.slice_mut()) // T* y
        .arg(&out_numel_arg); // long long out_numel

    // Grid-stride loop over out_numel: grid = ceil(out_numel / 256) blocks (capped),
    // block = 256, no dynamic shared memory.
    let config = grid_stride(out_numel);
    // SAFETY: the arguments match pad2d_fwd_<T>(Pad2dParams, const T*, T*, long long), x holds
    // n * c * h * w elements, y has out_numel, and y aliases nothing.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(y)
}

/// Copies the `(h_out, w_out)` window at `(top, left)` out of every plane of an `(n, c, h, w)`
/// buffer. The caller has checked that the window fits.
pub(crate) fn crop<T: Element>(
    x: &CudaBuffer<T>,
    dims: [usize; 4],
    (top, left): (usize, usize),
    (h_out, w_out): (usize, usize),
) -> Result<CudaBuffer<T>> {
    const OP: &str = "crop";
    let device = x.device();
    let [n, c, h, w] = dims;
    let out_numel = n * c * h_out * w_out;
    // SAFETY: the kernel writes y[i] for every i < out_numel; an empty buffer is never read.
    let mut y = unsafe { CudaBuffer::uninit(device, out_numel) }?;
    if out_numel == 0 {
        return Ok(y);
    }
    let params = Crop2dParams {
        n: int_arg(OP, "N", n)?,
        c: int_arg(OP, "C", c)?,
        h_in: int_arg(OP, "H", h)?,
        w_in: int_arg(OP, "W", w)?,
        top: int_arg(OP, "top", top)?,
        left: int_arg(OP, "left", left)?,
        h_out: int_arg(OP, "the window height", h_out)?,
        w_out: int_arg(OP, "the window width", w_out)?,
    };
    let (function, entry) =
        kernel::<T>(device, KernelModule::Shape, "crop2d", Some(Pass::Forward))?;
    let out_numel_arg = count_arg(out_numel);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(&params) // Crop2dParams p
        .arg(x.slice()) // const T* x
        .arg(y.slice_mut()) // T* y
        .arg(&out_numel_arg); // long long out_numel

    // Grid-stride loop over out_numel: grid = ceil(out_numel / 256) blocks (capped),
    // block = 256, no dynamic shared memory.
    let config = grid_stride(out_numel);
    // SAFETY: the arguments match crop2d_fwd_<T>(Crop2dParams, const T*, T*, long long), x holds
    // n * c * h * w elements, y has out_numel, and y aliases nothing.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(y)
}
