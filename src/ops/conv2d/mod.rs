//! 2-D convolution (cross-correlation, stride 1, zero padding) and its two gradients.
//!
//! The input-gradient and the weight-gradient are ops of their own, so each can be taped and
//! differentiated again. With `conv(x, w)` the forward op, `input_grad(gy, w)` and
//! `weight_grad(x, gy)` are bilinear and their backward passes close over the three:
//!
//! - `conv(x, w)`: `dx = input_grad(g, w)`, `dw = weight_grad(x, g)`;
//! - `input_grad(gy, w)`: `d gy = conv(g, w)`, `dw = weight_grad(g, gy)`;
//! - `weight_grad(x, gy)`: `dx = input_grad(gy, g)`, `d gy = conv(x, g)`.
//!
//! Shapes: input `(N, C_in, H, W)`, weight `(C_out, C_in, K_h, K_w)`, bias `(C_out)`, output
//! `(N, C_out, H + 2p - K_h + 1, W + 2p - K_w + 1)`.

pub(crate) mod cpu;
pub(crate) mod cuda;
mod direct;
mod winograd;
mod winograd_avx512;
mod winograd_transforms_avx512;

pub use cpu::{reference, ConvGeometry};

use crate::autograd::Var;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::tensor::{same_device, Tensor};

/// Checks an input and weight pair and returns the geometry of their convolution.
fn geometry(
    op: &'static str,
    input: &[usize],
    weight: &[usize],
    padding: usize,
) -> Result<ConvGeometry> {
    let [n, c_in, h_in, w_in] = <[usize; 4]>::try_from(input)
        .map_err(|_| Error::shape(op, "input must have 4 dims (N, C_in, H, W)", &[input]))?;
    let [c_out, weight_c_in, k_h, k_w] = <[usize; 4]>::try_from(weight).map_err(|_| {
        Error::shape(
            op,
            "weight must have 4 dims (C_out, C_in, K_h, K_w)",
            &[weight],
        )
    })?;
    if c_in != weight_c_in {
        return Err(Error::shape(
            op,
            format!("input has {c_in} channels but the weight expects {weight_c_in}"),
            &[input, weight],
        ));
    }
    if k_h == 0 || k_w == 0 {
        return Err(Error::shape(op, "the kernel must not be empty", &[weight]));
    }
    if h_in + 2 * padding < k_h || w_in + 2 * padding < k_w {
        return Err(Error::shape(
            op,
            format!(
                "the {h_in}x{w_in} input padded by {padding} is smaller than the {k_h}x{k_w} kernel"
            ),
            &[input, weight],
        ));
    }
    Ok(ConvGeometry {
        n,
        c_in,
        c_out,
        h_in,
        w_in,
        k_h,
        k_w,
        pad_h: padding as isize,
        pad_w: padding as isize,
    })
}

/// Checks that `grad_output` has the output shape of `geometry`.
fn check_grad_output(op: &'static str, grad_output: &[usize], g: &ConvGeometry) -> Result<()> {
    let expected = [g.n, g.c_out, g.h_out(), g.w_out()];
    if grad_output != expected {
        return Err(Error::shape(
            op,
            "grad_output must have the convolution's output shape",
            &[grad_output, &expected],
        ));
    }
    Ok(())
}

impl<T: Element> Var<T> {
    /// Convolves this `(N, C_in, H, W)` input with `weight` and adds `bias` per output channel.
    ///
    /// On the CPU the convolution op adds the bias itself, in the Winograd output transform or
    /// in place after the other kernels, so no second output tensor is written. On a GPU the
    /// bias is a separate broadcast add.
    pub fn conv2d(&self, weight: &Var<T>, bias: Option<&Var<T>>, padding: usize) -> Result<Var<T>> {
        let g = geometry("conv2d", self.dims(), weight.dims(), padding)?;
        if let Some(bias) = bias {
            bias.value().expect_dims("conv2d", "bias", &[g.c_out])?;
        }
        let (x, w) = (self.value(), weight.value());
        if !same_device("conv2d", &[x, w])?.is_cuda() {
            return conv2d_op(self, weight, bias, padding, &g);
        }
        let out = conv2d_op(self, weight, None, padding, &g)?;
        match bias {
            None => Ok(out),
            Some(bias) => out.add(&bias.reshape(&[1, g.c_out, 1, 1])?),
        }
    }
}

