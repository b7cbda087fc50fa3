//! Every op on a CUDA GPU against the CPU backend: forward values, first gradients (which run
//! the fused batch norm backward) and gradients of taped gradients, in f32 and f64.
//!
//! Shapes are odd and not multiples of the kernels' block or tile sizes, and one case is larger
//! than the grid-stride launches' grid cap. The f64 GPU results must match the f64 CPU results
//! to 1e-9. The f32 GPU results are compared with the f64 CPU results and may be off by
//! 1e-4 or by four times the f32 CPU error, whichever is larger. The second bound exists
//! because f32 summation order alone can move the larger cases by more than a fixed bound.
//! Errors are measured against `max(1, max |reference|)`.
//!
//! The random draws and the bicubic resize must match the CPU bit for bit, because both
//! devices compute them with the same operations in the same order.
//!
//! Without a usable GPU every test prints `skipped: no CUDA device` and passes.

use singan::autograd::{grad, Var};
use singan::cuda::CudaDevice;
use singan::gradcheck::SeededNormal;
use singan::nn::{ConvBlock, Module, Param};
use singan::ops::conv2d::{conv2d_input_grad, conv2d_weight_grad};
use singan::ops::random::draw;
use singan::ops::resize::resize_cropped;
use singan::ops::shape::Margins;
use singan::optim::{Adam, AdamConfig};
use singan::rng::{DrawKind, Rng};
use singan::singan::cascade::draw_noise;
use singan::singan::imresize::{Resize, ResizePlan};
use singan::{Device, Element, Error, Result, Tensor};

mod common;
use common::{distance, gpu};

const F64_TOLERANCE: f64 = 1e-9;
const F32_TOLERANCE: f64 = 1e-4;
/// How many times the f32 CPU error the f32 GPU error may be.
const F32_ERROR_RATIO: f64 = 4.0;

/// One op under test: its inputs (drawn in f64) and the op, instantiated for both precisions.
struct Case {
    name: &'static str,
    inputs: fn(&mut SeededNormal) -> Vec<Tensor<f64>>,
    op_f32: fn(&[Var<f32>]) -> Result<Var<f32>>,
    op_f64: fn(&[Var<f64>]) -> Result<Var<f64>>,
    /// Whether to differentiate the taped first gradients once more.
    second_order: bool,
}

/// Named results of one case at one precision on one device, in host memory.
type Results = Vec<(String, Vec<usize>, Vec<f64>)>;

fn record<T: Element>(results: &mut Results, name: String, tensor: &Tensor<T>) {
    let values = tensor
        .to_cpu()
        .unwrap_or_else(|error| panic!("{name}: copying to the host failed: {error}"))
        .to_f64_vec();
    results.push((name, tensor.dims().to_vec(), values));
}

/// Returns a constant with standard normal entries of `dims`, the same for every precision and
/// device.
fn random_constant<T: Element>(seed: u64, dims: &[usize], device: &Device) -> Var<T> {
    let values = SeededNormal::new(seed).tensor(dims).cast::<T>();
    Var::constant(values.to_device(device).unwrap())
}

/// Returns `sum_i sum(a_i * b_i)`.
fn dot<T: Element>(pairs: impl Iterator<Item = (Var<T>, Var<T>)>) -> Var<T> {
    let mut total: Option<Var<T>> = None;
    for (a, b) in pairs {
        let term = a.mul(&b).unwrap().sum().unwrap();
        total = Some(match total {
            None => term,
            Some(previous) => previous.add(&term).unwrap(),
        });
    }
    total.expect("at least one term")
}

/// Runs `op` on `inputs` (converted to `T` and moved to `device`) and records its value, the
/// gradients of `sum(op * r)` and, with `second_order`, the taped gradients and the gradients
/// of `sum_i <grad_i, v_i>`.
fn evaluate<T: Element>(
    op: fn(&[Var<T>]) -> Result<Var<T>>,
    inputs: &[Tensor<f64>],
    second_order: bool,
    device: &Device,
) -> Results {
    let leaves: Vec<Var<T>> = inputs
        .iter()
        .map(|t| Var::param(t.cast::<T>().to_device(device).unwrap()))
        .collect();
    let mut results = Vec::new();
    let out = op(&leaves).unwrap_or_else(|error| panic!("forward on {device} failed: {error}"));
    assert_eq!(out.value().device(), *device, "output device");
    record(&mut results, "value".to_string(), out.value());

    let r = random_constant::<T>(7, out.dims(), device);
    let loss = out.mul(&r).unwrap().sum().unwrap();
    let grads = grad(std::slice::from_ref(&loss), &leaves, None, false)
        .unwrap_or_else(|error| panic!("first backward on {device} failed: {error}"));
    for (index, g) in grads.iter().enumerate() {
        if let Some(g) = g {
            assert_eq!(g.value().device(), *device, "gradient {index} device");
            record(&mut results, format!("grad[{index}]"), g.value());
        }
    }
    if !second_order {
        return results;
    }

    let loss = op(&leaves).unwrap().mul(&r).unwrap().sum().unwrap();
    let taped = grad(std::slice::from_ref(&loss), &leaves, None, true)
        .unwrap_or_else(|error| panic!("taped backward on {device} failed: {error}"));
    let mut pairs = Vec::new();
    for (index, g) in taped.iter().enumerate() {
        if let Some(g) = g {
            record(&mut results, format!("taped grad[{index}]"), g.value());
            let v = random_constant::<T>(11 + index as u64, g.dims(), device);
            pairs.push((g.clone(), v));
        }
    }
    let directional = dot(pairs.into_iter());
    let second = grad(&[directional], &leaves, None, false)
        .unwrap_or_else(|error| panic!("second backward on {device} failed: {error}"));
    for (index, g) in second.iter().enumerate() {
        if let Some(g) = g {
            record(&mut results, format!("second grad[{index}]"), g.value());
        }
    }
    results
}

