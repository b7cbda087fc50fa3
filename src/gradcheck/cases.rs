//! The catalogue of gradient checks: one entry per op and order.
//!
//! Each case builds random inputs and the loss `sum(op(inputs) * r)` with a random `r`, so the
//! upstream gradient is not uniform. Losses move their constants to the device of their inputs,
//! so every case also runs on a GPU. Second-order cases wrap that loss with
//! [`super::second_order`].

use super::{second_order, CheckSetup, LossFn, SeededNormal};
use crate::autograd::{grad, Var};
use crate::error::{Error, Result};
use crate::ops::shape::Margins;
use crate::tensor::Tensor;

/// Sizes a case is built at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaseDims {
    pub n: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: usize,
    pub padding: usize,
    pub seed: u64,
}

impl Default for CaseDims {
    fn default() -> Self {
        CaseDims {
            n: 2,
            c_in: 3,
            c_out: 4,
            h: 7,
            w: 6,
            kernel: 3,
            padding: 1,
            seed: 1,
        }
    }
}

impl CaseDims {
    fn input(&self) -> [usize; 4] {
        [self.n, self.c_in, self.h, self.w]
    }

    fn conv_out(&self) -> [usize; 4] {
        [
            self.n,
            self.c_out,
            self.h + 2 * self.padding + 1 - self.kernel,
            self.w + 2 * self.padding + 1 - self.kernel,
        ]
    }

    fn weight(&self) -> [usize; 4] {
        [self.c_out, self.c_in, self.kernel, self.kernel]
    }
}

/// Builds a case's inputs and loss at the given sizes from a seeded source.
type CaseBuilder = fn(&CaseDims, &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn);

/// Second-order cases whose builders differentiate twice themselves.
const SECOND_ORDER_BUILDERS: [&str; 2] = ["gradient_penalty", "batch_norm_input_grad"];

/// One gradient check: an op, the order of differentiation and how to build it.
pub struct GradCase {
    pub name: &'static str,
    pub order: u8,
    build: CaseBuilder,
}

impl GradCase {
    /// Builds the inputs and loss at `dims`; a second-order case wraps the loss.
    pub fn setup(&self, dims: &CaseDims) -> CheckSetup {
        let mut rng = SeededNormal::new(dims.seed);
        let (inputs, loss) = (self.build)(dims, &mut rng);
        let loss = if self.order == 2 && !SECOND_ORDER_BUILDERS.contains(&self.name) {
            let directions = inputs.iter().map(|t| rng.tensor(t.dims())).collect();
            second_order(loss, directions)
        } else {
            loss
        };
        CheckSetup { inputs, loss }
    }

    /// Describes the input shapes at `dims` in one line.
    pub fn shape_label(&self, dims: &CaseDims) -> String {
        let setup = self.setup(dims);
        let mut shapes: Vec<String> = setup
            .inputs
            .iter()
            .take(3)
            .map(|t| format!("{:?}", t.dims()))
            .collect();
        if setup.inputs.len() > 3 {
            shapes.push(format!("+{} more", setup.inputs.len() - 3));
        }
        shapes.join(" ")
    }
}

/// Returns `sum(out * r)` for a fixed random `r` of the output's shape, moving `r` to the
/// output's device.
fn weighted(out: Var<f64>, r: &Tensor<f64>) -> Result<Var<f64>> {
    let r = r.to_device(&out.value().device())?;
    out.mul(&Var::constant(r))?.sum()
}

/// Builds a loss that applies `op` and weights its output by a random tensor of `out_dims`.
fn weighted_loss(
    rng: &mut SeededNormal,
    out_dims: &[usize],
    op: impl Fn(&[Var<f64>]) -> Result<Var<f64>> + 'static,
) -> LossFn {
    let r = rng.tensor(out_dims);
    Box::new(move |x: &[Var<f64>]| weighted(op(x)?, &r))
}

fn conv2d(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let inputs = vec![
        rng.tensor(&d.input()),
        rng.tensor(&d.weight()),
        rng.tensor(&[d.c_out]),
    ];
    let padding = d.padding;
    let loss = weighted_loss(rng, &d.conv_out(), move |x| {
        x[0].conv2d(&x[1], Some(&x[2]), padding)
    });
    (inputs, loss)
}

fn conv2d_input_grad(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let inputs = vec![rng.tensor(&d.conv_out()), rng.tensor(&d.weight())];
    let (padding, hw) = (d.padding, (d.h, d.w));
    let loss = weighted_loss(rng, &d.input(), move |x| {
        crate::ops::conv2d::conv2d_input_grad(&x[0], &x[1], padding, hw)
    });
    (inputs, loss)
}