/// Records the convolution of `input` by `weight` with geometry `g`, plus `bias` per output
/// channel when given. A bias is only taken on the CPU, with the other operands there too.
fn conv2d_op<T: Element>(
    input: &Var<T>,
    weight: &Var<T>,
    bias: Option<&Var<T>>,
    padding: usize,
    g: &ConvGeometry,
) -> Result<Var<T>> {
    let out_dims = [g.n, g.c_out, g.h_out(), g.w_out()];
    let (x, w) = (input.value(), weight.value());
    let value = if same_device("conv2d", &[x, w])?.is_cuda() {
        debug_assert!(bias.is_none(), "the CUDA path adds the bias as its own op");
        let y = cuda::forward(x.cuda("conv2d")?, w.cuda("conv2d")?, g)?;
        Tensor::from_cuda(out_dims, y)?
    } else {
        let bias_values = match bias {
            Some(bias) => {
                same_device("conv2d", &[x, bias.value()])?;
                Some(bias.value().as_slice())
            }
            None => None,
        };
        let y = cpu::forward_with_bias(x.as_slice(), w.as_slice(), bias_values, g);
        Tensor::from_vec(out_dims, y)?
    };
    let (h_in, w_in) = (g.h_in, g.w_in);
    let (k_h, k_w, c_out) = (g.k_h, g.k_w, g.c_out);
    let mut inputs = vec![input, weight];
    inputs.extend(bias);
    Ok(Var::from_op("conv2d", value, &inputs, move |args| {
        let (x, w, g) = (&args.inputs[0], &args.inputs[1], args.grad_output);
        let grad_input = if args.needs[0] {
            Some(conv2d_input_grad(g, w, padding, (h_in, w_in))?)
        } else {
            None
        };
        let grad_weight = if args.needs[1] {
            Some(conv2d_weight_grad(x, g, padding, (k_h, k_w))?)
        } else {
            None
        };
        let mut grads = vec![grad_input, grad_weight];
        if args.inputs.len() == 3 {
            // The same ops as the backward of a broadcast add of the bias reshaped to
            // (1, C_out, 1, 1), so the values match that composition.
            grads.push(if args.needs[2] {
                Some(g.sum_to(&[1, c_out, 1, 1])?.reshape(&[c_out])?)
            } else {
                None
            });
        }
        Ok(grads)
    }))
}

/// Computes the gradient of `conv2d(x, weight, padding)` with respect to `x`, where `x` is
/// `input_hw` in size: a transposed convolution of `grad_output` `(N, C_out, H_out, W_out)`.
pub fn conv2d_input_grad<T: Element>(
    grad_output: &Var<T>,
    weight: &Var<T>,
    padding: usize,
    input_hw: (usize, usize),
) -> Result<Var<T>> {
    let op = "conv2d_input_grad";
    let (n, c_in) = match (grad_output.dims().first(), weight.dims().get(1)) {
        (Some(&n), Some(&c_in)) => (n, c_in),
        _ => {
            return Err(Error::shape(
                op,
                "grad_output and weight must have 4 dims",
                &[grad_output.dims(), weight.dims()],
            ))
        }
    };
    let g = geometry(
        op,
        &[n, c_in, input_hw.0, input_hw.1],
        weight.dims(),
        padding,
    )?;
    check_grad_output(op, grad_output.dims(), &g)?;
    let out_dims = [g.n, g.c_in, g.h_in, g.w_in];
    let (gy, w) = (grad_output.value(), weight.value());
    let value = if same_device(op, &[gy, w])?.is_cuda() {
        Tensor::from_cuda(out_dims, cuda::input_grad(gy.cuda(op)?, w.cuda(op)?, &g)?)?
    } else {
        Tensor::from_vec(out_dims, cpu::input_grad(gy.as_slice(), w.as_slice(), &g))?
    };
    let (k_h, k_w) = (g.k_h, g.k_w);
    Ok(Var::from_op(
        op,
        value,
        &[grad_output, weight],
        move |args| {
            let (gy, w, g) = (&args.inputs[0], &args.inputs[1], args.grad_output);
            let grad_gy = if args.needs[0] {
                Some(g.conv2d(w, None, padding)?)
            } else {
                None
            };
            let grad_weight = if args.needs[1] {
                Some(conv2d_weight_grad(g, gy, padding, (k_h, k_w))?)
            } else {
                None
            };
            Ok(vec![grad_gy, grad_weight])
        },
    ))
}

/// Computes the gradient of `conv2d(input, w, padding)` with respect to a `kernel_hw` weight `w`,
/// given `grad_output` `(N, C_out, H_out, W_out)`; the result is `(C_out, C_in, K_h, K_w)`.
pub fn conv2d_weight_grad<T: Element>(
    input: &Var<T>,
    grad_output: &Var<T>,
    padding: usize,
    kernel_hw: (usize, usize),
) -> Result<Var<T>> {
    let op = "conv2d_weight_grad";
    let (c_out, c_in) = match (grad_output.dims().get(1), input.dims().get(1)) {
        (Some(&c_out), Some(&c_in)) => (c_out, c_in),
        _ => {
            return Err(Error::shape(
                op,
                "input and grad_output must have 4 dims",
                &[input.dims(), grad_output.dims()],
            ))
        }
    };
    let weight_dims = [c_out, c_in, kernel_hw.0, kernel_hw.1];
    let g = geometry(op, input.dims(), &weight_dims, padding)?;
    check_grad_output(op, grad_output.dims(), &g)?;
    let (x, gy) = (input.value(), grad_output.value());
    let value = if same_device(op, &[x, gy])?.is_cuda() {
        Tensor::from_cuda(
            weight_dims,
            cuda::weight_grad(x.cuda(op)?, gy.cuda(op)?, &g)?,
        )?
    } else {
        Tensor::from_vec(
            weight_dims,
            cpu::weight_grad(x.as_slice(), gy.as_slice(), &g),
        )?
    };
    let (h_in, w_in) = (g.h_in, g.w_in);
    Ok(Var::from_op(
        op,
        value,
        &[input, grad_output],
        move |args| {
            let (x, gy, g) = (&args.inputs[0], &args.inputs[1], args.grad_output);
            let grad_input = if args.needs[0] {
                Some(conv2d_input_grad(gy, g, padding, (h_in, w_in))?)
            } else {
                None
            };
            let grad_gy = if args.needs[1] {
                Some(x.conv2d(g, None, padding)?)
            } else {
                None
            };
            Ok(vec![grad_input, grad_gy])
        },
    ))
}
