//! Launchers of the element-wise kernels in kernels/elementwise.cu, and the one-input map
//! launchers that kernels/activation.cu shares.
//!
//! Every kernel here is a 1-D grid-stride loop that overwrites its whole output, so outputs are
//! allocated uninitialised. Launches are queued on the input's stream, and nothing waits for
//! them unless `SINGAN_CUDA_SYNC=1` is set.

use std::sync::Arc;

use cudarc::driver::PushKernelArg;

use super::{BinaryOp, UnaryOp};
use crate::cuda::launch::{count_arg, grid_stride, kernel};
use crate::cuda::params::BinaryBroadcastParams;
use crate::cuda::{CudaBuffer, CudaDevice, KernelModule, Pass};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::tensor::shape::broadcast_strides;

/// Returns a new buffer of `numel` copies of `value`.
pub(crate) fn fill<T: Element>(
    device: &Arc<CudaDevice>,
    numel: usize,
    value: T,
) -> Result<CudaBuffer<T>> {
    // SAFETY: fill_<T> writes every element below; an empty buffer is never read.
    let mut y = unsafe { CudaBuffer::uninit(device, numel) }?;
    if numel == 0 {
        return Ok(y);
    }
    let (function, entry) = kernel::<T>(device, KernelModule::Elementwise, "fill", None)?;
    let numel_arg = count_arg(numel);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(y.slice_mut()) // T* y
        .arg(&value) // T value
        .arg(&numel_arg); // long long numel

    // Grid-stride loop over numel: grid = ceil(numel / 256) blocks (capped), block = 256,
    // no dynamic shared memory.
    let config = grid_stride(numel);
    // SAFETY: the arguments match fill_<T>(T* y, T value, long long numel), and y has numel
    // elements.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(y)
}

/// Computes `op(x)` with a kernel `<name>(const T* x, T* y, long long numel)` of `module`.
pub(crate) fn map<T: Element>(
    module: KernelModule,
    name: &str,
    x: &CudaBuffer<T>,
) -> Result<CudaBuffer<T>> {
    let device = x.device();
    let numel = x.len();
    // SAFETY: the kernel writes y[i] for every i < numel; an empty buffer is never read.
    let mut y = unsafe { CudaBuffer::uninit(device, numel) }?;
    if numel == 0 {
        return Ok(y);
    }
    let (function, entry) = kernel::<T>(device, module, name, Some(Pass::Forward))?;
    let numel_arg = count_arg(numel);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(x.slice()) // const T* x
        .arg(y.slice_mut()) // T* y
        .arg(&numel_arg); // long long numel

    // Grid-stride loop over numel: grid = ceil(numel / 256) blocks (capped), block = 256,
    // no dynamic shared memory.
    let config = grid_stride(numel);
    // SAFETY: the arguments match the documented signature of <name>_fwd_<T>, and x and y both
    // have numel elements.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(y)
}

/// Computes `op(x, scalar)` with a kernel `<name>(const T* x, T* y, T scalar, long long numel)`
/// of `module`.
pub(crate) fn map_with_scalar<T: Element>(
    module: KernelModule,
    name: &str,
    x: &CudaBuffer<T>,
    scalar: T,
) -> Result<CudaBuffer<T>> {
    let device = x.device();
    let numel = x.len();
    // SAFETY: the kernel writes y[i] for every i < numel; an empty buffer is never read.
    let mut y = unsafe { CudaBuffer::uninit(device, numel) }?;
    if numel == 0 {
        return Ok(y);
    }
    let (function, entry) = kernel::<T>(device, module, name, Some(Pass::Forward))?;
    let numel_arg = count_arg(numel);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(x.slice()) // const T* x
        .arg(y.slice_mut()) // T* y
        .arg(&scalar) // T scalar (the slope of leaky_relu_fwd)
        .arg(&numel_arg); // long long numel

    // Grid-stride loop over numel: grid = ceil(numel / 256) blocks (capped), block = 256,
    // no dynamic shared memory.
    let config = grid_stride(numel);
    // SAFETY: the arguments match the documented signature of <name>_fwd_<T>, and x and y both
    // have numel elements.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(y)
}

/// Computes a unary op of this family.
pub(crate) fn unary<T: Element>(op: UnaryOp, x: &CudaBuffer<T>) -> Result<CudaBuffer<T>> {
    let module = KernelModule::Elementwise;
    match op {
        UnaryOp::AddScalar(scalar) => map_with_scalar(module, "scalar_add", x, T::from_f64(scalar)),
        UnaryOp::MulScalar(scalar) => map_with_scalar(module, "scalar_mul", x, T::from_f64(scalar)),
        UnaryOp::Square => map(module, "square", x),
        UnaryOp::Sqrt => map(module, "sqrt", x),
        UnaryOp::ReciprocalOrZero => map(module, "safe_recip", x),
    }
}