fn conv2d_weight_grad(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let inputs = vec![rng.tensor(&d.input()), rng.tensor(&d.conv_out())];
    let (padding, k) = (d.padding, d.kernel);
    let loss = weighted_loss(rng, &d.weight(), move |x| {
        crate::ops::conv2d::conv2d_weight_grad(&x[0], &x[1], padding, (k, k))
    });
    (inputs, loss)
}

fn batch_norm_train(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let mut gamma = rng.tensor(&[d.c_in]);
    for v in gamma.data_mut() {
        *v += 1.0;
    }
    let inputs = vec![rng.tensor(&d.input()), gamma, rng.tensor(&[d.c_in])];
    let loss = weighted_loss(rng, &d.input(), |x| {
        Ok(x[0].batch_norm_train(&x[1], &x[2], 1e-5)?.0)
    });
    (inputs, loss)
}

/// Builds `sum(v * dL/dx)` for `L = sum((q * batch_norm_train(x))^2) / 2`, differentiated with
/// respect to the input only, as a gradient penalty does. The gradient that reaches the batch
/// norm's output, `q^2 y`, depends on every input, so all three derivatives of the recorded input
/// gradient are exercised.
fn batch_norm_input_grad(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let mut gamma = rng.tensor(&[d.c_in]);
    for v in gamma.data_mut() {
        *v += 1.0;
    }
    let inputs = vec![rng.tensor(&d.input()), gamma, rng.tensor(&[d.c_in])];
    let (q, v) = (rng.tensor(&d.input()), rng.tensor(&d.input()));
    let loss: LossFn = Box::new(move |x: &[Var<f64>]| {
        let device = x[0].value().device();
        let (q, v) = (
            Var::constant(q.to_device(&device)?),
            Var::constant(v.to_device(&device)?),
        );
        let y = x[0].batch_norm_train(&x[1], &x[2], 1e-5)?.0;
        let inner = y.mul(&q)?.square()?.sum()?.mul_scalar(0.5)?;
        let input_grad = grad(&[inner], &x[..1], None, true)?
            .remove(0)
            .ok_or_else(|| Error::invalid("gradcheck", "batch norm ignores its input"))?;
        input_grad.mul(&v)?.sum()
    });
    (inputs, loss)
}

/// Wraps [`batch_norm_input_grad`] once more: a third derivative through the recorded input
/// gradient. Its numeric side runs the taped closed form as well, so this checks the taped
/// form's derivative, not its values. A separate test compares those values with the
/// closed-form kernel.
fn batch_norm_input_grad_third(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let (inputs, loss) = batch_norm_input_grad(d, rng);
    let directions = inputs.iter().map(|t| rng.tensor(t.dims())).collect();
    (inputs, second_order(loss, directions))
}

fn batch_norm_eval(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let inputs = vec![
        rng.tensor(&d.input()),
        rng.tensor(&[d.c_in]),
        rng.tensor(&[d.c_in]),
    ];
    let mean = rng.tensor(&[d.c_in]);
    let var = Tensor::from_vec([d.c_in], (0..d.c_in).map(|_| 0.5 + rng.uniform()).collect())
        .expect("one variance per channel");
    let loss = weighted_loss(rng, &d.input(), move |x| {
        let device = x[0].value().device();
        let (mean, var) = (mean.to_device(&device)?, var.to_device(&device)?);
        x[0].batch_norm_eval(&x[1], &x[2], &mean, &var, 1e-5)
    });
    (inputs, loss)
}

fn unary(
    d: &CaseDims,
    rng: &mut SeededNormal,
    input: Tensor<f64>,
    op: impl Fn(&Var<f64>) -> Result<Var<f64>> + 'static,
) -> (Vec<Tensor<f64>>, LossFn) {
    let loss = weighted_loss(rng, &d.input(), move |x| op(&x[0]));
    (vec![input], loss)
}

fn positive(rng: &mut SeededNormal, dims: &[usize]) -> Tensor<f64> {
    let mut t = rng.tensor(dims);
    for v in t.data_mut() {
        *v = 0.5 + v.abs();
    }
    t
}

fn leaky_relu(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor_away_from_zero(&d.input(), 1e-3);
    unary(d, rng, x, |x| x.leaky_relu(0.2))
}

/// Builds the leaky ReLU squared, so the second derivative exercises the mask-multiply's own
/// backward.
fn leaky_relu_squared(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor_away_from_zero(&d.input(), 1e-3);
    unary(d, rng, x, |x| x.leaky_relu(0.2)?.square())
}