fn assert_same_layout(case: &str, run: &str, ours: &Results, reference: &Results) {
    let names = |r: &Results| -> Vec<(String, Vec<usize>)> {
        r.iter().map(|(n, d, _)| (n.clone(), d.clone())).collect()
    };
    assert_eq!(
        names(ours),
        names(reference),
        "{case}: the {run} results have other tensors or shapes than the CPU"
    );
}

fn run_case(case: &Case) {
    let Some(device) = gpu() else { return };
    let inputs = (case.inputs)(&mut SeededNormal::new(3));

    let cpu64 = evaluate(case.op_f64, &inputs, case.second_order, &Device::Cpu);
    let gpu64 = evaluate(case.op_f64, &inputs, case.second_order, &device);
    assert_same_layout(case.name, "f64 GPU", &gpu64, &cpu64);
    for ((name, _, ours), (_, _, reference)) in gpu64.iter().zip(&cpu64) {
        let error = distance(ours, reference);
        assert!(
            error <= F64_TOLERANCE,
            "{}: f64 {name} differs from the CPU by {error:.3e} (tolerance {F64_TOLERANCE:.0e})",
            case.name
        );
    }

    let cpu32 = evaluate(case.op_f32, &inputs, case.second_order, &Device::Cpu);
    let gpu32 = evaluate(case.op_f32, &inputs, case.second_order, &device);
    assert_same_layout(case.name, "f32 GPU", &gpu32, &cpu64);
    assert_same_layout(case.name, "f32 CPU", &cpu32, &cpu64);
    for (((name, _, ours), (_, _, cpu_f32)), (_, _, reference)) in
        gpu32.iter().zip(&cpu32).zip(&cpu64)
    {
        let cpu_error = distance(cpu_f32, reference);
        let tolerance = F32_TOLERANCE.max(F32_ERROR_RATIO * cpu_error);
        let error = distance(ours, reference);
        assert!(
            error <= tolerance,
            "{}: f32 {name} differs from the f64 CPU result by {error:.3e}, while the f32 CPU \
             result differs by {cpu_error:.3e} (tolerance {tolerance:.3e})",
            case.name
        );
    }
}

/// Standard normal entries shifted away from zero, for ops with a kink there.
fn away_from_zero(rng: &mut SeededNormal, dims: &[usize]) -> Tensor<f64> {
    rng.tensor_away_from_zero(dims, 1e-2)
}

/// Entries in [0.5, inf), for square roots and divisors.
fn positive(rng: &mut SeededNormal, dims: &[usize]) -> Tensor<f64> {
    let values: Vec<f64> = rng
        .tensor(dims)
        .to_vec()
        .iter()
        .map(|v| 0.5 + v.abs())
        .collect();
    Tensor::from_vec(dims, values).unwrap()
}

/// Batch norm weights near 1.
fn gamma(rng: &mut SeededNormal, channels: usize) -> Tensor<f64> {
    let values: Vec<f64> = rng
        .tensor(&[channels])
        .to_vec()
        .iter()
        .map(|v| 1.0 + 0.1 * v)
        .collect();
    Tensor::from_vec([channels], values).unwrap()
}

/// An NCHW input whose element count (2145) and pixel count per image (143) are not multiples
/// of any block or tile size.
const X: [usize; 4] = [3, 5, 13, 11];

fn conv2d_bias<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].conv2d(&x[1], Some(&x[2]), 1)
}

fn conv2d_bias_inputs(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    // 37 output channels span two 32-row tiles.
    vec![
        rng.tensor(&X),
        rng.tensor(&[37, 5, 3, 3]),
        rng.tensor(&[37]),
    ]
}

fn conv2d_unpadded<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].conv2d(&x[1], None, 0)
}

