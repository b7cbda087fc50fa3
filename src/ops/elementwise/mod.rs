//! Element-wise arithmetic with NumPy-style broadcasting.
//!
//! Binary ops accept any pair of broadcastable shapes; the gradient for a broadcast operand is
//! summed back to its shape with [`Var::sum_to`]. Unary ops that are cheapest to differentiate
//! through their output (sqrt, reciprocal) read it from [`BackwardArgs::output`].

pub(crate) mod cpu;
pub(crate) mod cuda;

use crate::autograd::{BackwardArgs, Var};
use crate::element::Element;
use crate::error::Result;
use crate::tensor::{broadcast_shape, same_device, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    fn label(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }
}

/// A one-input op of this family, with a CPU closure and a CUDA kernel for each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum UnaryOp {
    AddScalar(f64),
    MulScalar(f64),
    Square,
    Sqrt,
    ReciprocalOrZero,
}

/// Computes `op(x)` on a value, on the value's device.
fn unary_values<T: Element>(op: UnaryOp, x: &Tensor<T>) -> Result<Tensor<T>> {
    if let Some(buffer) = x.cuda_buffer() {
        return Tensor::from_cuda(x.shape(), cuda::unary(op, buffer)?);
    }
    Ok(match op {
        UnaryOp::AddScalar(scalar) => {
            let s = T::from_f64(scalar);
            map_values(x, move |x| x + s)
        }
        UnaryOp::MulScalar(scalar) => {
            let s = T::from_f64(scalar);
            map_values(x, move |x| x * s)
        }
        UnaryOp::Square => map_values(x, |x| x * x),
        UnaryOp::Sqrt => map_values(x, |x| x.sqrt()),
        UnaryOp::ReciprocalOrZero => {
            map_values(x, |x| if x > T::ZERO { T::ONE / x } else { T::ZERO })
        }
    })
}

/// Computes `a op b` on values, broadcasting as needed. Both must be on the same device.
fn binary_values<T: Element>(op: BinaryOp, a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    if same_device(op.label(), &[a, b])?.is_cuda() {
        let out_dims = if a.dims() == b.dims() {
            a.dims().to_vec()
        } else {
            broadcast_shape(op.label(), a.dims(), b.dims())?
        };
        let out = cuda::binary(
            op,
            a.cuda(op.label())?,
            a.dims(),
            b.cuda(op.label())?,
            b.dims(),
            &out_dims,
        )?;
        return Tensor::from_cuda(out_dims, out);
    }
    // One loop per op, so that each compiles to vector instructions without a branch per
    // element.
    match op {
        BinaryOp::Add => pair_values(op, a, b, |x, y| x + y),
        BinaryOp::Sub => pair_values(op, a, b, |x, y| x - y),
        BinaryOp::Mul => pair_values(op, a, b, |x, y| x * y),
        BinaryOp::Div => pair_values(op, a, b, |x, y| x / y),
    }
}

/// Computes `f(a, b)` element by element on host values, broadcasting when the dims differ.
fn pair_values<T: Element>(
    op: BinaryOp,
    a: &Tensor<T>,
    b: &Tensor<T>,
    f: impl Fn(T, T) -> T + Sync,
) -> Result<Tensor<T>> {
    if a.dims() == b.dims() {
        let data = cpu::zip_map(a.as_slice(), b.as_slice(), f);
        return Tensor::from_vec(a.shape(), data);
    }
    let out_dims = broadcast_shape(op.label(), a.dims(), b.dims())?;
    let data = cpu::broadcast_map(a.as_slice(), a.dims(), b.as_slice(), b.dims(), &out_dims, f);
    Tensor::from_vec(out_dims, data)
}

/// Adds two values without recording anything (used to accumulate gradients).
pub(crate) fn add_values<T: Element>(a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    binary_values(BinaryOp::Add, a, b)
}

/// Applies `f` to every element of a CPU value.
pub(crate) fn map_values<T: Element>(x: &Tensor<T>, f: impl Fn(T) -> T + Sync) -> Tensor<T> {
    let data = cpu::map(x.as_slice(), f);
    Tensor::from_vec(x.shape(), data).expect("map keeps the element count")
}

/// Applies `f`, a function that calls the C math library, to every element of a host value,
/// in tasks of [`cpu::LIBM_CHUNK`] elements.
pub(crate) fn map_values_libm<T: Element>(x: &Tensor<T>, f: impl Fn(T) -> T + Sync) -> Tensor<T> {
    let data = cpu::map_in_chunks(x.as_slice(), cpu::LIBM_CHUNK, f);
    Tensor::from_vec(x.shape(), data).expect("map keeps the element count")
}

