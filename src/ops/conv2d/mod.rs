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
        let planned = Planned::forward(self, weight, None, padding)?;
        if let Some(bias) = bias {
            bias.value()
                .expect_dims("conv2d", "bias", &[planned.g.c_out])?;
        }
        if planned.on_cpu()? {
            if let Some(bias) = bias {
                same_device("conv2d", &[self.value(), bias.value()])?;
            }
            return Planned { bias, ..planned }.run();
        }
        let c_out = planned.g.c_out;
        let out = planned.run()?;
        match bias {
            None => Ok(out),
            Some(bias) => out.add(&bias.reshape(&[1, c_out, 1, 1])?),
        }
    }
}

/// Computes the gradient of `conv2d(x, weight, padding)` with respect to `x`, where `x` is
/// `input_hw` in size: a transposed convolution of `grad_output` `(N, C_out, H_out, W_out)`.
pub fn conv2d_input_grad<T: Element>(
    grad_output: &Var<T>,
    weight: &Var<T>,
    padding: usize,
    input_hw: (usize, usize),
) -> Result<Var<T>> {
    Planned::input_grad(grad_output, weight, padding, input_hw)?.run()
}

/// Computes the gradient of `conv2d(input, w, padding)` with respect to a `kernel_hw` weight `w`,
/// given `grad_output` `(N, C_out, H_out, W_out)`; the result is `(C_out, C_in, K_h, K_w)`.
pub fn conv2d_weight_grad<T: Element>(
    input: &Var<T>,
    grad_output: &Var<T>,
    padding: usize,
    kernel_hw: (usize, usize),
) -> Result<Var<T>> {
    Planned::weight_grad(input, grad_output, padding, kernel_hw)?.run()
}

/// The three convolution ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `conv(a, b) + bias`: `a` the input, `b` the weight.
    Forward,
    /// `input_grad(a, b)`: `a` the output gradient, `b` the weight.
    InputGrad,
    /// `weight_grad(a, b)`: `a` the input, `b` the output gradient.
    WeightGrad,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Forward => "conv2d",
            Kind::InputGrad => "conv2d_input_grad",
            Kind::WeightGrad => "conv2d_weight_grad",
        }
    }
}

/// A convolution op whose operands have been checked, not yet computed or taped. `g` always
/// describes the forward convolution the op belongs to.
struct Planned<'a, T: Element> {
    kind: Kind,
    a: &'a Var<T>,
    b: &'a Var<T>,
    /// Only for [`Kind::Forward`] on the CPU, where the kernels add it.
    bias: Option<&'a Var<T>>,
    padding: usize,
    g: ConvGeometry,
}

impl<'a, T: Element> Planned<'a, T> {
    fn forward(
        input: &'a Var<T>,
        weight: &'a Var<T>,
        bias: Option<&'a Var<T>>,
        padding: usize,
    ) -> Result<Self> {
        let g = geometry("conv2d", input.dims(), weight.dims(), padding)?;
        Ok(Planned {
            kind: Kind::Forward,
            a: input,
            b: weight,
            bias,
            padding,
            g,
        })
    }

    fn input_grad(
        grad_output: &'a Var<T>,
        weight: &'a Var<T>,
        padding: usize,
        input_hw: (usize, usize),
    ) -> Result<Self> {
        let op = Kind::InputGrad.name();
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
        Ok(Planned {
            kind: Kind::InputGrad,
            a: grad_output,
            b: weight,
            bias: None,
            padding,
            g,
        })
    }

    fn weight_grad(
        input: &'a Var<T>,
        grad_output: &'a Var<T>,
        padding: usize,
        kernel_hw: (usize, usize),
    ) -> Result<Self> {
        let op = Kind::WeightGrad.name();
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
        Ok(Planned {
            kind: Kind::WeightGrad,
            a: input,
            b: grad_output,
            bias: None,
            padding,
            g,
        })
    }

    fn out_dims(&self) -> [usize; 4] {
        let g = &self.g;
        match self.kind {
            Kind::Forward => [g.n, g.c_out, g.h_out(), g.w_out()],
            Kind::InputGrad => [g.n, g.c_in, g.h_in, g.w_in],
            Kind::WeightGrad => [g.c_out, g.c_in, g.k_h, g.k_w],
        }
    }

    /// Reports whether the operands are on the CPU, after checking that they share a device.
    fn on_cpu(&self) -> Result<bool> {
        let op = self.kind.name();
        Ok(!same_device(op, &[self.a.value(), self.b.value()])?.is_cuda())
    }

    /// Computes the op's values on the operands' device.
    fn compute(&self) -> Result<Tensor<T>> {
        let (op, dims) = (self.kind.name(), self.out_dims());
        let (a, b) = (self.a.value(), self.b.value());
        if self.on_cpu()? {
            let bias = self.bias.map(|bias| bias.value().as_slice());
            let values = cpu_values(self.kind, a.as_slice(), b.as_slice(), bias, &self.g);
            return Tensor::from_vec(dims, values);
        }
        debug_assert!(
            self.bias.is_none(),
            "the CUDA path adds the bias as its own op"
        );
        let (a, b, g) = (a.cuda(op)?, b.cuda(op)?, &self.g);
        let values = match self.kind {
            Kind::Forward => cuda::forward(a, b, g)?,
            Kind::InputGrad => cuda::input_grad(a, b, g)?,
            Kind::WeightGrad => cuda::weight_grad(a, b, g)?,
        };
        Tensor::from_cuda(dims, values)
    }