/// Computes `a op b` with broadcasting; `out_dims` is the broadcast of `a_dims` and `b_dims`.
pub(crate) fn binary<T: Element>(
    op: BinaryOp,
    a: &CudaBuffer<T>,
    a_dims: &[usize],
    b: &CudaBuffer<T>,
    b_dims: &[usize],
    out_dims: &[usize],
) -> Result<CudaBuffer<T>> {
    let device = a.device();
    let numel: usize = out_dims.iter().product();
    // SAFETY: the kernel writes out[i] for every i < numel; an empty buffer is never read.
    let mut out = unsafe { CudaBuffer::uninit(device, numel) }?;
    if numel == 0 {
        return Ok(out);
    }
    let params = broadcast_layout(op.label(), a_dims, b_dims, out_dims)?;
    let (function, entry) = kernel::<T>(
        device,
        KernelModule::Elementwise,
        op.label(),
        Some(Pass::Forward),
    )?;
    let numel_arg = count_arg(numel);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(&params) // BinaryBroadcastParams p
        .arg(a.slice()) // const T* lhs
        .arg(b.slice()) // const T* rhs
        .arg(out.slice_mut()) // T* out
        .arg(&numel_arg); // long long numel

    // Grid-stride loop over the numel output elements: grid = ceil(numel / 256) blocks
    // (capped), block = 256, no dynamic shared memory.
    let config = grid_stride(numel);
    // SAFETY: the arguments match <op>_fwd_<T>(BinaryBroadcastParams, const T*, const T*, T*,
    // long long). `params` addresses lhs and rhs only inside their own dims, out has numel
    // elements, and out is a fresh buffer that aliases neither input.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(&entry, launched)?;
    Ok(out)
}

/// Builds the rank-4 broadcast layout of `a op b` for the binary kernels.
///
/// Size-1 output dims are dropped, and neighbouring dims are merged where both operands step
/// through them as one run (both contiguous, or both broadcast), so any rank works as long as
/// at most 4 runs remain.
fn broadcast_layout(
    op: &'static str,
    a_dims: &[usize],
    b_dims: &[usize],
    out_dims: &[usize],
) -> Result<BinaryBroadcastParams> {
    let a_strides = broadcast_strides(a_dims, out_dims);
    let b_strides = broadcast_strides(b_dims, out_dims);
    // (dim, lhs stride, rhs stride), outermost first.
    let mut runs: Vec<(usize, usize, usize)> = Vec::with_capacity(out_dims.len());
    for (axis, &dim) in out_dims.iter().enumerate() {
        if dim == 1 {
            continue;
        }
        let (a_stride, b_stride) = (a_strides[axis], b_strides[axis]);
        if let Some(outer) = runs.last_mut() {
            if outer.1 == a_stride * dim && outer.2 == b_stride * dim {
                *outer = (outer.0 * dim, a_stride, b_stride);
                continue;
            }
        }
        runs.push((dim, a_stride, b_stride));
    }
    if runs.len() > 4 {
        return Err(Error::shape(
            op,
            format!(
                "the CUDA kernels take at most 4 dims after merging neighbouring dims, and these operands need {}",
                runs.len()
            ),
            &[a_dims, b_dims],
        ));
    }
    let mut params = BinaryBroadcastParams {
        out_shape: [1; 4],
        lhs_strides: [0; 4],
        rhs_strides: [0; 4],
    };
    let offset = 4 - runs.len();
    for (index, &(dim, a_stride, b_stride)) in runs.iter().enumerate() {
        params.out_shape[offset + index] = dim as i64;
        params.lhs_strides[offset + index] = a_stride as i64;
        params.rhs_strides[offset + index] = b_stride as i64;
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::broadcast_layout;

    #[test]
    fn equal_shapes_merge_into_one_run() {
        let p =
            broadcast_layout("add", &[2, 3, 4, 5, 6], &[2, 3, 4, 5, 6], &[2, 3, 4, 5, 6]).unwrap();
        assert_eq!(p.out_shape, [1, 1, 1, 720]);
        assert_eq!(p.lhs_strides, [0, 0, 0, 1]);
        assert_eq!(p.rhs_strides, [0, 0, 0, 1]);
    }

    #[test]
    fn channel_broadcast_keeps_three_runs() {
        let p = broadcast_layout("mul", &[2, 3, 7, 6], &[1, 3, 1, 1], &[2, 3, 7, 6]).unwrap();
        assert_eq!(p.out_shape, [1, 2, 3, 42]);
        assert_eq!(p.lhs_strides, [0, 126, 42, 1]);
        assert_eq!(p.rhs_strides, [0, 0, 1, 0]);
    }

    #[test]
    fn lower_rank_operand_is_aligned_right() {
        let p = broadcast_layout("sub", &[5], &[4, 5], &[4, 5]).unwrap();
        assert_eq!(p.out_shape, [1, 1, 4, 5]);
        assert_eq!(p.lhs_strides, [0, 0, 0, 1]);
        assert_eq!(p.rhs_strides, [0, 0, 5, 1]);
    }

    #[test]
    fn too_many_alternating_runs_are_rejected() {
        let a = [2, 1, 2, 1, 2];
        let b = [1, 2, 1, 2, 1];
        let error = broadcast_layout("add", &a, &b, &[2, 2, 2, 2, 2]).unwrap_err();
        assert!(error.to_string().contains("at most 4 dims"), "{error}");
    }
}
