//! Adam and the step schedule against hand-computed PyTorch updates.

use singan::nn::Param;
use singan::optim::{Adam, AdamConfig, StepLr};
use singan::tensor::Tensor;

#[test]
fn adam_matches_pytorch_rule() {
    let config = AdamConfig {
        lr: 0.1,
        beta1: 0.5,
        beta2: 0.9,
        eps: 1e-8,
    };
    let mut param = Param::new("w", Tensor::from_vec([2], vec![1.0f64, -2.0]).unwrap());
    let mut adam = Adam::new(config, &[&param]);
    let grads = [[0.5, -1.0], [0.25, 2.0]];
    // Reference computed step by step with PyTorch's formula.
    let (mut m, mut v, mut p) = ([0.0f64; 2], [0.0f64; 2], [1.0f64, -2.0]);
    for (step, g) in grads.iter().enumerate() {
        let t = (step + 1) as i32;
        for i in 0..2 {
            m[i] = 0.5 * m[i] + 0.5 * g[i];
            v[i] = 0.9 * v[i] + 0.1 * g[i] * g[i];
            let c1 = 1.0 - 0.5f64.powi(t);
            let c2 = 1.0 - 0.9f64.powi(t);
            p[i] -= (0.1 / c1) * m[i] / (v[i].sqrt() / c2.sqrt() + 1e-8);
        }
        let grad = Tensor::from_vec([2], g.to_vec()).unwrap();
        adam.step(&mut [&mut param], &[Some(grad)]).unwrap();
        let got = param.value().to_vec();
        for i in 0..2 {
            assert!(
                (got[i] - p[i]).abs() < 1e-15,
                "step {t} element {i}: {} vs {}",
                got[i],
                p[i]
            );
        }
    }
    assert_eq!(adam.steps(), 2);
}

#[test]
fn adam_rejects_wrong_gradient_shape() {
    let mut param = Param::new("w", Tensor::<f64>::zeros([2]));
    let mut adam = Adam::new(AdamConfig::default(), &[&param]);
    let error = adam
        .step(&mut [&mut param], &[Some(Tensor::zeros([3]))])
        .unwrap_err();
    assert!(error.to_string().contains("w"), "{error}");
}

#[test]
fn step_schedule_drops_after_step_size() {
    let schedule = StepLr {
        base_lr: 5e-4,
        step_size: 2000,
        gamma: 0.1,
    };
    assert_eq!(schedule.lr_for_iteration(0), 5e-4);
    assert_eq!(schedule.lr_for_iteration(2000), 5e-4);
    assert!((schedule.lr_for_iteration(2001) - 5e-5).abs() < 1e-18);
    assert!((schedule.lr_for_iteration(4000) - 5e-5).abs() < 1e-18);
    assert!((schedule.lr_for_iteration(4001) - 5e-6).abs() < 1e-19);
}