    /// Computes the op and records it on the tape.
    fn run(self) -> Result<Var<T>> {
        let value = self.compute()?;
        Ok(self.record(value))
    }

    /// Records the op with its computed `value` and the backward pass of its kind.
    fn record(self, value: Tensor<T>) -> Var<T> {
        let Planned {
            kind, padding, g, ..
        } = self;
        let mut inputs = vec![self.a, self.b];
        inputs.extend(self.bias);
        Var::from_op(kind.name(), value, &inputs, move |args| {
            let (a, b, upstream) = (&args.inputs[0], &args.inputs[1], args.grad_output);
            let (input_hw, kernel_hw) = ((g.h_in, g.w_in), (g.k_h, g.k_w));
            let (first, second) = match kind {
                // dx = input_grad(g, w), dw = weight_grad(x, g).
                Kind::Forward => (
                    when(args.needs[0], || {
                        Planned::input_grad(upstream, b, padding, input_hw)
                    })?,
                    when(args.needs[1], || {
                        Planned::weight_grad(a, upstream, padding, kernel_hw)
                    })?,
                ),
                // d gy = conv(g, w), dw = weight_grad(g, gy).
                Kind::InputGrad => (
                    when(args.needs[0], || {
                        Planned::forward(upstream, b, None, padding)
                    })?,
                    when(args.needs[1], || {
                        Planned::weight_grad(upstream, a, padding, kernel_hw)
                    })?,
                ),
                // dx = input_grad(gy, g), d gy = conv(x, g).
                Kind::WeightGrad => (
                    when(args.needs[0], || {
                        Planned::input_grad(b, upstream, padding, input_hw)
                    })?,
                    when(args.needs[1], || {
                        Planned::forward(a, upstream, None, padding)
                    })?,
                ),
            };
            let (first, second) = run_pair(first, second)?;
            let mut grads = vec![first, second];
            if args.inputs.len() == 3 {
                // The same ops as the backward of a broadcast add of the bias reshaped to
                // (1, C_out, 1, 1), so the values match that composition.
                let c_out = g.c_out;
                grads.push(if args.needs[2] {
                    Some(upstream.sum_to(&[1, c_out, 1, 1])?.reshape(&[c_out])?)
                } else {
                    None
                });
            }
            Ok(grads)
        })
    }
}

/// Plans a gradient op when its input needs one.
fn when<P>(need: bool, plan: impl FnOnce() -> Result<P>) -> Result<Option<P>> {
    if need {
        plan().map(Some)
    } else {
        Ok(None)
    }
}

/// Computes one op's values on the CPU.
fn cpu_values<T: Element>(
    kind: Kind,
    a: &[T],
    b: &[T],
    bias: Option<&[T]>,
    g: &ConvGeometry,
) -> Vec<T> {
    match kind {
        Kind::Forward => cpu::forward_with_bias(a, b, bias, g),
        Kind::InputGrad => cpu::input_grad(a, b, g),
        Kind::WeightGrad => cpu::weight_grad(a, b, g),
    }
}

/// The two gradients of a backward pass, `None` where an input needs none.
type GradientPair<T> = (Option<Var<T>>, Option<Var<T>>);

/// Runs two independent ops of one backward pass. On the CPU both run at once, so the two
/// threads' work is balanced over both ops instead of over each op in turn: a small
/// convolution splits into too few tasks to keep every thread busy to its end. Each op's
/// values do not depend on how its tasks are scheduled, so they are the same either way.
fn run_pair<T: Element>(
    first: Option<Planned<'_, T>>,
    second: Option<Planned<'_, T>>,
) -> Result<GradientPair<T>> {
    match (first, second) {
        (Some(first), Some(second)) if first.on_cpu()? && second.on_cpu()? => {
            // The rayon tasks take slices and shapes, since the taped values are not `Send`.
            let (first_a, first_b) = (first.a.value().as_slice(), first.b.value().as_slice());
            let (second_a, second_b) = (second.a.value().as_slice(), second.b.value().as_slice());
            let (first_kind, first_g) = (first.kind, first.g);
            let (second_kind, second_g) = (second.kind, second.g);
            let (first_values, second_values) = rayon::join(
                || cpu_values(first_kind, first_a, first_b, None, &first_g),
                || cpu_values(second_kind, second_a, second_b, None, &second_g),
            );
            let first_value = Tensor::from_vec(first.out_dims(), first_values)?;
            let second_value = Tensor::from_vec(second.out_dims(), second_values)?;
            Ok((
                Some(first.record(first_value)),
                Some(second.record(second_value)),
            ))
        }
        (first, second) => Ok((
            first.map(Planned::run).transpose()?,
            second.map(Planned::run).transpose()?,
        )),
    }
}