fn conv2d_unpadded_inputs(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    // A non-square kernel, and a pixel count (2 * 11 * 10) that leaves a partial 64-wide tile.
    vec![rng.tensor(&[2, 3, 13, 11]), rng.tensor(&[4, 3, 3, 2])]
}

fn conv2d_wide_padding<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].conv2d(&x[1], Some(&x[2]), 2)
}

fn conv2d_wide_padding_inputs(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    vec![
        rng.tensor(&[1, 1, 5, 4]),
        rng.tensor(&[3, 1, 3, 3]),
        rng.tensor(&[3]),
    ]
}

fn conv2d_large<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].conv2d(&x[1], Some(&x[2]), 0)
}

fn conv2d_large_inputs(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    // 1 * 61 * 83 = 5063 output pixels, so the weight gradient runs 10 split-K splits.
    vec![
        rng.tensor(&[1, 33, 63, 85]),
        rng.tensor(&[35, 33, 3, 3]),
        rng.tensor(&[35]),
    ]
}

fn input_grad<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    conv2d_input_grad(&x[0], &x[1], 1, (13, 11))
}

fn input_grad_inputs(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    vec![rng.tensor(&[3, 6, 13, 11]), rng.tensor(&[6, 5, 3, 3])]
}

fn weight_grad<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    conv2d_weight_grad(&x[0], &x[1], 1, (3, 3))
}

fn weight_grad_inputs(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    vec![rng.tensor(&X), rng.tensor(&[3, 6, 13, 11])]
}

fn batch_norm_train<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    Ok(x[0].batch_norm_train(&x[1], &x[2], 1e-5)?.0)
}

fn batch_norm_inputs(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    vec![rng.tensor(&X), gamma(rng, 5), rng.tensor(&[5])]
}

fn batch_norm_eval<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    let device = x[0].value().device();
    let mean = Tensor::from_f64_slice([5], &[0.1, -0.2, 0.3, 0.0, 1.5])?.to_device(&device)?;
    let var = Tensor::from_f64_slice([5], &[0.5, 1.0, 2.0, 0.25, 3.0])?.to_device(&device)?;
    x[0].batch_norm_eval(&x[1], &x[2], &mean, &var, 1e-5)
}

fn leaky_relu<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].leaky_relu(0.2)
}

fn leaky_relu_squared<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].leaky_relu(0.2)?.square()
}

fn kinked_input(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    vec![away_from_zero(rng, &X)]
}

fn normal_input(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    vec![rng.tensor(&X)]
}

fn positive_input(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    vec![positive(rng, &X)]
}

fn tanh<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].tanh()
}

fn sigmoid<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].sigmoid()
}

fn softplus<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    // Scaled so that some entries reach the large-|x| branches.
    x[0].mul_scalar(8.0)?.softplus()
}

fn add<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].add(&x[1])
}

fn sub<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[1].sub(&x[0])
}

fn mul<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].mul(&x[1])
}

fn div<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].div(&x[1])
}

fn channel_operand(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    vec![rng.tensor(&X), rng.tensor(&[1, 5, 1, 1])]
}

fn same_shape_operands(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    vec![rng.tensor(&X), rng.tensor(&X)]
}

fn lower_rank_operand(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    // (13, 1) broadcasts along W and is aligned to the right of (3, 5, 13, 11).
    vec![rng.tensor(&X), rng.tensor(&[13, 1])]
}

fn rank5_operands(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    // Rank 5: the size-1 dims merge away, leaving at most 4 runs for the kernel.
    vec![rng.tensor(&[2, 3, 1, 5, 7]), rng.tensor(&[2, 1, 4, 5, 1])]
}

fn divisor_operands(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    vec![rng.tensor(&X), positive(rng, &[5, 1, 11])]
}

fn large_operands(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    // 2 * 1451 * 1453 = 4_216_606 elements, past the 16384-block cap of grid-stride launches
    // (4_194_304 threads) and past the 1024-block cap of the total sum.
    vec![
        rng.tensor(&[2, 1, 1451, 1453]),
        rng.tensor(&[1, 1, 1451, 1]),
    ]
}

fn large_add_sum<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].add(&x[1])?.sum()
}

fn scalar_ops<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].mul_scalar(-1.5)?.add_scalar(0.25)?.neg()
}

fn square<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].square()
}

fn sqrt<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].sqrt()
}

fn reciprocal_or_zero<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].reciprocal_or_zero()
}

fn reciprocal_inputs(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    // Negative entries give 0 and a zero gradient; positive ones stay away from the pole.
    let values: Vec<f64> = rng
        .tensor(&X)
        .to_vec()
        .iter()
        .map(|&v| if v > 0.0 { 0.5 + v } else { v })
        .collect();
    vec![Tensor::from_vec(X, values).unwrap()]
}

fn sum<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].sum()
}

fn sum_axes<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].sum_axes(&[0, 2])
}

fn sum_inner_axes<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    // 3 * 13 * 11 = 429 summed elements per channel: a short sum for the kernel.
    x[0].sum_axes(&[0, 2, 3])
}