impl<T: Element> Var<T> {
    fn binary(&self, other: &Var<T>, op: BinaryOp) -> Result<Var<T>> {
        let value = binary_values(op, self.value(), other.value())?;
        Ok(Var::from_op(
            op.label(),
            value,
            &[self, other],
            move |args: &BackwardArgs<'_, T>| {
                let (a, b) = (&args.inputs[0], &args.inputs[1]);
                let g = args.grad_output;
                let (grad_a, grad_b) = match op {
                    BinaryOp::Add => (g.clone(), g.clone()),
                    BinaryOp::Sub => (g.clone(), g.neg()?),
                    BinaryOp::Mul => (
                        if args.needs[0] { g.mul(b)? } else { g.clone() },
                        if args.needs[1] { g.mul(a)? } else { g.clone() },
                    ),
                    BinaryOp::Div => (
                        if args.needs[0] { g.div(b)? } else { g.clone() },
                        if args.needs[1] {
                            // d(a / b)/db = -a / b^2 = -(a / b) / b.
                            g.mul(args.output)?.div(b)?.neg()?
                        } else {
                            g.clone()
                        },
                    ),
                };
                let grad_a = if args.needs[0] {
                    Some(grad_a.sum_to(a.dims())?)
                } else {
                    None
                };
                let grad_b = if args.needs[1] {
                    Some(grad_b.sum_to(b.dims())?)
                } else {
                    None
                };
                Ok(vec![grad_a, grad_b])
            },
        ))
    }

    /// Returns `self + other`, broadcasting.
    pub fn add(&self, other: &Var<T>) -> Result<Var<T>> {
        self.binary(other, BinaryOp::Add)
    }

    /// Returns `self - other`, broadcasting.
    pub fn sub(&self, other: &Var<T>) -> Result<Var<T>> {
        self.binary(other, BinaryOp::Sub)
    }

    /// Returns `self * other` element-wise, broadcasting.
    pub fn mul(&self, other: &Var<T>) -> Result<Var<T>> {
        self.binary(other, BinaryOp::Mul)
    }

    /// Returns `self / other` element-wise, broadcasting.
    pub fn div(&self, other: &Var<T>) -> Result<Var<T>> {
        self.binary(other, BinaryOp::Div)
    }

    /// Returns `self + scalar`.
    pub fn add_scalar(&self, scalar: f64) -> Result<Var<T>> {
        let value = unary_values(UnaryOp::AddScalar(scalar), self.value())?;
        Ok(Var::from_op("add_scalar", value, &[self], |args| {
            Ok(vec![Some(args.grad_output.clone())])
        }))
    }

    /// Returns `self * scalar`.
    pub fn mul_scalar(&self, scalar: f64) -> Result<Var<T>> {
        let value = unary_values(UnaryOp::MulScalar(scalar), self.value())?;
        Ok(Var::from_op("mul_scalar", value, &[self], move |args| {
            Ok(vec![Some(args.grad_output.mul_scalar(scalar)?)])
        }))
    }

    /// Returns `-self`.
    pub fn neg(&self) -> Result<Var<T>> {
        self.mul_scalar(-1.0)
    }

    /// Returns `self^2` element-wise; the derivative is `2 self`.
    pub fn square(&self) -> Result<Var<T>> {
        let value = unary_values(UnaryOp::Square, self.value())?;
        Ok(Var::from_op("square", value, &[self], |args| {
            let grad = args.grad_output.mul(&args.inputs[0])?.mul_scalar(2.0)?;
            Ok(vec![Some(grad)])
        }))
    }

    /// Returns the element-wise square root; the derivative is `1 / (2 sqrt(x))`.
    pub fn sqrt(&self) -> Result<Var<T>> {
        let value = unary_values(UnaryOp::Sqrt, self.value())?;
        Ok(Var::from_op("sqrt", value, &[self], |args| {
            let grad = args.grad_output.div(args.output)?.mul_scalar(0.5)?;
            Ok(vec![Some(grad)])
        }))
    }

    /// Returns `1 / x` where `x > 0` and 0 elsewhere.
    ///
    /// The derivative is `-1 / x^2 = -y^2` where `x > 0` and 0 elsewhere, so it stays finite at
    /// zero; the channel norm uses this to give a zero vector a zero gradient.
    pub fn reciprocal_or_zero(&self) -> Result<Var<T>> {
        let value = unary_values(UnaryOp::ReciprocalOrZero, self.value())?;
        Ok(Var::from_op("reciprocal_or_zero", value, &[self], |args| {
            let grad = args.grad_output.mul(&args.output.square()?)?.neg()?;
            Ok(vec![Some(grad)])
        }))
    }
}
