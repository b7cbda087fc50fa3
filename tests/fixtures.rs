//! Agreement with PyTorch reference values, and fixture files of other sizes and bad files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use singan::autograd::{grad, Var};
use singan::fixtures::{check_dir, FixtureFile, FixtureKind};
use singan::gradcheck::SeededNormal;
use singan::nn::Module;
use singan::singan::loss::gradient_penalty;
use singan::singan::model::{Discriminator, NetConfig};
use singan::tensor::Tensor;

mod common;
use common::TestFolder;

fn shared_fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: reference fixtures not found at {}", dir.display());
        None
    }
}

#[test]
fn shared_fixtures_pass() {
    let Some(dir) = shared_fixtures() else { return };
    let report = check_dir(&dir).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let failures: Vec<_> = report.comparisons.iter().filter(|c| !c.passed()).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    for name in [
        "conv2d",
        "conv2d_valid",
        "batchnorm2d_train",
        "leaky_relu",
        "critic_step",
        "generator_step",
    ] {
        let file = format!("{name}.safetensors");
        let count = report.comparisons.iter().filter(|c| c.file == file).count();
        assert!(count > 0, "{file} was not compared");
    }
}

#[test]
fn critic_step_f64_within_1e9() {
    let Some(dir) = shared_fixtures() else { return };
    let report = check_dir(&dir).unwrap();
    let worst = report
        .comparisons
        .iter()
        .filter(|c| c.file == "critic_step.safetensors" && c.dtype == "f64")
        .map(|c| c.max_rel_error)
        .fold(0.0, f64::max);
    assert!(worst < 1e-9, "worst f64 error {worst}");
}

#[test]
fn trace_is_recognised_not_compared() {
    let Some(dir) = shared_fixtures() else { return };
    let path = dir.join("trace/training_trace.safetensors");
    if !path.exists() {
        eprintln!("skipped: {} not found", path.display());
        return;
    }
    let file = FixtureFile::open(&path).unwrap();
    assert_eq!(
        singan::fixtures::detect_kind(&file).unwrap(),
        FixtureKind::TrainingTrace
    );
}

/// Writes f64 tensors and string metadata as a safetensors file.
fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor<f64>)],
    metadata: HashMap<String, String>,
) {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let data = t.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), data, t.dims().to_vec())
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(name, data, dims)| {
            (
                name.clone(),
                TensorView::new(Dtype::F64, dims.clone(), data).unwrap(),
            )
        })
        .collect();
    let serialized = safetensors::tensor::serialize(views, Some(metadata)).unwrap();
    std::fs::write(path, serialized).unwrap();
}

/// Builds a critic-step file of another width and size, with values from the f64 engine.
fn write_critic_file(path: &Path, width: usize, h: usize, w: usize) {
    let mut rng = SeededNormal::new(5);
    let config = NetConfig {
        max_features: width,
        min_features: width,
        num_blocks: 5,
        kernel_size: 3,
        padding: 0,
    };
    let mut critic = Discriminator::<f64>::new(&config);
    critic.init(&mut || rng.normal()).unwrap();
    let mut rng = SeededNormal::new(6);
    let real = Var::constant(rng.tensor(&[1, 3, h, w]));
    let fake = Var::constant(rng.tensor(&[1, 3, h, w]));
    let alpha = Var::constant(Tensor::from_vec([1, 1, 1, 1], vec![0.3]).unwrap());
    let d_real = critic.forward(&real).unwrap().mean().unwrap();
    let d_fake = critic.forward(&fake).unwrap().mean().unwrap();
    let (penalty, input_grad) = gradient_penalty(&mut critic, &real, &fake, &alpha).unwrap();
    let loss = d_fake
        .sub(&d_real)
        .unwrap()
        .add(&penalty.mul_scalar(0.1).unwrap())
        .unwrap();
    let vars = critic.param_vars();
    let loss_grads = grad(std::slice::from_ref(&loss), &vars, None, false).unwrap();
    let penalty_grads = grad(std::slice::from_ref(&penalty), &vars, None, false).unwrap();

    let mut tensors = vec![
        ("real".to_string(), real.value().clone()),
        ("fake".to_string(), fake.value().clone()),
        (
            "alpha".to_string(),
            Tensor::from_vec([1], vec![0.3]).unwrap(),
        ),
        ("d_real_mean".to_string(), d_real.value().clone()),
        ("d_fake_mean".to_string(), d_fake.value().clone()),
        ("gradient_penalty".to_string(), penalty.value().clone()),
        ("critic_loss".to_string(), loss.value().clone()),
        ("grad_interpolated".to_string(), input_grad.value().clone()),
    ];
    for (param, (g, gp)) in critic
        .params()
        .iter()
        .zip(loss_grads.iter().zip(&penalty_grads))
    {
        let zeros = Tensor::zeros(param.value().shape());
        tensors.push((format!("param.{}", param.name()), param.value().clone()));
        tensors.push((
            format!("grad.{}", param.name()),
            g.as_ref().map_or(zeros.clone(), |g| g.value().clone()),
        ));
        tensors.push((
            format!("gp_grad.{}", param.name()),
            gp.as_ref().map_or(zeros, |g| g.value().clone()),
        ));
    }
    write_safetensors(path, &tensors, HashMap::new());
}