fn long_sum_input(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    // 2 * 61 * 47 = 5734 summed elements per channel: a long sum for the kernel.
    vec![rng.tensor(&[2, 3, 61, 47])]
}

fn sum_rank5<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].sum_axes(&[1, 3])
}

fn rank5_input(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    vec![rng.tensor(&[2, 3, 4, 5, 6])]
}

fn mean<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].mean()?.mul(&x[0].mean_axes(&[0, 2, 3])?.sum()?)
}

fn mean_axes<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].mean_axes(&[0, 2, 3])?.square()
}

fn broadcast_to<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].broadcast_to(&X)
}

fn broadcast_input(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    vec![rng.tensor(&[5, 1, 11])]
}

fn channel_norm<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].channel_norm()
}

fn channel_norm_inputs(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    // One pixel of zeros, where the norm's derivative is taken as 0.
    let mut x = rng.tensor(&X);
    for channel in 0..5 {
        x.data_mut()[channel * 143 + 7] = 0.0;
    }
    vec![x]
}

fn pad<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].pad(Margins {
        top: 1,
        bottom: 2,
        left: 0,
        right: 3,
    })
}

fn crop<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].crop(3, 2, 7, 8)
}

fn reshape<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].reshape(&[15, 143])?.square()
}

fn mse<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].mse(&x[1])
}

fn bce_with_logits<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    x[0].bce_with_logits(true)?
        .add(&x[1].bce_with_logits(false)?)
}

/// Number of conv-BN-leaky-ReLU blocks of the penalty's critic.
const CRITIC_BLOCKS: usize = 2;

/// Computes the WGAN-GP penalty `mean((||dD/dx||_channels - 1)^2)` of a small critic in
/// training-mode batch norm, so its gradients differentiate the critic's backward pass.
fn gradient_penalty<T: Element>(x: &[Var<T>]) -> Result<Var<T>> {
    let critic = |input: &Var<T>| -> Result<Var<T>> {
        let mut h = input.clone();
        for block in 0..CRITIC_BLOCKS {
            let p = &x[1 + 4 * block..5 + 4 * block];
            h = h.conv2d(&p[0], Some(&p[1]), 0)?;
            h = h.batch_norm_train(&p[2], &p[3], 1e-5)?.0.leaky_relu(0.2)?;
        }
        h.conv2d(
            &x[1 + 4 * CRITIC_BLOCKS],
            Some(&x[2 + 4 * CRITIC_BLOCKS]),
            0,
        )
    };
    let score = critic(&x[0])?.sum()?;
    let input_grad = grad(&[score], &x[..1], None, true)?
        .remove(0)
        .ok_or_else(|| Error::Autograd("the critic does not depend on its input".to_string()))?;
    input_grad
        .channel_norm()?
        .add_scalar(-1.0)?
        .square()?
        .mean()
}

fn gradient_penalty_inputs(rng: &mut SeededNormal) -> Vec<Tensor<f64>> {
    let channels = 6;
    let mut inputs = vec![rng.tensor(&[2, 3, 15, 13])];
    let mut c_in = 3;
    for _ in 0..CRITIC_BLOCKS {
        let weight: Vec<f64> = rng
            .tensor(&[channels, c_in, 3, 3])
            .to_vec()
            .iter()
            .map(|v| 0.5 * v)
            .collect();
        inputs.push(Tensor::from_vec([channels, c_in, 3, 3], weight).unwrap());
        inputs.push(rng.tensor(&[channels]));
        inputs.push(gamma(rng, channels));
        inputs.push(rng.tensor(&[channels]));
        c_in = channels;
    }
    inputs.push(rng.tensor(&[1, channels, 3, 3]));
    inputs.push(rng.tensor(&[1]));
    inputs
}

/// Declares one test per op: `name: inputs, op, second_order;`.
macro_rules! op_tests {
    ($($test:ident: $inputs:expr, $op:ident, $second:expr;)*) => {
        $(
            #[test]
            fn $test() {
                run_case(&Case {
                    name: stringify!($test),
                    inputs: $inputs,
                    op_f32: $op::<f32>,
                    op_f64: $op::<f64>,
                    second_order: $second,
                });
            }
        )*
    };
}