fn tanh(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&d.input());
    unary(d, rng, x, |x| x.tanh())
}

fn sigmoid(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&d.input());
    unary(d, rng, x, |x| x.sigmoid())
}

fn softplus(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&d.input());
    unary(d, rng, x, |x| x.softplus())
}

fn square(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&d.input());
    unary(d, rng, x, |x| x.square())
}

fn sqrt(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = positive(rng, &d.input());
    unary(d, rng, x, |x| x.sqrt())
}

fn reciprocal_or_zero(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = positive(rng, &d.input());
    unary(d, rng, x, |x| x.reciprocal_or_zero())
}

fn scalar_ops(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&d.input());
    unary(d, rng, x, |x| x.mul_scalar(-1.5)?.add_scalar(0.25))
}

/// Builds a binary op whose second operand is broadcast over the channel axis `(1, C, 1, 1)`.
fn binary(
    d: &CaseDims,
    rng: &mut SeededNormal,
    op: fn(&Var<f64>, &Var<f64>) -> Result<Var<f64>>,
    positive_divisor: bool,
) -> (Vec<Tensor<f64>>, LossFn) {
    let a = rng.tensor(&d.input());
    let b = if positive_divisor {
        positive(rng, &[1, d.c_in, 1, 1])
    } else {
        rng.tensor(&[1, d.c_in, 1, 1])
    };
    let loss = weighted_loss(rng, &d.input(), move |x| op(&x[0], &x[1]));
    (vec![a, b], loss)
}

fn add(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    binary(d, rng, |a, b| a.add(b), false)
}

fn sub(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    binary(d, rng, |a, b| b.sub(a), false)
}

fn mul(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    binary(d, rng, |a, b| a.mul(b), false)
}

fn div(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    binary(d, rng, |a, b| a.div(b), true)
}

fn pad(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&d.input());
    let margins = Margins {
        top: 1,
        bottom: 2,
        left: 0,
        right: 3,
    };
    let out = [d.n, d.c_in, d.h + 3, d.w + 3];
    let loss = weighted_loss(rng, &out, move |x| x[0].pad(margins));
    (vec![x], loss)
}

fn crop(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&d.input());
    let (h, w) = (d.h.div_ceil(2), d.w.div_ceil(2));
    let (top, left) = (d.h - h, (d.w - w) / 2);
    let loss = weighted_loss(rng, &[d.n, d.c_in, h, w], move |x| {
        x[0].crop(top, left, h, w)
    });
    (vec![x], loss)
}

fn sum(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&d.input());
    let loss = weighted_loss(rng, &[1], |x| x[0].sum());
    (vec![x], loss)
}

fn sum_axes(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&d.input());
    let loss = weighted_loss(rng, &[1, d.c_in, 1, d.w], |x| x[0].sum_axes(&[0, 2]));
    (vec![x], loss)
}

fn mean(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&d.input());
    let loss = weighted_loss(rng, &[1], |x| {
        let m = x[0].mean()?;
        m.mul(&x[0].mean_axes(&[0, 2, 3])?.sum()?)
    });
    (vec![x], loss)
}

fn mean_axes(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&d.input());
    let loss = weighted_loss(rng, &[1, d.c_in, 1, 1], |x| {
        x[0].mean_axes(&[0, 2, 3])?.square()
    });
    (vec![x], loss)
}

fn broadcast_to(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&[d.c_in, 1, d.w]);
    let out = d.input();
    let loss = weighted_loss(rng, &out, move |x| x[0].broadcast_to(&out));
    (vec![x], loss)
}

fn channel_norm(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&d.input());
    let loss = weighted_loss(rng, &[d.n, 1, d.h, d.w], |x| x[0].channel_norm());
    (vec![x], loss)
}

fn reshape(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let x = rng.tensor(&d.input());
    let out = [d.n * d.c_in, d.h * d.w];
    let loss = weighted_loss(rng, &out, move |x| x[0].reshape(&out));
    (vec![x], loss)
}

fn mse(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let inputs = vec![rng.tensor(&d.input()), rng.tensor(&d.input())];
    let loss: LossFn = Box::new(|x: &[Var<f64>]| x[0].mse(&x[1]));
    (inputs, loss)
}

fn bce_with_logits(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let inputs = vec![rng.tensor(&d.input()), rng.tensor(&d.input())];
    let loss: LossFn = Box::new(|x: &[Var<f64>]| {
        x[0].bce_with_logits(true)?
            .add(&x[1].bce_with_logits(false)?)
    });
    (inputs, loss)
}