#[test]
fn critic_file_of_other_width_passes() {
    let dir = TestFolder::new("width");
    write_critic_file(&dir.join("critic_wide.safetensors"), 8, 17, 23);
    let report = check_dir(&dir).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.passed(), "{}", report.render());
    // Eight blocks' worth of parameters in two precisions, each with loss and penalty gradients.
    assert!(report.comparisons.len() > 40);
}

#[test]
fn garbage_file_is_reported_not_panicked() {
    let dir = TestFolder::new("garbage");
    std::fs::write(
        dir.join("broken.safetensors"),
        b"definitely not a safetensors file",
    )
    .unwrap();
    let report = check_dir(&dir).unwrap();
    assert!(!report.passed());
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].1.contains("not a valid safetensors file"),
        "{:?}",
        report.errors
    );
}

#[test]
fn truncated_file_is_reported() {
    let Some(dir) = shared_fixtures() else { return };
    let bytes = std::fs::read(dir.join("conv2d.safetensors")).unwrap();
    let out = TestFolder::new("truncated");
    std::fs::write(out.join("conv2d.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let report = check_dir(&out).unwrap();
    assert_eq!(report.errors.len(), 1, "{}", report.render());
}

#[test]
fn unknown_layout_is_reported() {
    let dir = TestFolder::new("unknown");
    write_safetensors(
        &dir.join("other.safetensors"),
        &[("something".into(), Tensor::zeros([2]))],
        HashMap::new(),
    );
    let report = check_dir(&dir).unwrap();
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].1.contains("unknown fixture layout"),
        "{:?}",
        report.errors
    );
}

#[test]
fn missing_or_empty_folder_is_an_error() {
    let missing = std::env::temp_dir().join("singan-no-such-fixture-folder");
    let error = check_dir(&missing).unwrap_err().to_string();
    assert!(error.contains("cannot list"), "{error}");
    let empty = TestFolder::new("empty");
    let error = check_dir(&empty).unwrap_err().to_string();
    assert!(error.contains("no .safetensors"), "{error}");
    let file = empty.write("conv2d.safetensors", b"not read");
    let error = check_dir(&file).unwrap_err().to_string();
    assert!(error.contains("is a file; pass the folder"), "{error}");
}

#[test]
fn folder_of_skipped_files_is_an_error() {
    let Some(dir) = shared_fixtures() else { return };
    let error = check_dir(&dir.join("trace")).unwrap_err().to_string();
    assert!(error.contains("nothing was compared"), "{error}");
    assert!(error.contains("singan check trace"), "{error}");
}

#[test]
fn trace_check_rejects_folder() {
    let dir = TestFolder::new("trace-folder");
    let error = singan::fixtures::trace::check_trace(&dir)
        .unwrap_err()
        .to_string();
    assert!(error.contains("is a folder"), "{error}");
    assert!(error.contains("pass a .safetensors file"), "{error}");
}

