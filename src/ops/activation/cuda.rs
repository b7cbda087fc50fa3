//! Launchers of the activation kernels in kernels/activation.cu.
//!
//! The forward kernels share the one-input map launchers of the element-wise family. Launches
//! are queued on the input's stream, and nothing waits for them unless `SINGAN_CUDA_SYNC=1` is
//! set.

use cudarc::driver::PushKernelArg;

use super::Activation;
use crate::cuda::launch::{count_arg, grid_stride, kernel};
use crate::cuda::{CudaBuffer, KernelModule, Pass};
use crate::element::Element;
use crate::error::Result;
use crate::ops::elementwise::cuda::{map, map_with_scalar};

/// Computes `activation(x)`.
pub(crate) fn forward<T: Element>(
    activation: Activation,
    x: &CudaBuffer<T>,
) -> Result<CudaBuffer<T>> {
    let module = KernelModule::Activation;
    match activation {
        Activation::LeakyRelu(slope) => {
            map_with_scalar(module, "leaky_relu", x, T::from_f64(slope))
        }
        Activation::Tanh => map(module, "tanh", x),
        Activation::Sigmoid => map(module, "sigmoid", x),
        Activation::Softplus => map(module, "softplus", x),
    }
}

/// Computes `g * (x > 0 ? 1 : slope)`, the leaky ReLU mask multiply. `g` and `x` have the same
/// element count.
pub(crate) fn leaky_mask<T: Element>(
    g: &CudaBuffer<T>,
    x: &CudaBuffer<T>,
    slope: T,
) -> Result<CudaBuffer<T>> {
    let device = g.device();
    let numel = g.len();
    // The kernel accumulates into grad_x, so it starts from zero.
    let mut grad_x = CudaBuffer::zeros(device, numel)?;
    if numel == 0 {
        return Ok(grad_x);
    }
    let (function, entry) = kernel::<T>(
        device,
        KernelModule::Activation,
        "leaky_relu",
        Some(Pass::Backward),
    )?;
    let numel_arg = count_arg(numel);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(x.slice()) // const T* x
        .arg(g.slice()) // const T* grad_y
        .arg(grad_x.slice_mut()) // T* grad_x
        .arg(&slope) // T slope
        .arg(&numel_arg); // long long numel

    // Grid-stride loop over numel: grid = ceil(numel / 256) blocks (capped), block = 256,
    // no dynamic shared memory.
    let config = grid_stride(numel);
    // SAFETY: the arguments match leaky_relu_bwd_<T>(const T* x, const T* grad_y, T* grad_x,
    // T slope, long long numel), all three buffers have numel elements, and grad_x is a fresh
    // buffer that aliases neither input.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(grad_x)
}