/// Builds the WGAN-GP penalty of a small patch critic in training-mode batch norm, differentiated with
/// respect to the critic's parameters and its input: `mean((||dD/dx||_channels - 1)^2)`.
fn gradient_penalty(d: &CaseDims, rng: &mut SeededNormal) -> (Vec<Tensor<f64>>, LossFn) {
    let channels = d.c_out;
    let blocks = 4;
    let side = 2 * (blocks + 1) + 3 + d.h % 3;
    let mut inputs = vec![rng.tensor(&[1, 3, side, side])];
    let mut c_in = 3;
    for _ in 0..blocks {
        let mut weight = rng.tensor(&[channels, c_in, 3, 3]);
        for v in weight.data_mut() {
            *v *= 0.5;
        }
        let mut gamma = rng.tensor(&[channels]);
        for v in gamma.data_mut() {
            *v = 1.0 + 0.1 * *v;
        }
        inputs.push(weight);
        inputs.push(rng.tensor(&[channels]));
        inputs.push(gamma);
        inputs.push(rng.tensor(&[channels]));
        c_in = channels;
    }
    inputs.push(rng.tensor(&[1, channels, 3, 3]));
    inputs.push(rng.tensor(&[1]));

    let loss: LossFn = Box::new(move |x: &[Var<f64>]| {
        let critic = |input: &Var<f64>| -> Result<Var<f64>> {
            let mut h = input.clone();
            for block in 0..blocks {
                let p = &x[1 + 4 * block..5 + 4 * block];
                h = h.conv2d(&p[0], Some(&p[1]), 0)?;
                h = h.batch_norm_train(&p[2], &p[3], 1e-5)?.0.leaky_relu(0.2)?;
            }
            h.conv2d(&x[1 + 4 * blocks], Some(&x[2 + 4 * blocks]), 0)
        };
        let score = critic(&x[0])?.sum()?;
        let input_grad = grad(&[score], &x[..1], None, true)?
            .remove(0)
            .expect("critic depends on its input");
        input_grad
            .channel_norm()?
            .add_scalar(-1.0)?
            .square()?
            .mean()
    });
    (inputs, loss)
}

/// Lists every check: first order for every op, second order for the ops a gradient penalty
/// differentiates twice, and third order for the recorded batch-norm input gradient, whose own
/// backward is a closed form.
pub fn all_cases() -> Vec<GradCase> {
    let first: [(&'static str, CaseBuilder); 28] = [
        ("conv2d", conv2d),
        ("conv2d_input_grad", conv2d_input_grad),
        ("conv2d_weight_grad", conv2d_weight_grad),
        ("batch_norm_train", batch_norm_train),
        ("batch_norm_eval", batch_norm_eval),
        ("leaky_relu", leaky_relu),
        ("tanh", tanh),
        ("sigmoid", sigmoid),
        ("softplus", softplus),
        ("add", add),
        ("sub", sub),
        ("mul", mul),
        ("div", div),
        ("scalar_ops", scalar_ops),
        ("square", square),
        ("sqrt", sqrt),
        ("reciprocal_or_zero", reciprocal_or_zero),
        ("pad", pad),
        ("crop", crop),
        ("reshape", reshape),
        ("broadcast_to", broadcast_to),
        ("sum", sum),
        ("sum_axes", sum_axes),
        ("mean", mean),
        ("mean_axes", mean_axes),
        ("channel_norm", channel_norm),
        ("mse", mse),
        ("bce_with_logits", bce_with_logits),
    ];
    let second: [(&'static str, CaseBuilder); 11] = [
        ("conv2d", conv2d),
        ("conv2d_input_grad", conv2d_input_grad),
        ("conv2d_weight_grad", conv2d_weight_grad),
        ("batch_norm_train", batch_norm_train),
        ("leaky_relu", leaky_relu_squared),
        ("tanh", tanh),
        ("channel_norm", channel_norm),
        ("square", square),
        ("mean", mean),
        ("batch_norm_input_grad", batch_norm_input_grad),
        ("gradient_penalty", gradient_penalty),
    ];
    let mut cases: Vec<GradCase> = first
        .into_iter()
        .map(|(name, build)| GradCase {
            name,
            order: 1,
            build,
        })
        .collect();
    cases.extend(second.into_iter().map(|(name, build)| GradCase {
        name,
        order: 2,
        build,
    }));
    cases.push(GradCase {
        name: "batch_norm_input_grad",
        order: 3,
        build: batch_norm_input_grad_third,
    });
    cases
}
