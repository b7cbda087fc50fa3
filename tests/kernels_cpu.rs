//! The fast CPU kernels against plain reference loops, and bit-for-bit determinism across thread
//! counts.

use proptest::prelude::*;
use singan::autograd::Var;
use singan::gradcheck::SeededNormal;
use singan::ops::conv2d::{reference, ConvGeometry};
use singan::tensor::Tensor;

/// Runs `body` on a rayon pool with `threads` threads.
fn with_threads<R: Send>(threads: usize, body: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(body)
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Random convolutions. With 1 to 8 channels on each side, f32 cases run the direct kernels
/// for thin convolutions and Winograd or im2col for the others.
fn geometry() -> impl Strategy<Value = (ConvGeometry, u64)> {
    (
        1usize..=2,
        1usize..=8,
        1usize..=8,
        1usize..=19,
        1usize..=23,
        1usize..=4,
        0usize..=2,
        any::<u64>(),
    )
        .prop_filter_map(
            "kernel larger than the padded input",
            |(n, c_in, c_out, h, w, k, p, seed)| {
                (h + 2 * p >= k && w + 2 * p >= k).then_some((
                    ConvGeometry {
                        n,
                        c_in,
                        c_out,
                        h_in: h,
                        w_in: w,
                        k_h: k,
                        k_w: k,
                        pad_h: p as isize,
                        pad_w: p as isize,
                    },
                    seed,
                ))
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn conv2d_matches_reference_loops((g, seed) in geometry()) {
        let mut rng = SeededNormal::new(seed);
        let x = rng.tensor(&[g.n, g.c_in, g.h_in, g.w_in]);
        let w = rng.tensor(&[g.c_out, g.c_in, g.k_h, g.k_w]);
        let gy = rng.tensor(&[g.n, g.c_out, g.h_out(), g.w_out()]);
        let x_var = Var::constant(x.clone());
        let w_var = Var::constant(w.clone());
        let fast = x_var.conv2d(&w_var, None, g.pad_h as usize).unwrap();
        let slow = reference::forward(x.as_slice(), w.as_slice(), &g);
        prop_assert!(max_abs_diff(fast.value().as_slice(), &slow) < 1e-12);

        let gy_var = Var::constant(gy.clone());
        let fast_gx = singan::ops::conv2d::conv2d_input_grad(&gy_var, &w_var, g.pad_h as usize, (g.h_in, g.w_in)).unwrap();
        let slow_gx = reference::input_grad(gy.as_slice(), w.as_slice(), &g);
        prop_assert!(max_abs_diff(fast_gx.value().as_slice(), &slow_gx) < 1e-12);

        let fast_gw = singan::ops::conv2d::conv2d_weight_grad(&x_var, &gy_var, g.pad_h as usize, (g.k_h, g.k_w)).unwrap();
        let slow_gw = reference::weight_grad(x.as_slice(), gy.as_slice(), &g);
        prop_assert!(max_abs_diff(fast_gw.value().as_slice(), &slow_gw) < 1e-11);
    }
}

/// Largest error of an f32 result against an f64 reference, relative to `1 + |reference|`.
fn max_relative_error(fast: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(fast.len(), reference.len());
    fast.iter()
        .zip(reference)
        .map(|(&f, &r)| (f as f64 - r).abs() / (1.0 + r.abs()))
        .fold(0.0, f64::max)
}

/// Runs the three f32 convolution ops (thin convolutions take the direct kernels, other 3x3
/// kernels Winograd) and compares them with the f64 reference loops.
fn check_f32_conv(g: &ConvGeometry, seed: u64) -> [f64; 3] {
    let mut rng = SeededNormal::new(seed);
    let x = rng.tensor(&[g.n, g.c_in, g.h_in, g.w_in]);
    let w = rng.tensor(&[g.c_out, g.c_in, g.k_h, g.k_w]);
    let gy = rng.tensor(&[g.n, g.c_out, g.h_out(), g.w_out()]);
    let (x32, w32, gy32) = (
        Var::constant(x.cast::<f32>()),
        Var::constant(w.cast::<f32>()),
        Var::constant(gy.cast::<f32>()),
    );
    let pad = g.pad_h as usize;
    let y = x32.conv2d(&w32, None, pad).unwrap();
    let gx = singan::ops::conv2d::conv2d_input_grad(&gy32, &w32, pad, (g.h_in, g.w_in)).unwrap();
    let gw = singan::ops::conv2d::conv2d_weight_grad(&x32, &gy32, pad, (g.k_h, g.k_w)).unwrap();
    [
        max_relative_error(
            y.value().as_slice(),
            &reference::forward(x.as_slice(), w.as_slice(), g),
        ),
        max_relative_error(
            gx.value().as_slice(),
            &reference::input_grad(gy.as_slice(), w.as_slice(), g),
        ),
        max_relative_error(
            gw.value().as_slice(),
            &reference::weight_grad(x.as_slice(), gy.as_slice(), g),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn f32_conv2d_matches_reference_loops((g, seed) in geometry()) {
        // Sums of at most 8 * 16 products of unit normals: f32 rounding stays far below 1e-4.
        let [forward, input_grad, weight_grad] = check_f32_conv(&g, seed);
        prop_assert!(forward < 1e-4, "forward error {forward}");
        prop_assert!(input_grad < 1e-4, "input gradient error {input_grad}");
        prop_assert!(weight_grad < 1e-4, "weight gradient error {weight_grad}");
    }
}

#[test]
fn f32_conv2d_singan_width_matches_reference() {
    // 32 channels and more tiles than one group, with SinGAN's padding 0 and the input
    // gradient's padding 2.
    for pad in [0, 2] {
        let g = ConvGeometry {
            n: 1,
            c_in: 32,
            c_out: 32,
            h_in: 41,
            w_in: 53,
            k_h: 3,
            k_w: 3,
            pad_h: pad,
            pad_w: pad,
        };
        let [forward, input_grad, weight_grad] = check_f32_conv(&g, 11);
        // The weight gradient sums 32 * 9 products over ~2000 pixels; the others 32 * 9.
        assert!(forward < 1e-4, "padding {pad}: forward error {forward}");
        assert!(
            input_grad < 1e-4,
            "padding {pad}: input gradient error {input_grad}"
        );
        assert!(
            weight_grad < 1e-3,
            "padding {pad}: weight gradient error {weight_grad}"
        );
    }
}

#[test]
fn conv2d_large_image_matches_reference() {
    // More output columns than one task's chunk, so chunk boundaries fall inside rows.
    let g = ConvGeometry {
        n: 1,
        c_in: 3,
        c_out: 4,
        h_in: 37,
        w_in: 41,
        k_h: 3,
        k_w: 3,
        pad_h: 0,
        pad_w: 0,
    };
    let mut rng = SeededNormal::new(7);
    let x = rng.tensor(&[1, 3, 37, 41]);
    let w = rng.tensor(&[4, 3, 3, 3]);
    let gy = rng.tensor(&[1, 4, 35, 39]);
    let fast = Var::constant(x.clone())
        .conv2d(&Var::constant(w.clone()), None, 0)
        .unwrap();
    assert!(
        max_abs_diff(
            fast.value().as_slice(),
            &reference::forward(x.as_slice(), w.as_slice(), &g)
        ) < 1e-12
    );
    let fast_gw = singan::ops::conv2d::conv2d_weight_grad(
        &Var::constant(x.clone()),
        &Var::constant(gy.clone()),
        0,
        (3, 3),
    )
    .unwrap();
    assert!(
        max_abs_diff(
            fast_gw.value().as_slice(),
            &reference::weight_grad(x.as_slice(), gy.as_slice(), &g)
        ) < 1e-10
    );
}

/// Runs a conv, batch norm, leaky ReLU and reductions in f32 at a SinGAN-like size and returns
/// every result.
fn pipeline() -> Vec<Tensor<f32>> {
    let mut rng = SeededNormal::new(11);
    let x = Var::param(rng.tensor(&[1, 8, 61, 83]).cast::<f32>());
    let w = Var::param(rng.tensor(&[16, 8, 3, 3]).cast::<f32>());
    let gamma = Var::param(Tensor::<f32>::ones([16]));
    let beta = Var::param(Tensor::<f32>::zeros([16]));
    let y = x.conv2d(&w, None, 0).unwrap();
    let (z, _) = y.batch_norm_train(&gamma, &beta, 1e-5).unwrap();
    let a = z.leaky_relu(0.2).unwrap();
    let loss = a.square().unwrap().mean().unwrap();
    let grads = singan::grad(std::slice::from_ref(&loss), &[x, w, gamma], None, false).unwrap();
    let mut out = vec![y.value().clone(), a.value().clone(), loss.value().clone()];
    out.extend(grads.into_iter().map(|g| g.unwrap().value().clone()));
    out
}

#[test]
fn results_identical_across_thread_counts() {
    let one = with_threads(1, pipeline);
    let three = with_threads(3, pipeline);
    let again = with_threads(3, pipeline);
    for (index, ((a, b), c)) in one.iter().zip(&three).zip(&again).enumerate() {
        assert!(
            a.bitwise_eq(b),
            "result {index} differs between 1 and 3 threads"
        );
        assert!(b.bitwise_eq(c), "result {index} differs between two runs");
    }
}

/// Runs SinGAN's first and last layers in f32 (3 -> 32 and 32 -> 1 channels), whose forward
/// passes and gradients use the direct kernels and Winograd, and returns every result.
fn thin_pipeline() -> Vec<Tensor<f32>> {
    let mut rng = SeededNormal::new(12);
    let x = Var::param(rng.tensor(&[1, 3, 41, 53]).cast::<f32>());
    let w_first = Var::param(rng.tensor(&[32, 3, 3, 3]).cast::<f32>());
    let w_last = Var::param(rng.tensor(&[1, 32, 3, 3]).cast::<f32>());
    let hidden = x
        .conv2d(&w_first, None, 0)
        .unwrap()
        .leaky_relu(0.2)
        .unwrap();
    let y = hidden.conv2d(&w_last, None, 0).unwrap();
    let loss = y.square().unwrap().mean().unwrap();
    let params = [x, w_first, w_last];
    let grads = singan::grad(std::slice::from_ref(&loss), &params, None, false).unwrap();
    let mut out = vec![hidden.value().clone(), y.value().clone()];
    out.extend(grads.into_iter().map(|g| g.unwrap().value().clone()));
    out
}

#[test]
fn thin_conv_identical_across_thread_counts() {
    let single_thread = with_threads(1, thin_pipeline);
    let three_threads = with_threads(3, thin_pipeline);
    for (index, (a, b)) in single_thread.iter().zip(&three_threads).enumerate() {
        assert!(
            a.bitwise_eq(b),
            "result {index} differs between 1 and 3 threads"
        );
    }
}

#[test]
fn sum_of_large_tensor_is_accurate() {
    // 2^20 copies of 0.1 in f32: chunked partial sums keep the error near f32 rounding of the
    // total, far below what one running sum would give.
    let x = Var::constant(Tensor::<f32>::full([1 << 20], 0.1));
    let total = x.sum().unwrap().item().unwrap() as f64;
    let exact = 0.1f32 as f64 * (1 << 20) as f64;
    assert!(
        (total - exact).abs() / exact < 1e-5,
        "sum {total} vs {exact}"
    );
}
