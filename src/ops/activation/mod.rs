//! Leaky ReLU, tanh, sigmoid and softplus.
//!
//! The leaky ReLU's derivative is piecewise constant, so its backward multiplies the upstream
//! gradient by a mask computed from the saved input, and that mask-multiply is its own backward.
//! Values are computed by the rayon closures here or by the kernels of `cuda.rs`, on the device
//! of the input.

pub(crate) mod cuda;

use crate::autograd::Var;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::elementwise::{cpu, map_values, map_values_libm};
use crate::tensor::{same_device, Tensor};

/// An activation function, with a CPU closure and a CUDA kernel for each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Activation {
    LeakyRelu(f64),
    Tanh,
    Sigmoid,
    Softplus,
}

/// Computes `activation(x)` on a value, on the value's device.
fn activation_values<T: Element>(activation: Activation, x: &Tensor<T>) -> Result<Tensor<T>> {
    if let Some(buffer) = x.cuda_buffer() {
        return Tensor::from_cuda(x.shape(), cuda::forward(activation, buffer)?);
    }
    Ok(match activation {
        Activation::LeakyRelu(slope) => {
            let s = T::from_f64(slope);
            map_values(x, move |x| if x > T::ZERO { x } else { x * s })
        }
        Activation::Tanh => map_values_libm(x, |x| x.tanh()),
        Activation::Sigmoid => map_values_libm(x, sigmoid),
        Activation::Softplus => map_values_libm(x, |x| {
            let positive = if x > T::ZERO { x } else { T::ZERO };
            positive + (-x.abs()).exp().ln_1p()
        }),
    })
}

/// Computes `g * (x > 0 ? 1 : slope)` on values, which must be on the same device.
fn leaky_mask_values<T: Element>(g: &Tensor<T>, x: &Tensor<T>, slope: T) -> Result<Tensor<T>> {
    const OP: &str = "leaky_relu_backward";
    if g.dims() != x.dims() {
        return Err(Error::shape(
            OP,
            "the gradient and the saved input must have the same shape",
            &[g.dims(), x.dims()],
        ));
    }
    if same_device(OP, &[g, x])?.is_cuda() {
        let out = cuda::leaky_mask(g.cuda(OP)?, x.cuda(OP)?, slope)?;
        return Tensor::from_cuda(g.shape(), out);
    }
    let data = cpu::zip_map(g.as_slice(), x.as_slice(), move |g, x| {
        if x > T::ZERO {
            g
        } else {
            g * slope
        }
    });
    Tensor::from_vec(g.shape(), data)
}

impl<T: Element> Var<T> {
    /// Returns `x` where `x > 0` and `slope * x` elsewhere.
    pub fn leaky_relu(&self, slope: f64) -> Result<Var<T>> {
        let value = activation_values(Activation::LeakyRelu(slope), self.value())?;
        let input = self.value().clone();
        Ok(Var::from_op("leaky_relu", value, &[self], move |args| {
            Ok(vec![Some(leaky_mask_mul(args.grad_output, &input, slope)?)])
        }))
    }

    /// Returns the element-wise hyperbolic tangent; the derivative is `1 - tanh(x)^2`.
    pub fn tanh(&self) -> Result<Var<T>> {
        let value = activation_values(Activation::Tanh, self.value())?;
        Ok(Var::from_op("tanh", value, &[self], |args| {
            let slope = args.output.square()?.neg()?.add_scalar(1.0)?;
            Ok(vec![Some(args.grad_output.mul(&slope)?)])
        }))
    }

    /// Returns the logistic sigmoid `1 / (1 + exp(-x))`; the derivative is `y (1 - y)`.
    pub fn sigmoid(&self) -> Result<Var<T>> {
        let value = activation_values(Activation::Sigmoid, self.value())?;
        Ok(Var::from_op("sigmoid", value, &[self], |args| {
            let y = args.output;
            let slope = y.mul(&y.neg()?.add_scalar(1.0)?)?;
            Ok(vec![Some(args.grad_output.mul(&slope)?)])
        }))
    }

    /// Returns `ln(1 + exp(x))`, computed as `max(x, 0) + ln(1 + exp(-|x|))` so it never
    /// overflows; the derivative is `sigmoid(x)`.
    pub fn softplus(&self) -> Result<Var<T>> {
        let value = activation_values(Activation::Softplus, self.value())?;
        Ok(Var::from_op("softplus", value, &[self], |args| {
            Ok(vec![Some(
                args.grad_output.mul(&args.inputs[0].sigmoid()?)?,
            )])
        }))
    }
}

/// Multiplies `g` by the leaky ReLU mask of the constant `x`; this is its own backward.
pub(crate) fn leaky_mask_mul<T: Element>(g: &Var<T>, x: &Tensor<T>, slope: f64) -> Result<Var<T>> {
    let value = leaky_mask_values(g.value(), x, T::from_f64(slope))?;
    let mask_input = x.clone();
    Ok(Var::from_op(
        "leaky_relu_backward",
        value,
        &[g],
        move |args| {
            Ok(vec![Some(leaky_mask_mul(
                args.grad_output,
                &mask_input,
                slope,
            )?)])
        },
    ))
}

/// Computes the logistic sigmoid without overflow for large `|x|`.
fn sigmoid<T: Element>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}