op_tests! {
    conv2d_with_bias: conv2d_bias_inputs, conv2d_bias, true;
    conv2d_unpadded_non_square_kernel: conv2d_unpadded_inputs, conv2d_unpadded, true;
    conv2d_padding_wider_than_kernel: conv2d_wide_padding_inputs, conv2d_wide_padding, true;
    conv2d_with_many_splits: conv2d_large_inputs, conv2d_large, false;
    conv2d_input_grad_op: input_grad_inputs, input_grad, true;
    conv2d_weight_grad_op: weight_grad_inputs, weight_grad, true;
    batch_norm_train_op: batch_norm_inputs, batch_norm_train, true;
    batch_norm_eval_op: batch_norm_inputs, batch_norm_eval, true;
    leaky_relu_op: kinked_input, leaky_relu, false;
    leaky_relu_squared_op: kinked_input, leaky_relu_squared, true;
    tanh_op: normal_input, tanh, true;
    sigmoid_op: normal_input, sigmoid, true;
    softplus_op: normal_input, softplus, true;
    add_same_shape: same_shape_operands, add, true;
    add_channel_broadcast: channel_operand, add, true;
    add_lower_rank: lower_rank_operand, add, true;
    sub_channel_broadcast: channel_operand, sub, true;
    mul_channel_broadcast: channel_operand, mul, true;
    mul_rank5_broadcast: rank5_operands, mul, true;
    div_broadcast: divisor_operands, div, true;
    add_and_sum_past_grid_caps: large_operands, large_add_sum, false;
    scalar_ops_chain: normal_input, scalar_ops, true;
    square_op: normal_input, square, true;
    sqrt_op: positive_input, sqrt, true;
    reciprocal_or_zero_op: reciprocal_inputs, reciprocal_or_zero, true;
    sum_all: normal_input, sum, true;
    sum_axes_outer_and_inner: normal_input, sum_axes, true;
    sum_axes_short_per_channel: normal_input, sum_inner_axes, true;
    sum_axes_long_per_channel: long_sum_input, sum_inner_axes, true;
    sum_axes_rank5: rank5_input, sum_rank5, true;
    mean_op: normal_input, mean, true;
    mean_axes_op: normal_input, mean_axes, true;
    broadcast_to_op: broadcast_input, broadcast_to, true;
    channel_norm_op: channel_norm_inputs, channel_norm, true;
    pad_op: normal_input, pad, true;
    crop_op: normal_input, crop, true;
    reshape_op: normal_input, reshape, true;
    mse_op: same_shape_operands, mse, true;
    bce_with_logits_op: same_shape_operands, bce_with_logits, true;
    gradient_penalty_of_critic: gradient_penalty_inputs, gradient_penalty, false;
}

#[test]
fn tensor_round_trips_through_gpu() {
    let Some(device) = gpu() else { return };
    let values: Vec<f64> = (0..1001).map(|i| (i as f64 - 500.0) / 7.0).collect();
    let host = Tensor::from_vec([7, 11, 13], values.clone()).unwrap();
    let on_gpu = host.to_device(&device).unwrap();
    assert_eq!(on_gpu.device(), device);
    assert_eq!(on_gpu.dims(), &[7, 11, 13]);
    assert_eq!(on_gpu.to_vec(), values);
    assert!(on_gpu.bitwise_eq(&host));
    assert_eq!(on_gpu.to_cpu().unwrap().as_slice(), values.as_slice());

    let reshaped = on_gpu.reshape([77, 13]).unwrap();
    assert_eq!(reshaped.device(), device);
    assert_eq!(reshaped.to_vec(), values);

    let narrow = on_gpu.cast::<f32>();
    assert_eq!(narrow.device(), device);
    assert_eq!(narrow.to_vec(), host.cast::<f32>().to_vec());

    assert_eq!(
        Tensor::<f32>::zeros_on([3, 5], &device).unwrap().to_vec(),
        vec![0.0; 15]
    );
    assert_eq!(
        Tensor::<f64>::ones_on([4], &device).unwrap().to_vec(),
        vec![1.0; 4]
    );
    let full = Tensor::<f32>::full_on([2, 3], 2.5, &device).unwrap();
    assert_eq!(full.to_vec(), vec![2.5; 6]);
    let from_vec = Tensor::from_vec_on([2], vec![1.0f32, -3.0], &device).unwrap();
    assert_eq!(from_vec.to_vec(), vec![1.0, -3.0]);
    assert_eq!(
        Tensor::<f64>::full_on([1], -4.0, &device)
            .unwrap()
            .item()
            .unwrap(),
        -4.0
    );
    assert!(full.all_finite());
}

#[test]
fn empty_tensors_work_on_gpu() {
    let Some(device) = gpu() else { return };
    let empty = Tensor::<f32>::zeros_on([0, 3], &device).unwrap();
    assert_eq!(empty.numel(), 0);
    assert!(empty.to_vec().is_empty());
    let x = Var::constant(Tensor::<f32>::zeros_on([2, 0, 4, 4], &device).unwrap());
    let y = x
        .tanh()
        .unwrap()
        .add_scalar(1.0)
        .unwrap()
        .pad_uniform(1)
        .unwrap();
    assert_eq!(y.dims(), &[2, 0, 6, 6]);
    assert!(y.value().to_vec().is_empty());
    let total = x.sum().unwrap();
    assert_eq!(total.item().unwrap(), 0.0);
}

