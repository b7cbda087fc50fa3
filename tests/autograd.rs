//! Tape semantics: accumulation, detach, no-grad mode, create_graph and error cases.

use singan::autograd::{grad, no_grad, Var};
use singan::tensor::Tensor;

fn vector(values: &[f64]) -> Tensor<f64> {
    Tensor::from_vec([values.len()], values.to_vec()).unwrap()
}

#[test]
fn backward_accumulates_across_calls() {
    let x = Var::param(vector(&[1.0, 2.0, 3.0]));
    // d/dx sum(x^2) = 2x; two backward calls add up to 4x.
    x.square().unwrap().sum().unwrap().backward().unwrap();
    x.square().unwrap().sum().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![4.0, 8.0, 12.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
}

#[test]
fn shared_input_sums_both_paths() {
    let x = Var::param(vector(&[2.0]));
    // y = x * x + 3x, dy/dx = 2x + 3 = 7 at x = 2.
    let y = x.mul(&x).unwrap().add(&x.mul_scalar(3.0).unwrap()).unwrap();
    let g = grad(&[y], &[x], None, false).unwrap();
    assert_eq!(g[0].as_ref().unwrap().value().to_vec(), vec![7.0]);
}

#[test]
fn detach_blocks_gradient() {
    let x = Var::param(vector(&[3.0]));
    let y = x.mul(&x.detach()).unwrap();
    // Only the first factor is tracked: dy/dx = detached x = 3.
    let g = grad(&[y], &[x], None, false).unwrap();
    assert_eq!(g[0].as_ref().unwrap().value().to_vec(), vec![3.0]);
}

#[test]
fn no_grad_records_nothing() {
    let x = Var::param(vector(&[1.0, 2.0]));
    let y = no_grad(|| x.square().unwrap());
    assert!(!y.requires_grad());
    assert!(y.is_leaf());
    let z = x.square().unwrap();
    assert!(z.requires_grad());
}

#[test]
fn unused_input_has_no_gradient() {
    let x = Var::param(vector(&[1.0]));
    let unused = Var::param(vector(&[5.0]));
    let g = grad(&[x.square().unwrap()], &[x, unused], None, false).unwrap();
    assert!(g[0].is_some());
    assert!(g[1].is_none());
}

#[test]
fn create_graph_allows_third_derivative() {
    // f = x^4: f' = 4x^3, f'' = 12x^2, f''' = 24x; at x = 0.5 these are 0.5, 3 and 12.
    let x = Var::param(vector(&[0.5]));
    let f = x.square().unwrap().square().unwrap();
    let d1 = grad(&[f], std::slice::from_ref(&x), None, true).unwrap()[0]
        .clone()
        .unwrap();
    let d2 = grad(
        std::slice::from_ref(&d1),
        std::slice::from_ref(&x),
        None,
        true,
    )
    .unwrap()[0]
        .clone()
        .unwrap();
    let d3 = grad(
        std::slice::from_ref(&d2),
        std::slice::from_ref(&x),
        None,
        false,
    )
    .unwrap()[0]
        .clone()
        .unwrap();
    assert!((d1.item().unwrap() - 0.5).abs() < 1e-12);
    assert!((d2.item().unwrap() - 3.0).abs() < 1e-12);
    assert!((d3.item().unwrap() - 12.0).abs() < 1e-12);
}

#[test]
fn without_create_graph_result_is_constant() {
    let x = Var::param(vector(&[0.5]));
    let f = x.square().unwrap();
    let d1 = grad(&[f], &[x], None, false).unwrap()[0].clone().unwrap();
    assert!(!d1.requires_grad());
}

#[test]
fn grad_outputs_weight_the_outputs() {
    let x = Var::param(vector(&[1.0, 2.0]));
    let y = x.mul_scalar(3.0).unwrap();
    let weights = Var::constant(vector(&[10.0, -1.0]));
    let g = grad(&[y], &[x], Some(&[weights]), false).unwrap();
    assert_eq!(g[0].as_ref().unwrap().value().to_vec(), vec![30.0, -3.0]);
}

#[test]
fn non_scalar_backward_is_rejected() {
    let x = Var::param(vector(&[1.0, 2.0]));
    let error = x.square().unwrap().backward().unwrap_err();
    assert!(error.to_string().contains("one-element output"), "{error}");
}

#[test]
fn mismatched_grad_outputs_are_rejected() {
    let x = Var::param(vector(&[1.0, 2.0]));
    let y = x.square().unwrap();
    let wrong = Var::constant(vector(&[1.0, 2.0, 3.0]));
    let error = grad(&[y], &[x], Some(&[wrong]), false).unwrap_err();
    assert!(error.to_string().contains("grad_outputs"), "{error}");
}

#[test]
fn shape_errors_name_op_and_shapes() {
    let x = Var::param(Tensor::<f64>::zeros([1, 3, 25, 34]));
    let w = Var::param(Tensor::<f64>::zeros([32, 64, 3, 3]));
    let error = x.conv2d(&w, None, 0).unwrap_err().to_string();
    assert!(error.contains("conv2d"), "{error}");
    assert!(error.contains("3 channels"), "{error}");
    assert!(error.contains("[1, 3, 25, 34]"), "{error}");
    assert!(error.contains("[32, 64, 3, 3]"), "{error}");
}

#[test]
fn broadcast_mismatch_is_an_error() {
    let a = Var::constant(Tensor::<f64>::zeros([2, 3]));
    let b = Var::constant(Tensor::<f64>::zeros([4]));
    assert!(a.add(&b).is_err());
}

#[test]
fn graph_is_freed_with_its_output() {
    let x = Var::param(vector(&[1.0, 2.0]));
    let weak_probe = {
        let y = x.square().unwrap();
        let z = y.sum().unwrap();
        drop(y);
        // z keeps the square node alive through its inputs.
        z
    };
    drop(weak_probe);
    // x is still usable and has no accumulated state from the dropped graph.
    assert!(x.grad().is_none());
}

/// Differentiates `sum(r * block(x))` and, as a gradient penalty does, `sum(v * d/dx)`.
/// Returns three lists: the output and the first derivatives (unrecorded, then the recorded
/// `d/dx` alone), the second derivatives with respect to `(x, weight, bias)` unrecorded, and the
/// same recorded. The bias gets no second-order gradient (`None`), because the ReLU mask counts
/// as a constant.
fn block_derivatives(
    block: impl Fn(&Var<f64>, &Var<f64>, &Var<f64>) -> Var<f64>,
) -> [Vec<Option<Tensor<f64>>>; 3] {
    let mut rng = singan::gradcheck::SeededNormal::new(11);
    let dims = [2, 3, 5, 4];
    let x = Var::param(rng.tensor(&dims));
    let weight = Var::param(rng.tensor(&[3]));
    let bias = Var::param(rng.tensor(&[3]));
    let r = Var::constant(rng.tensor(&dims));
    let v = Var::constant(rng.tensor(&dims));
    let inputs = [x.clone(), weight.clone(), bias.clone()];
    let y = block(&x, &weight, &bias);
    let loss = y.mul(&r).unwrap().sum().unwrap();
    let plain = grad(std::slice::from_ref(&loss), &inputs, None, false).unwrap();
    // Recorded with respect to the input alone, as in the penalty, so the closed-form op runs.
    let first = grad(&[loss], &inputs[..1], None, true).unwrap();
    let penalty = first[0].as_ref().unwrap().mul(&v).unwrap().sum().unwrap();
    let second = grad(std::slice::from_ref(&penalty), &inputs, None, false).unwrap();
    let second_recorded = grad(&[penalty], &inputs, None, true).unwrap();
    let values = |grads: &[Option<Var<f64>>]| -> Vec<Option<Tensor<f64>>> {
        grads
            .iter()
            .map(|g| g.as_ref().map(|g| g.value().clone()))
            .collect()
    };
    let mut first_order = vec![Some(y.value().clone())];
    first_order.extend(values(&plain));
    first_order.extend(values(&first));
    [first_order, values(&second), values(&second_recorded)]
}

/// Returns the largest difference between two lists of optional tensors, or a message when
/// one has a tensor where the other has none.
fn largest_difference(a: &[Option<Tensor<f64>>], b: &[Option<Tensor<f64>>]) -> f64 {
    let mut largest = 0.0f64;
    for (index, (a, b)) in a.iter().zip(b).enumerate() {
        assert_eq!(
            a.is_some(),
            b.is_some(),
            "tensor {index} is missing on one side"
        );
        let (Some(a), Some(b)) = (a, b) else { continue };
        for (p, q) in a.as_slice().iter().zip(b.as_slice()) {
            largest = largest.max((p - q).abs());
        }
    }
    largest
}

#[test]
fn fused_batch_norm_relu_matches_two_ops() {
    let fused =
        block_derivatives(|x, w, b| x.batch_norm_train_leaky_relu(w, b, 1e-5, 0.2).unwrap().0);
    let composed = block_derivatives(|x, w, b| {
        let normalized = x.batch_norm_train(w, b, 1e-5).unwrap().0;
        normalized.leaky_relu(0.2).unwrap()
    });
    for (order, (a, b)) in fused.iter().zip(&composed).enumerate() {
        let error = largest_difference(a, b);
        assert!(error < 1e-12, "list {order}: off by {error}");
    }
}

#[test]
fn recorded_second_order_matches_unrecorded() {
    // Unrecorded, the penalty's gradient runs the closed-form kernel; recorded, its taped form.
    let block =
        |x: &Var<f64>, w: &Var<f64>, b: &Var<f64>| x.batch_norm_train(w, b, 1e-5).unwrap().0;
    let [_, unrecorded, recorded] = block_derivatives(block);
    let scale = unrecorded
        .iter()
        .flatten()
        .flat_map(|t| t.as_slice().iter().map(|v| v.abs()))
        .fold(0.0f64, f64::max);
    let error = largest_difference(&unrecorded, &recorded);
    assert!(
        error <= 1e-10 * scale.max(1.0),
        "off by {error} (largest value {scale})"
    );
}
