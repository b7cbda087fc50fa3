//! Leaky ReLU, tanh, sigmoid and softplus.
//!
//! The leaky ReLU's derivative is piecewise constant, so its backward multiplies the upstream
//! gradient by a mask computed from the saved input, and that mask-multiply is its own backward.

use crate::autograd::Var;
use crate::element::Element;
use crate::error::Result;
use crate::ops::elementwise::{cpu, map_values};
use crate::tensor::Tensor;

/// Computes `g * (x > 0 ? 1 : slope)` on values.
fn leaky_mask_values<T: Element>(g: &Tensor<T>, x: &Tensor<T>, slope: T) -> Tensor<T> {
    let data = cpu::zip_map(g.as_slice(), x.as_slice(), move |g, x| {
        if x > T::ZERO {
            g
        } else {
            g * slope
        }
    });
    Tensor::from_vec(g.shape(), data).expect("mask keeps the element count")
}

impl<T: Element> Var<T> {
    /// Returns `x` where `x > 0` and `slope * x` elsewhere.
    pub fn leaky_relu(&self, slope: f64) -> Result<Var<T>> {
        let s = T::from_f64(slope);
        let value = map_values(self.value(), move |x| if x > T::ZERO { x } else { x * s });
        let input = self.value().clone();
        Ok(Var::from_op("leaky_relu", value, &[self], move |args| {
            Ok(vec![Some(leaky_mask_mul(args.grad_output, &input, slope))])
        }))
    }

    /// Returns the element-wise hyperbolic tangent; the derivative is `1 - tanh(x)^2`.
    pub fn tanh(&self) -> Result<Var<T>> {
        let value = map_values(self.value(), |x| x.tanh());
        Ok(Var::from_op("tanh", value, &[self], |args| {
            let slope = args.output.square()?.neg()?.add_scalar(1.0)?;
            Ok(vec![Some(args.grad_output.mul(&slope)?)])
        }))
    }

    /// Returns the logistic sigmoid `1 / (1 + exp(-x))`; the derivative is `y (1 - y)`.
    pub fn sigmoid(&self) -> Result<Var<T>> {
        let value = map_values(self.value(), sigmoid);
        Ok(Var::from_op("sigmoid", value, &[self], |args| {
            let y = args.output;
            let slope = y.mul(&y.neg()?.add_scalar(1.0)?)?;
            Ok(vec![Some(args.grad_output.mul(&slope)?)])
        }))
    }

    /// Returns `ln(1 + exp(x))`, computed as `max(x, 0) + ln(1 + exp(-|x|))` so it never
    /// overflows; the derivative is `sigmoid(x)`.
    pub fn softplus(&self) -> Result<Var<T>> {
        let value = map_values(self.value(), |x| {
            let positive = if x > T::ZERO { x } else { T::ZERO };
            positive + (-x.abs()).exp().ln_1p()
        });
        Ok(Var::from_op("softplus", value, &[self], |args| {
            Ok(vec![Some(
                args.grad_output.mul(&args.inputs[0].sigmoid()?)?,
            )])
        }))
    }
}

/// Multiplies `g` by the leaky ReLU mask of the constant `x`; this is its own backward.
fn leaky_mask_mul<T: Element>(g: &Var<T>, x: &Tensor<T>, slope: f64) -> Var<T> {
    let value = leaky_mask_values(g.value(), x, T::from_f64(slope));
    let mask_input = x.clone();
    Var::from_op("leaky_relu_backward", value, &[g], move |args| {
        Ok(vec![Some(leaky_mask_mul(
            args.grad_output,
            &mask_input,
            slope,
        ))])
    })
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