#[test]
fn mixed_devices_are_rejected_with_both_names() {
    let Some(device) = gpu() else { return };
    let a = Var::constant(Tensor::<f32>::ones([2, 3]));
    let b = Var::constant(Tensor::<f32>::ones_on([2, 3], &device).unwrap());
    let error = a.add(&b).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::DeviceMismatch { .. }), "{message}");
    assert!(message.contains("add"), "{message}");
    assert!(message.contains("cpu"), "{message}");
    assert!(message.contains(&device.to_string()), "{message}");

    let weight = Var::constant(Tensor::<f32>::ones([4, 3, 3, 3]));
    let x = Var::constant(Tensor::<f32>::ones_on([1, 3, 5, 5], &device).unwrap());
    let message = x.conv2d(&weight, None, 1).unwrap_err().to_string();
    assert!(message.contains("conv2d"), "{message}");
}

#[test]
fn host_slice_of_gpu_tensor_panics_with_advice() {
    let Some(device) = gpu() else { return };
    let on_gpu = Tensor::<f32>::ones_on([3], &device).unwrap();
    let panic = std::panic::catch_unwind(|| on_gpu.as_slice().len()).unwrap_err();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("to_cpu"), "{message}");
    assert!(message.contains(&device.to_string()), "{message}");
}

/// Runs three Adam steps on the CPU and on the GPU, one with a missing gradient.
fn adam_matches<T: Element>(device: &Device, tolerance: f64) {
    let mut rng = SeededNormal::new(5);
    let shapes: [&[usize]; 2] = [&[37, 5, 3, 3], &[37]];
    let initial: Vec<Tensor<T>> = shapes.iter().map(|dims| rng.tensor(dims).cast()).collect();
    let mut cpu_params: Vec<Param<T>> = initial
        .iter()
        .enumerate()
        .map(|(i, t)| Param::new(format!("p{i}"), t.clone()))
        .collect();
    let mut gpu_params: Vec<Param<T>> = initial
        .iter()
        .enumerate()
        .map(|(i, t)| Param::new(format!("p{i}"), t.to_device(device).unwrap()))
        .collect();
    let config = AdamConfig {
        lr: 1e-2,
        ..AdamConfig::default()
    };
    let mut cpu_adam = Adam::new(config, &cpu_params.iter().collect::<Vec<_>>());
    let mut gpu_adam = Adam::new(config, &gpu_params.iter().collect::<Vec<_>>());
    for step in 0..3 {
        let grads: Vec<Option<Tensor<T>>> = shapes
            .iter()
            .enumerate()
            .map(|(i, dims)| (step != 1 || i == 0).then(|| rng.tensor(dims).cast()))
            .collect();
        let gpu_grads: Vec<Option<Tensor<T>>> = grads
            .iter()
            .map(|g| g.as_ref().map(|g| g.to_device(device).unwrap()))
            .collect();
        cpu_adam
            .step(&mut cpu_params.iter_mut().collect::<Vec<_>>(), &grads)
            .unwrap();
        gpu_adam
            .step(&mut gpu_params.iter_mut().collect::<Vec<_>>(), &gpu_grads)
            .unwrap();
        for (cpu, gpu) in cpu_params.iter().zip(&gpu_params) {
            assert_eq!(gpu.value().device(), *device);
            let error = distance(&gpu.value().to_f64_vec(), &cpu.value().to_f64_vec());
            assert!(
                error <= tolerance,
                "{} {} after step {step}: GPU differs from CPU by {error:.3e}",
                T::DTYPE,
                cpu.name()
            );
        }
    }
}

#[test]
fn adam_steps_match_cpu() {
    let Some(device) = gpu() else { return };
    adam_matches::<f64>(&device, 1e-12);
    adam_matches::<f32>(&device, 1e-5);
}

