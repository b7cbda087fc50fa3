//! Times training-mode batch norm at SinGAN shapes: the forward pass (batch statistics,
//! normalisation and affine transform) and the fused first-order backward, alone and fused
//! with the leaky ReLU that follows it in SinGAN's blocks, and prints milliseconds and GB/s.
//!
//! Run with `cargo bench --bench batchnorm`. Both passes are checked once against plain f64
//! loops on a small case before any timing. The backward is timed through `singan::grad` with
//! `create_graph = false`, which selects the fused kernel; the time includes the small cost of
//! walking the one-node graph. GB/s counts each full-size tensor once, so it is a lower bound on
//! the memory traffic. The forward reads `x` and writes `y`, and the backward reads `x` and `dy`
//! and writes `dx` (and with the ReLU also reads its output), but the kernels make more passes
//! over `x` than that.

mod common;

use common::{
    print_memory_header, require_cpu_device, run_like_the_binary, time_memory_ops, MemoryOp,
};

use singan::gradcheck::SeededNormal;
use singan::{grad, Tensor, Var};

/// SinGAN's batch norm inputs at the coarsest, a middle and the finest scale of a 250x188
/// image: (channels, height, width), batch size 1.
const SHAPES: [(usize, usize, usize); 3] = [(32, 26, 34), (64, 96, 128), (128, 188, 250)];

const EPS: f64 = 1e-5;

/// Leaky ReLU slope of SinGAN's blocks, for the rows that time batch norm fused with it.
const SLOPE: f64 = 0.2;

/// Reference results of one channel-wise batch norm: output and the three gradients.
struct Reference {
    output: Vec<f64>,
    grad_input: Vec<f64>,
    grad_weight: Vec<f64>,
    grad_bias: Vec<f64>,
}

/// Computes batch norm and its gradients with plain loops over an `(n, c, h*w)` buffer:
/// `dx = w s (dy - mean(dy) - x_hat mean(dy x_hat))`, `dw = sum(dy x_hat)`, `db = sum(dy)`,
/// with `s = 1 / sqrt(var + eps)` and the biased variance.
fn reference(x: &[f64], dy: &[f64], weight: &[f64], bias: &[f64], dims: [usize; 4]) -> Reference {
    let [n, c, h, w] = dims;
    let plane = h * w;
    let count = (n * plane) as f64;
    let index = |image: usize, channel: usize, i: usize| (image * c + channel) * plane + i;
    let mut result = Reference {
        output: vec![0.0; x.len()],
        grad_input: vec![0.0; x.len()],
        grad_weight: vec![0.0; c],
        grad_bias: vec![0.0; c],
    };
    for channel in 0..c {
        let values = || (0..n).flat_map(move |b| (0..plane).map(move |i| index(b, channel, i)));
        let mean = values().map(|j| x[j]).sum::<f64>() / count;
        let var = values().map(|j| (x[j] - mean).powi(2)).sum::<f64>() / count;
        let s = 1.0 / (var + EPS).sqrt();
        let mean_dy = values().map(|j| dy[j]).sum::<f64>() / count;
        let mean_dy_xhat = values().map(|j| dy[j] * (x[j] - mean) * s).sum::<f64>() / count;
        for j in values() {
            let x_hat = (x[j] - mean) * s;
            result.output[j] = weight[channel] * x_hat + bias[channel];
            result.grad_input[j] = weight[channel] * s * (dy[j] - mean_dy - x_hat * mean_dy_xhat);
            result.grad_weight[channel] += dy[j] * x_hat;
            result.grad_bias[channel] += dy[j];
        }
    }
    result
}

fn max_error(actual: &Tensor<f64>, expected: &[f64]) -> f64 {
    actual
        .as_slice()
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// Checks the forward and the fused backward against [`reference`] in f64.
fn verify_once() {
    let dims = [2, 3, 5, 7];
    let mut rng = SeededNormal::new(5);
    let x = rng.tensor(&dims);
    let dy = rng.tensor(&dims);
    let weight = rng.tensor(&[3]);
    let bias = rng.tensor(&[3]);
    let expected = reference(
        x.as_slice(),
        dy.as_slice(),
        weight.as_slice(),
        bias.as_slice(),
        dims,
    );

    let (x, weight, bias) = (Var::param(x), Var::param(weight), Var::param(bias));
    let (y, _stats) = x.batch_norm_train(&weight, &bias, EPS).unwrap();
    let grads = grad(
        std::slice::from_ref(&y),
        &[x, weight, bias],
        Some(&[Var::constant(dy)]),
        false,
    )
    .unwrap();
    let checks = [
        ("output", y.value().clone(), &expected.output),
        (
            "input gradient",
            grads[0].as_ref().unwrap().value().clone(),
            &expected.grad_input,
        ),
        (
            "weight gradient",
            grads[1].as_ref().unwrap().value().clone(),
            &expected.grad_weight,
        ),
        (
            "bias gradient",
            grads[2].as_ref().unwrap().value().clone(),
            &expected.grad_bias,
        ),
    ];
    for (name, actual, expected) in checks {
        let error = max_error(&actual, expected);
        assert!(
            error < 1e-10,
            "batch norm {name} disagrees with the reference loops by {error}"
        );
    }
}

fn main() {
    require_cpu_device("batchnorm");
    run_like_the_binary(run);
}

fn run() {
    verify_once();
    print_memory_header();
    for (channels, h, w) in SHAPES {
        let dims = [1, channels, h, w];
        let mut rng = SeededNormal::new(1);
        let x = Var::param(rng.tensor(&dims).cast::<f32>());
        let weight = Var::param(rng.tensor(&[channels]).cast::<f32>());
        let bias = Var::param(rng.tensor(&[channels]).cast::<f32>());
        let grad_y = Var::constant(rng.tensor(&dims).cast::<f32>());
        let (y, _stats) = x.batch_norm_train(&weight, &bias, EPS).unwrap();
        let (z, _stats) = x
            .batch_norm_train_leaky_relu(&weight, &bias, EPS, SLOPE)
            .unwrap();
        let inputs = [x.clone(), weight.clone(), bias.clone()];
        let tensor_bytes = (channels * h * w * std::mem::size_of::<f32>()) as f64;
        let label = format!("({channels}, {h}, {w})");

        let backward = |output: &Var<f32>| {
            let grads = grad(
                std::slice::from_ref(output),
                &inputs,
                Some(std::slice::from_ref(&grad_y)),
                false,
            );
            drop(grads.unwrap());
        };
        let ops: [MemoryOp<'_>; 4] = [
            (
                "forward",
                2.0 * tensor_bytes,
                Box::new(|| drop(x.batch_norm_train(&weight, &bias, EPS).unwrap())),
            ),
            ("backward", 3.0 * tensor_bytes, Box::new(|| backward(&y))),
            (
                "forward+relu",
                2.0 * tensor_bytes,
                Box::new(|| {
                    let out = x.batch_norm_train_leaky_relu(&weight, &bias, EPS, SLOPE);
                    drop(out.unwrap());
                }),
            ),
            (
                "backward+relu",
                4.0 * tensor_bytes,
                Box::new(|| backward(&z)),
            ),
        ];
        time_memory_ops(&label, ops);
    }
}
