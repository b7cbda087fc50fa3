//! Times conv2d forward, input gradient and weight gradient at SinGAN shapes and prints
//! milliseconds and GFLOP/s.
//!
//! Run with `cargo bench --bench conv2d`, or `cargo bench --bench conv2d -- --device cuda` to
//! time the CUDA kernels on GPU 0 (the built binary under target/release/deps takes the same
//! option). Each op is checked against the plain reference loops once on a small case before
//! any timing. FLOPs count one multiply and one add per weight tap:
//! `2 * N * C_out * C_in * K_h * K_w * H_out * W_out` for every op. GPU timings wait for the
//! kernels to finish before reading the clock.

mod common;

use std::time::Duration;

use common::{run_like_the_binary, time_op, Runs};

use singan::autograd::Var;
use singan::gradcheck::SeededNormal;
use singan::ops::conv2d::{conv2d_input_grad, conv2d_weight_grad, reference, ConvGeometry};
use singan::tensor::{Device, Tensor};

/// A named op to time, as a closure that runs it once.
type TimedOp<'a> = (&'static str, Box<dyn FnMut() + 'a>);

/// SinGAN's convolutions at the coarsest, a middle and the finest scale of a 250x188 image:
/// (channels, input height, input width).
const SHAPES: [(usize, usize, usize); 3] = [(32, 26, 34), (64, 96, 128), (128, 188, 250)];

/// Reads `--device cpu|cuda` from the arguments, ignoring the `--bench` flag that cargo adds.
fn device_from_args() -> Device {
    match common::device_argument().as_deref() {
        None | Some("cpu") => Device::Cpu,
        Some("cuda") => match singan::cuda::probe_device(0) {
            Ok(gpu) => Device::Cuda(gpu.ordinal()),
            Err(error) => {
                eprintln!("error: --device cuda: {error}");
                std::process::exit(2);
            }
        },
        Some(other) => {
            eprintln!("error: --device must be cpu or cuda, not {other:?}");
            std::process::exit(2);
        }
    }
}

/// Returns a constant holding `tensor` on `device`.
fn constant_on<T: singan::Element>(tensor: Tensor<T>, device: &Device) -> Var<T> {
    Var::constant(tensor.to_device(device).expect("copy to the device"))
}

/// Waits for the kernels that computed `value` and drops it.
fn finish<T: singan::Element>(value: Var<T>) {
    value
        .value()
        .synchronize()
        .expect("the op's kernels succeed");
}

fn verify_once(device: &Device) {
    let g = ConvGeometry {
        n: 1,
        c_in: 4,
        c_out: 5,
        h_in: 13,
        w_in: 17,
        k_h: 3,
        k_w: 3,
        pad_h: 0,
        pad_w: 0,
    };
    let mut rng = SeededNormal::new(3);
    let x = rng.tensor(&[1, 4, 13, 17]);
    let w = rng.tensor(&[5, 4, 3, 3]);
    let y = constant_on(x.clone(), device)
        .conv2d(&constant_on(w.clone(), device), None, 0)
        .unwrap();
    let expected = reference::forward(x.as_slice(), w.as_slice(), &g);
    let error = y
        .value()
        .to_vec()
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        error < 1e-12,
        "conv2d disagrees with the reference loops by {error}"
    );
}

/// Timed runs per op.
const RUNS: Runs = Runs {
    min_runs: 3,
    max_runs: 50,
    budget: Duration::from_secs(3),
};

fn main() {
    run_like_the_binary(run);
}

fn run() {
    let device = device_from_args();
    verify_once(&device);
    match device {
        Device::Cpu => println!("device: cpu, threads: {}", rayon::current_num_threads()),
        Device::Cuda(_) => println!("device: {device}, f32"),
    }
    println!(
        "{:<22} {:<13} {:>10} {:>10} {:>9} {:>9}",
        "shape (C, H, W)", "op", "median ms", "min ms", "GFLOP", "GFLOP/s"
    );
    for (channels, h, w) in SHAPES {
        let mut rng = SeededNormal::new(1);
        let x = constant_on(rng.tensor(&[1, channels, h, w]).cast::<f32>(), &device);
        let weight = constant_on(
            rng.tensor(&[channels, channels, 3, 3]).cast::<f32>(),
            &device,
        );
        let (h_out, w_out) = (h - 2, w - 2);
        let grad_y = constant_on(Tensor::<f32>::ones([1, channels, h_out, w_out]), &device);
        let gflop = 2.0 * (channels * channels * 9 * h_out * w_out) as f64 / 1e9;
        let label = format!("({channels}, {h}, {w})");

        let ops: [TimedOp<'_>; 3] = [
            (
                "forward",
                Box::new(|| finish(x.conv2d(&weight, None, 0).unwrap())),
            ),
            (
                "grad_input",
                Box::new(|| finish(conv2d_input_grad(&grad_y, &weight, 0, (h, w)).unwrap())),
            ),
            (
                "grad_weight",
                Box::new(|| finish(conv2d_weight_grad(&x, &grad_y, 0, (3, 3)).unwrap())),
            ),
        ];
        for (name, op) in ops {
            let (median, min) = time_op(&RUNS, op);
            println!(
                "{:<22} {:<13} {:>10.3} {:>10.3} {:>9.3} {:>9.1}",
                label,
                name,
                median,
                min,
                gflop,
                gflop / (median / 1e3)
            );
        }
    }
}