/// Trains a conv block for two steps on each device and compares outputs and running
/// statistics, then compares inference-mode outputs.
fn conv_block_matches<T: Element>(device: &Device, tolerance: f64) {
    let mut rng = SeededNormal::new(9);
    let mut cpu_block = ConvBlock::<T>::new("block", 5, 7, 3, 1);
    let mut normal = || rng.normal();
    cpu_block.conv.init_normal(0.2, &mut normal).unwrap();
    cpu_block.batch_norm.init_normal(0.1, &mut normal).unwrap();
    let mut gpu_block = cpu_block.clone();
    gpu_block.to_device(device).unwrap();
    for param in gpu_block.params() {
        assert_eq!(param.value().device(), *device, "{}", param.name());
    }

    let mut inputs = SeededNormal::new(10);
    for step in 0..2 {
        let x = inputs.tensor(&X).cast::<T>();
        let cpu_out = cpu_block.forward(&Var::constant(x.clone())).unwrap();
        let gpu_out = gpu_block
            .forward(&Var::constant(x.to_device(device).unwrap()))
            .unwrap();
        let error = distance(&gpu_out.value().to_f64_vec(), &cpu_out.value().to_f64_vec());
        assert!(
            error <= tolerance,
            "{} step {step} output: {error:.3e}",
            T::DTYPE
        );
    }
    let running = |block: &ConvBlock<T>| {
        let mut values = block.batch_norm.running_mean.to_f64_vec();
        values.extend(block.batch_norm.running_var.to_f64_vec());
        values
    };
    assert_eq!(gpu_block.batch_norm.running_mean.device(), *device);
    let error = distance(&running(&gpu_block), &running(&cpu_block));
    assert!(
        error <= tolerance,
        "{} running statistics: {error:.3e}",
        T::DTYPE
    );
    assert_eq!(gpu_block.batch_norm.num_batches_tracked, 2);

    cpu_block.batch_norm.training = false;
    gpu_block.batch_norm.training = false;
    let x = inputs.tensor(&X).cast::<T>();
    let cpu_out = cpu_block.forward(&Var::constant(x.clone())).unwrap();
    let gpu_out = gpu_block
        .forward(&Var::constant(x.to_device(device).unwrap()))
        .unwrap();
    let error = distance(&gpu_out.value().to_f64_vec(), &cpu_out.value().to_f64_vec());
    assert!(
        error <= tolerance,
        "{} inference output: {error:.3e}",
        T::DTYPE
    );
}

#[test]
fn conv_block_trains_on_gpu_like_cpu() {
    let Some(device) = gpu() else { return };
    conv_block_matches::<f64>(&device, 1e-10);
    conv_block_matches::<f32>(&device, 1e-4);
}

#[test]
fn missing_gpu_is_an_error_not_a_panic() {
    // Ordinal 99 exists on no test machine, so this fails with or without a GPU.
    let error = Tensor::<f32>::zeros_on([2], &Device::Cuda(99)).unwrap_err();
    assert!(matches!(error, Error::Cuda(_)), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("driver") || message.contains("device 99"),
        "{message}"
    );
}

/// Returns the bit patterns of a tensor's elements, for exact comparisons.
fn element_bits<T: Element>(tensor: &Tensor<T>) -> Vec<u64> {
    tensor
        .to_cpu()
        .unwrap()
        .to_f64_vec()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Draws `numel` values of `kind` on the CPU and on the GPU from the same generator state and
/// checks that the values and the generator offsets after the draw are identical.
fn draws_match<T: Element>(device: &Device, kind: DrawKind, seed: u64, offset: u64, numel: usize) {
    let mut cpu_rng = Rng::from_state((seed, offset));
    let mut gpu_rng = cpu_rng.clone();
    let on_cpu = draw::<T>(&mut cpu_rng, kind, [numel], &Device::Cpu).unwrap();
    let on_gpu = draw::<T>(&mut gpu_rng, kind, [numel], device).unwrap();
    assert_eq!(on_gpu.device(), *device);
    assert_eq!(
        gpu_rng.offset(),
        cpu_rng.offset(),
        "{kind:?} seed {seed} offset {offset} numel {numel}: generator offsets differ"
    );
    let (cpu_bits, gpu_bits) = (element_bits(&on_cpu), element_bits(&on_gpu));
    let first_difference = cpu_bits.iter().zip(&gpu_bits).position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "{kind:?} seed {seed} offset {offset} numel {numel}: first differing value"
    );
}

#[test]
fn random_draws_match_cpu_bit_for_bit() {
    let Some(device) = gpu() else { return };
    // The cases cover offsets that are not multiples of any group size, odd counts that leave
    // half a Box-Muller pair and a seed with both key words set. The last count is past the
    // grid cap of the launch, which is 2^14 blocks of 256 threads and 4 words per thread.
    let cases: [(u64, u64, usize); 7] = [
        (0, 0, 1),
        (7, 1, 2),
        (7, 3, 17),
        (0x0123_4567_89ab_cdef, 5, 1001),
        (42, 2, 257),
        (42, 1 << 33, 64),
        (3, 6, (1 << 24) + 5),
    ];
    for (seed, offset, numel) in cases {
        draws_match::<f32>(&device, DrawKind::UniformF32, seed, offset, numel);
        draws_match::<f32>(&device, DrawKind::NormalF32, seed, offset, numel);
        draws_match::<f64>(&device, DrawKind::UniformF64, seed, offset, numel);
        draws_match::<f64>(&device, DrawKind::NormalF64, seed, offset, numel);
    }
    // An f32 draw into f64 tensors takes the host path and must give the same values too.
    draws_match::<f64>(&device, DrawKind::NormalF32, 9, 3, 33);
}