#[test]
fn shared_trace_replays_within_tolerance() {
    let Some(dir) = shared_fixtures() else { return };
    let path = dir.join("trace/training_trace.safetensors");
    if !path.exists() {
        eprintln!("skipped: {} not found", path.display());
        return;
    }
    let report = singan::fixtures::trace::check_trace(&path).unwrap();
    let failures: Vec<_> = report.comparisons.iter().filter(|c| !c.passed()).collect();
    assert!(failures.is_empty(), "{failures:#?}");
    // The biases before batch norm are left out of a compared file, which is not a skipped file.
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.left_out.len(), 1, "{:?}", report.left_out);
    assert!(report.render().contains(", 0 files skipped,"));
    for log in [
        "log.critic_loss",
        "log.gradient_penalty",
        "log.generator_loss",
        "log.reconstruction_mse",
    ] {
        assert!(
            report.comparisons.iter().any(|c| c.tensor == log),
            "{log} was not compared"
        );
    }
    // The f32 replay's first-step losses that precede every update are held to the strict
    // tolerance: the critic step's four and the reconstruction MSE.
    let first_steps: Vec<_> = report
        .comparisons
        .iter()
        .filter(|c| c.dtype == "f32" && c.tensor.ends_with("[..1]"))
        .collect();
    assert_eq!(first_steps.len(), 5, "{first_steps:#?}");
    assert!(first_steps
        .iter()
        .all(|c| c.tolerance == singan::fixtures::trace::TRACE_F32_FIRST_STEP_TOLERANCE));
    let final_tensors = report
        .comparisons
        .iter()
        .filter(|c| c.tensor.starts_with("final."))
        .count();
    assert!(
        final_tensors > 40,
        "only {final_tensors} final tensors compared"
    );
}

#[test]
fn trace_check_rejects_op_fixture() {
    let Some(dir) = shared_fixtures() else { return };
    let error = singan::fixtures::trace::check_trace(&dir.join("conv2d.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("not a training trace"), "{error}");
}

/// Copies the shared trace into `folder` as `name`, with `change` applied to its tensors.
fn altered_trace(
    folder: &Path,
    name: &str,
    change: impl FnOnce(&mut Vec<(String, Tensor<f64>)>),
) -> Option<PathBuf> {
    let path = shared_fixtures()?.join("trace/training_trace.safetensors");
    if !path.exists() {
        eprintln!("skipped: {} not found", path.display());
        return None;
    }
    let file = FixtureFile::open(&path).unwrap();
    let mut tensors: Vec<(String, Tensor<f64>)> = file
        .names()
        .into_iter()
        .map(|name| {
            let tensor = file.get_f64(&name).unwrap();
            (name, tensor)
        })
        .collect();
    change(&mut tensors);
    let altered = folder.join(name);
    write_safetensors(&altered, &tensors, file.metadata.clone());
    Some(altered)
}

/// Replays a copy of the shared trace with `change` applied and returns the replay's error,
/// or `None` when the trace is not there.
fn altered_trace_error(
    folder: &str,
    change: impl FnOnce(&mut Vec<(String, Tensor<f64>)>),
) -> Option<String> {
    let dir = TestFolder::new(folder);
    let path = altered_trace(&dir, "trace.safetensors", change)?;
    let error = singan::fixtures::trace::check_trace(&path).unwrap_err();
    Some(error.to_string())
}

#[test]
fn trace_without_final_state_rejected() {
    let Some(error) = altered_trace_error("trace-no-final", |tensors| {
        tensors.retain(|(name, _)| !name.starts_with("final."));
    }) else {
        return;
    };
    assert!(error.contains("tensor final."), "{error}");
    assert!(error.contains("is missing"), "{error}");
}

#[test]
fn trace_missing_last_step_rejected() {
    let Some(error) = altered_trace_error("trace-fewer-steps", |tensors| {
        tensors.retain(|(name, _)| !name.starts_with("step4."));
    }) else {
        return;
    };
    assert!(
        error.contains("has 5 values, but the trace records 4 steps"),
        "{error}"
    );
}

#[test]
fn trace_with_two_amplitudes_rejected() {
    let Some(error) = altered_trace_error("trace-amp", |tensors| {
        for (name, tensor) in tensors.iter_mut() {
            if name == "amp" {
                *tensor = Tensor::from_vec([2], vec![1.0, 1.0]).unwrap();
            }
        }
    }) else {
        return;
    };
    assert!(
        error.contains("tensor amp has 2 values; expected 1"),
        "{error}"
    );
}
