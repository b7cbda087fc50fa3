//! Times the leaky ReLU (slope 0.2) at SinGAN shapes: the forward pass and the backward, which
//! multiplies the upstream gradient by the mask `x > 0 ? 1 : 0.2`; prints milliseconds and GB/s.
//!
//! Run with `cargo bench --bench activation`. Both passes are checked once against plain loops
//! on a small case before any timing. The backward is timed through `singan::grad` with
//! `create_graph = false`; the time includes the small cost of walking the one-node graph.
//! GB/s counts each tensor once: the forward reads `x` and writes `y`, the backward reads `dy`
//! and `x` and writes `dx`.

mod common;

use common::{
    print_memory_header, require_cpu_device, run_like_the_binary, time_memory_ops, MemoryOp,
};

use singan::gradcheck::SeededNormal;
use singan::{grad, Var};

/// SinGAN's activations at the coarsest, a middle and the finest scale of a 250x188 image:
/// (channels, height, width), batch size 1.
const SHAPES: [(usize, usize, usize); 3] = [(32, 26, 34), (64, 96, 128), (128, 188, 250)];

const SLOPE: f64 = 0.2;

/// Checks the forward and the backward against plain loops. Both are exact in f64, because each
/// output is either the input or one product with the slope.
fn verify_once() {
    let dims = [2, 3, 5, 7];
    let mut rng = SeededNormal::new(7);
    let x = rng.tensor(&dims);
    let dy = rng.tensor(&dims);
    let expected_y: Vec<f64> = x
        .as_slice()
        .iter()
        .map(|&v| if v > 0.0 { v } else { SLOPE * v })
        .collect();
    let expected_dx: Vec<f64> = x
        .as_slice()
        .iter()
        .zip(dy.as_slice())
        .map(|(&v, &g)| if v > 0.0 { g } else { SLOPE * g })
        .collect();

    let x = Var::param(x);
    let y = x.leaky_relu(SLOPE).unwrap();
    let dx = grad(
        std::slice::from_ref(&y),
        std::slice::from_ref(&x),
        Some(&[Var::constant(dy)]),
        false,
    )
    .unwrap()
    .remove(0)
    .unwrap();
    assert_eq!(
        y.value().as_slice(),
        &expected_y[..],
        "leaky ReLU forward disagrees with the reference loop"
    );
    assert_eq!(
        dx.value().as_slice(),
        &expected_dx[..],
        "leaky ReLU backward disagrees with the reference loop"
    );
}

fn main() {
    require_cpu_device("activation");
    run_like_the_binary(run);
}

fn run() {
    verify_once();
    print_memory_header();
    for (channels, h, w) in SHAPES {
        let dims = [1, channels, h, w];
        let mut rng = SeededNormal::new(1);
        let x = Var::param(rng.tensor(&dims).cast::<f32>());
        let grad_y = Var::constant(rng.tensor(&dims).cast::<f32>());
        let y = x.leaky_relu(SLOPE).unwrap();
        let tensor_bytes = (channels * h * w * std::mem::size_of::<f32>()) as f64;
        let label = format!("({channels}, {h}, {w})");

        let ops: [MemoryOp<'_>; 2] = [
            (
                "forward",
                2.0 * tensor_bytes,
                Box::new(|| drop(x.leaky_relu(SLOPE).unwrap())),
            ),
            (
                "backward",
                3.0 * tensor_bytes,
                Box::new(|| {
                    let grads = grad(
                        std::slice::from_ref(&y),
                        std::slice::from_ref(&x),
                        Some(std::slice::from_ref(&grad_y)),
                        false,
                    );
                    drop(grads.unwrap());
                }),
            ),
        ];
        time_memory_ops(&label, ops);
    }
}