#[test]
fn noise_maps_match_cpu_bit_for_bit() {
    let Some(device) = gpu() else { return };
    for scale in [0, 1, 4] {
        let mut cpu_rng = Rng::new(11);
        let mut gpu_rng = Rng::new(11);
        let on_cpu = draw_noise::<f32>(&mut cpu_rng, scale, (13, 17), &Device::Cpu).unwrap();
        let on_gpu = draw_noise::<f32>(&mut gpu_rng, scale, (13, 17), &device).unwrap();
        assert_eq!(on_gpu.dims(), &[1, 3, 13, 17]);
        assert!(
            on_gpu.bitwise_eq(&on_cpu),
            "scale {scale}: noise maps differ"
        );
        assert_eq!(gpu_rng.offset(), cpu_rng.offset(), "scale {scale}");
    }
}

/// One resize case: input dims, the plan's target and an optional crop of its output.
type ResizeCase = ([usize; 4], Resize, Option<(usize, usize)>);

/// Resizes planes of `dims` with a plan for `target` and a crop to `crop` on both devices and
/// checks that the results are identical.
fn resize_matches<T: Element>(
    device: &Device,
    dims: [usize; 4],
    target: Resize,
    crop: Option<(usize, usize)>,
) {
    let [_, _, h, w] = dims;
    let plan = ResizePlan::new(h, w, target).unwrap();
    let size = crop.unwrap_or((plan.out_height, plan.out_width));
    let x = SeededNormal::new(21).tensor(&dims).cast::<T>();
    let on_cpu = resize_cropped(&x, &plan, size).unwrap();
    let on_gpu = resize_cropped(&x.to_device(device).unwrap(), &plan, size).unwrap();
    assert_eq!(on_gpu.device(), *device);
    assert_eq!(on_gpu.dims(), on_cpu.dims());
    let (cpu_bits, gpu_bits) = (element_bits(&on_cpu), element_bits(&on_gpu));
    let first_difference = cpu_bits.iter().zip(&gpu_bits).position(|(a, b)| a != b);
    assert_eq!(
        first_difference,
        None,
        "{} {dims:?} to {target:?} cropped to {size:?}: first differing element",
        T::DTYPE
    );
}

#[test]
fn resize_matches_cpu_bit_for_bit() {
    let Some(device) = gpu() else { return };
    let cases: [ResizeCase; 6] = [
        // The cascade's upsampling: general path up, then a crop to the next scale's size.
        (
            [1, 3, 19, 25],
            Resize::Sides {
                height: 26,
                width: 34,
            },
            Some((25, 33)),
        ),
        // Downscaling widens the kernel, so rows have more taps.
        (
            [2, 3, 40, 31],
            Resize::Sides {
                height: 17,
                width: 23,
            },
            None,
        ),
        // The integer-downscale path.
        ([1, 3, 36, 48], Resize::Scale(0.5), None),
        ([1, 2, 37, 29], Resize::Scale(1.0 / 3.0), None),
        // Equal sizes give identity tables.
        (
            [1, 3, 9, 14],
            Resize::Sides {
                height: 9,
                width: 14,
            },
            Some((5, 14)),
        ),
        // A large plane count, past the grid cap of the launch.
        (
            [1, 4096, 33, 37],
            Resize::Sides {
                height: 44,
                width: 49,
            },
            None,
        ),
    ];
    for (dims, target, crop) in cases {
        resize_matches::<f32>(&device, dims, target, crop);
        resize_matches::<f64>(&device, dims, target, crop);
    }
}

#[test]
fn resize_reuses_the_uploaded_tables() {
    let Some(device) = gpu() else { return };
    let plan = ResizePlan::new(
        21,
        27,
        Resize::Sides {
            height: 28,
            width: 36,
        },
    )
    .unwrap();
    let x = Tensor::<f32>::ones_on([1, 3, 21, 27], &device).unwrap();
    // The first call uploads the tables; later calls must match it exactly.
    let first = resize_cropped(&x, &plan, (28, 36)).unwrap();
    for _ in 0..3 {
        let again = resize_cropped(&x, &plan, (28, 36)).unwrap();
        assert!(again.bitwise_eq(&first));
    }
    // The weights of each row sum to 1, so a constant image stays constant up to rounding.
    for value in first.to_vec() {
        assert!((value - 1.0).abs() < 1e-6, "{value}");
    }
}

#[test]
fn buffers_of_dropped_tensors_are_reused() {
    let Some(device) = gpu() else { return };
    let Device::Cuda(ordinal) = device else {
        unreachable!()
    };
    let handle = CudaDevice::shared(ordinal).unwrap();
    // An odd element count that no other test in this file allocates, so concurrent tests do
    // not take the block in between.
    const LEN: usize = 123_457;
    drop(Tensor::<f32>::zeros_on([LEN], &device).unwrap());
    let before = handle.pool_stats();
    let reused = Tensor::<f32>::full_on([LEN], 2.0, &device).unwrap();
    let after = handle.pool_stats();
    assert!(
        after.reuses > before.reuses,
        "no reuse counted: {before:?} then {after:?}"
    );
    assert_eq!(reused.to_vec(), vec![2.0; LEN]);
}
