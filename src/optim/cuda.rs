//! Launcher of the fused Adam step in kernels/adam.cu.

use cudarc::driver::PushKernelArg;

use crate::cuda::launch::{count_arg, grid_stride, kernel};
use crate::cuda::{CudaBuffer, KernelModule};
use crate::element::Element;
use crate::error::Result;

/// Per-step scalars of the kernel, in the element type.
pub(crate) struct AdamScalars<T> {
    pub(crate) lr: T,
    pub(crate) beta1: T,
    pub(crate) beta2: T,
    pub(crate) eps: T,
    /// `1 - beta1^t` for step `t`.
    pub(crate) bias_correction1: T,
    /// `1 - beta2^t` for step `t`.
    pub(crate) bias_correction2: T,
}

/// Queues one Adam step that updates `param`, `exp_avg` and `exp_avg_sq` in place from `grad`.
/// All four buffers have the same number of elements and are distinct.
pub(crate) fn adam_update<T: Element>(
    grad: &CudaBuffer<T>,
    param: &mut CudaBuffer<T>,
    exp_avg: &mut CudaBuffer<T>,
    exp_avg_sq: &mut CudaBuffer<T>,
    k: &AdamScalars<T>,
) -> Result<()> {
    let device = grad.device().clone();
    let numel = grad.len();
    if numel == 0 {
        return Ok(());
    }
    let (function, entry) = kernel::<T>(&device, KernelModule::Adam, "adam_update", None)?;
    let numel_arg = count_arg(numel);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(grad.slice()) // const T* grad
        .arg(param.slice_mut()) // T* param
        .arg(exp_avg.slice_mut()) // T* exp_avg
        .arg(exp_avg_sq.slice_mut()) // T* exp_avg_sq
        .arg(&k.lr) // T lr
        .arg(&k.beta1) // T beta1
        .arg(&k.beta2) // T beta2
        .arg(&k.eps) // T eps
        .arg(&k.bias_correction1) // T bias_correction1
        .arg(&k.bias_correction2) // T bias_correction2
        .arg(&numel_arg); // long long numel

    // Grid-stride loop over numel, one parameter per thread: grid = ceil(numel / 256) blocks
    // (capped), block = 256, no dynamic shared memory.
    let config = grid_stride(numel);
    // SAFETY: the arguments match adam_update_<T>(const T*, T*, T*, T*, T, T, T, T, T, T,
    // long long). The four buffers have numel elements each, and the three that are written
    // are borrowed mutably here, so they are distinct from each other and from grad.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(())
}
