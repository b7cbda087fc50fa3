//! Property tests: every op's analytic gradients, first and second order, against central
//! differences in f64, on random shapes that include 1 and odd sizes.

use proptest::prelude::*;
use singan::autograd::Var;
use singan::gradcheck::{all_cases, check, CaseDims, CheckSettings, CheckSetup};
use singan::tensor::Tensor;

/// Random case sizes: batch 1 or 2, 1 to 4 channels, odd and even spatial sizes from 1 up, and
/// kernels 1 to 3 with padding that keeps the output non-empty.
fn case_dims() -> impl Strategy<Value = CaseDims> {
    (
        1usize..=2,
        1usize..=4,
        1usize..=4,
        1usize..=7,
        1usize..=7,
        1usize..=3,
        0usize..=2,
        any::<u64>(),
    )
        .prop_filter_map(
            "kernel larger than the padded input",
            |(n, c_in, c_out, h, w, kernel, padding, seed)| {
                let dims = CaseDims {
                    n,
                    c_in,
                    c_out,
                    h,
                    w,
                    kernel,
                    padding,
                    seed,
                };
                (h + 2 * padding >= kernel && w + 2 * padding >= kernel).then_some(dims)
            },
        )
}

fn run_case(name: &str, order: u8, dims: &CaseDims) -> Result<(), TestCaseError> {
    let cases = all_cases();
    let case = cases
        .iter()
        .find(|c| c.name == name && c.order == order)
        .unwrap_or_else(|| panic!("no gradient case {name} of order {order}"));
    let setup = case.setup(dims);
    let report =
        check(&setup, &CheckSettings::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(
        report.passed(),
        "{name} order {order} at {dims:?}: {}",
        report.describe_failure()
    );
    Ok(())
}

macro_rules! grad_tests {
    ($cases:expr; $($test:ident: $name:literal, $order:literal;)*) => {
        $(
            proptest! {
                #![proptest_config(ProptestConfig { cases: $cases, ..ProptestConfig::default() })]
                #[test]
                fn $test(dims in case_dims()) {
                    run_case($name, $order, &dims)?;
                }
            }
        )*
    };
}

grad_tests! { 12;
    conv2d_first_order: "conv2d", 1;
    conv2d_input_grad_first_order: "conv2d_input_grad", 1;
    conv2d_weight_grad_first_order: "conv2d_weight_grad", 1;
    batch_norm_train_first_order: "batch_norm_train", 1;
    batch_norm_eval_first_order: "batch_norm_eval", 1;
    leaky_relu_first_order: "leaky_relu", 1;
    tanh_first_order: "tanh", 1;
    sigmoid_first_order: "sigmoid", 1;
    softplus_first_order: "softplus", 1;
    add_first_order: "add", 1;
    sub_first_order: "sub", 1;
    mul_first_order: "mul", 1;
    div_first_order: "div", 1;
    scalar_ops_first_order: "scalar_ops", 1;
    square_first_order: "square", 1;
    sqrt_first_order: "sqrt", 1;
    reciprocal_or_zero_first_order: "reciprocal_or_zero", 1;
    pad_first_order: "pad", 1;
    crop_first_order: "crop", 1;
    reshape_first_order: "reshape", 1;
    broadcast_to_first_order: "broadcast_to", 1;
    sum_first_order: "sum", 1;
    sum_axes_first_order: "sum_axes", 1;
    mean_first_order: "mean", 1;
    mean_axes_first_order: "mean_axes", 1;
    channel_norm_first_order: "channel_norm", 1;
    mse_first_order: "mse", 1;
    bce_first_order: "bce_with_logits", 1;
}

grad_tests! { 8;
    conv2d_second_order: "conv2d", 2;
    conv2d_input_grad_second_order: "conv2d_input_grad", 2;
    conv2d_weight_grad_second_order: "conv2d_weight_grad", 2;
    batch_norm_train_second_order: "batch_norm_train", 2;
    leaky_relu_second_order: "leaky_relu", 2;
    tanh_second_order: "tanh", 2;
    channel_norm_second_order: "channel_norm", 2;
    square_second_order: "square", 2;
    mean_second_order: "mean", 2;
}

grad_tests! { 3;
    gradient_penalty_second_order: "gradient_penalty", 2;
    batch_norm_input_grad_second_order: "batch_norm_input_grad", 2;
    batch_norm_input_grad_third_order: "batch_norm_input_grad", 3;
}

#[test]
fn every_case_has_a_test() {
    let source = include_str!("gradcheck.rs");
    for case in all_cases() {
        let entry = format!("\"{}\", {};", case.name, case.order);
        assert!(
            source.contains(&entry),
            "no proptest for {} order {}",
            case.name,
            case.order
        );
    }
}

/// Computes x^2 with a deliberately wrong backward that returns x instead of 2x.
fn wrong_square(x: &Var<f64>) -> singan::Result<Var<f64>> {
    let value = Tensor::from_vec(
        x.dims(),
        x.value().as_slice().iter().map(|v| v * v).collect(),
    )?;
    Ok(Var::from_op("wrong_square", value, &[x], |args| {
        Ok(vec![Some(args.grad_output.mul(&args.inputs[0])?)])
    }))
}

#[test]
fn checker_rejects_wrong_gradient() {
    let x = Tensor::from_vec([2, 3], vec![0.5, -1.0, 2.0, 0.25, -0.75, 1.5]).unwrap();
    let setup = CheckSetup {
        inputs: vec![x],
        loss: Box::new(|v: &[Var<f64>]| wrong_square(&v[0])?.sum()),
    };
    let report = check(&setup, &CheckSettings::default()).unwrap();
    assert!(!report.passed(), "the checker accepted d(x^2)/dx = x");
    assert!(report.max_rel_error() > 0.4);
}

#[test]
fn checker_rejects_too_small_step() {
    // A step of 1e-13 leaves only rounding noise in the central difference.
    let case = all_cases()
        .into_iter()
        .find(|c| c.name == "tanh" && c.order == 1)
        .unwrap();
    let setup = case.setup(&CaseDims::default());
    let settings = CheckSettings {
        step: 1e-13,
        ..CheckSettings::default()
    };
    let report = check(&setup, &settings).unwrap();
    assert!(!report.passed(), "a 1e-13 step should be too noisy to pass");
}
