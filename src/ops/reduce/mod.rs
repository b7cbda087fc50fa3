//! Sums, means, broadcasting and the channel L2 norm.
//!
//! [`Var::sum_to`] and [`Var::broadcast_to`] are each other's backward, which is what makes
//! broadcasting ops differentiable any number of times.

pub(crate) mod avx512;
pub(crate) mod cpu;
pub(crate) mod cuda;

use crate::autograd::Var;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::tensor::{broadcast_shape, Tensor};

/// Pads `target` with leading 1s to `rank` dims.
fn left_pad(target: &[usize], rank: usize) -> Vec<usize> {
    let mut dims = vec![1; rank - target.len()];
    dims.extend_from_slice(target);
    dims
}

/// Sums a value down to `target` dims, which must broadcast to the value's dims.
pub(crate) fn sum_to_values<T: Element>(x: &Tensor<T>, target: &[usize]) -> Result<Tensor<T>> {
    if x.dims() == target {
        return Ok(x.clone());
    }
    let broadcast = broadcast_shape("sum_to", target, x.dims())?;
    if target.len() > x.dims().len() || broadcast != x.dims() {
        return Err(Error::shape(
            "sum_to",
            "the target shape must broadcast to the input shape",
            &[x.dims(), target],
        ));
    }
    if x.numel() == 0 {
        // A sum over no elements is zero.
        return Tensor::zeros_on(target, &x.device());
    }
    let padded = left_pad(target, x.dims().len());
    if let Some(buffer) = x.cuda_buffer() {
        return Tensor::from_cuda(target, cuda::sum_to(buffer, x.dims(), &padded)?);
    }
    let data = cpu::sum_to(x.as_slice(), x.dims(), &padded);
    Tensor::from_vec(target, data)
}

/// Broadcasts a value to `target` dims.
pub(crate) fn broadcast_values<T: Element>(x: &Tensor<T>, target: &[usize]) -> Result<Tensor<T>> {
    if x.dims() == target {
        return Ok(x.clone());
    }
    let broadcast = broadcast_shape("broadcast_to", x.dims(), target)?;
    if broadcast != target {
        return Err(Error::shape(
            "broadcast_to",
            "the input shape does not broadcast to the target shape",
            &[x.dims(), target],
        ));
    }
    if let Some(buffer) = x.cuda_buffer() {
        return Tensor::from_cuda(target, cuda::broadcast_to(buffer, x.dims(), target)?);
    }
    let zero = [T::ZERO];
    let data = crate::ops::elementwise::cpu::broadcast_map(
        x.as_slice(),
        x.dims(),
        &zero,
        &[1],
        target,
        |value, _| value,
    );
    Tensor::from_vec(target, data)
}

/// Returns the dims of `dims` with every axis in `axes` set to 1, or an error naming `op`.
fn reduced_dims(op: &'static str, dims: &[usize], axes: &[usize]) -> Result<Vec<usize>> {
    let mut out = dims.to_vec();
    for &axis in axes {
        if axis >= dims.len() {
            return Err(Error::shape(
                op,
                format!("axis {axis} is out of range for rank {}", dims.len()),
                &[dims],
            ));
        }
        out[axis] = 1;
    }
    Ok(out)
}

impl<T: Element> Var<T> {
    /// Sums this value down to `target` dims, the reverse of broadcasting.
    pub fn sum_to(&self, target: &[usize]) -> Result<Var<T>> {
        if self.dims() == target {
            return Ok(self.clone());
        }
        let value = sum_to_values(self.value(), target)?;
        let input_dims = self.dims().to_vec();
        Ok(Var::from_op("sum_to", value, &[self], move |args| {
            Ok(vec![Some(args.grad_output.broadcast_to(&input_dims)?)])
        }))
    }

    /// Repeats this value along its size-1 (or missing leading) axes to reach `target` dims.
    pub fn broadcast_to(&self, target: &[usize]) -> Result<Var<T>> {
        if self.dims() == target {
            return Ok(self.clone());
        }
        let value = broadcast_values(self.value(), target)?;
        let input_dims = self.dims().to_vec();
        Ok(Var::from_op("broadcast_to", value, &[self], move |args| {
            Ok(vec![Some(args.grad_output.sum_to(&input_dims)?)])
        }))
    }

    /// Returns the sum of all elements, with shape `[1]`.
    pub fn sum(&self) -> Result<Var<T>> {
        let summed = self.sum_to(&vec![1; self.dims().len().max(1)])?;
        summed.reshape(&[1])
    }

    /// Returns the mean of all elements, with shape `[1]`.
    pub fn mean(&self) -> Result<Var<T>> {
        if self.numel() == 0 {
            return Err(Error::shape(
                "mean",
                "the mean of no elements is undefined",
                &[self.dims()],
            ));
        }
        self.sum()?.mul_scalar(1.0 / self.numel() as f64)
    }

    /// Sums over `axes`, keeping them as size-1 dims.
    pub fn sum_axes(&self, axes: &[usize]) -> Result<Var<T>> {
        let target = reduced_dims("sum_axes", self.dims(), axes)?;
        self.sum_to(&target)
    }

    /// Averages over `axes`, keeping them as size-1 dims.
    pub fn mean_axes(&self, axes: &[usize]) -> Result<Var<T>> {
        let target = reduced_dims("mean_axes", self.dims(), axes)?;
        let count = self.numel() / target.iter().product::<usize>().max(1);
        if count == 0 {
            return Err(Error::shape(
                "mean_axes",
                "the mean of no elements is undefined",
                &[self.dims()],
            ));
        }
        self.sum_to(&target)?.mul_scalar(1.0 / count as f64)
    }

    /// Returns the L2 norm over the channel axis: `(N, C, H, W)` to `(N, 1, H, W)`.
    ///
    /// The derivative is `x / ||x||`, taken as 0 where the norm is 0.
    pub fn channel_norm(&self) -> Result<Var<T>> {
        let dims = self.value().dims4("channel_norm", "input")?;
        let out_dims = [dims[0], 1, dims[2], dims[3]];
        let value = match self.value().cuda_buffer() {
            Some(buffer) => Tensor::from_cuda(out_dims, cuda::channel_norm(buffer, dims)?)?,
            None => Tensor::from_vec(out_dims, cpu::channel_norm(self.value().as_slice(), dims))?,
        };
        Ok(Var::from_op("channel_norm", value, &[self], |args| {
            let scale = args.grad_output.mul(&args.output.reciprocal_or_zero()?)?;
            Ok(vec![Some(args.inputs[0].mul(&scale)?)])
        }))
    }
}
