//! End-to-end training on a tiny image: losses, files, sampling, resuming and bad input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use singan::nn::Module;
use singan::rng::Rng;
use singan::singan::config::TrainConfig;
use singan::singan::imresize::Planes;
use singan::singan::run::load_model;
use singan::singan::sample::{sample, SampleOptions};
use singan::singan::step::LossKind;
use singan::singan::train::{train, Reporter, TrainJob};
use singan::Device;

mod common;
use common::{read_losses, TestFolder};

/// Draws a 40x52 image with smooth colour gradients and a few discs.
fn test_image() -> Planes<f32> {
    let (h, w) = (40, 52);
    let mut data = vec![0.0f32; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            let disc =
                [(10.0, 12.0), (28.0, 30.0), (15.0, 42.0)]
                    .iter()
                    .any(|&(cy, cx): &(f32, f32)| {
                        (y as f32 - cy).powi(2) + (x as f32 - cx).powi(2) < 25.0
                    });
            let base = [y as f32 / h as f32, x as f32 / w as f32, 0.5];
            for c in 0..3 {
                let v = if disc { 1.0 - base[c] } else { base[c] };
                data[(c * h + y) * w + x] = 2.0 * v - 1.0;
            }
        }
    }
    Planes::new(3, h, w, data).unwrap()
}

fn small_config(loss: LossKind) -> TrainConfig {
    TrainConfig {
        num_steps: 24,
        max_features: 8,
        min_features: 8,
        print_every: 8,
        eval_every: 12,
        seed: 3,
        loss,
        penalty_weight: if loss == LossKind::Wgan { 0.1 } else { 0.0 },
        ..TrainConfig::default()
    }
}

/// Creates a test folder for `name` and returns it with the path of a run folder inside it,
/// which training creates.
fn run_dir(name: &str) -> (TestFolder, PathBuf) {
    let folder = TestFolder::new(name);
    let run = folder.join("run");
    (folder, run)
}

/// Records what the trainer reports, and can request a stop after a given scale.
#[derive(Default)]
struct Recorder {
    started: Vec<usize>,
    finished: Vec<usize>,
    stop_after: Option<usize>,
    stop: Option<&'static AtomicBool>,
}

impl Reporter for Recorder {
    fn scale_started(
        &mut self,
        scale: usize,
        _size: (usize, usize),
        _width: usize,
        _amplitude: f64,
        _iterations: usize,
    ) {
        self.started.push(scale);
    }
    fn iteration(&mut self, _scale: usize, _iteration: usize, _losses: &BTreeMap<String, f64>) {}
    fn line(&mut self, _text: &str) {}
    fn scale_finished(&mut self, scale: usize, _seconds: f64) {
        self.finished.push(scale);
        if self.stop_after == Some(scale) {
            if let Some(stop) = self.stop {
                stop.store(true, Ordering::SeqCst);
            }
        }
    }
}

fn job(config: TrainConfig, dir: &Path) -> TrainJob {
    TrainJob {
        config,
        image: test_image(),
        image_name: None,
        run_dir: dir.to_path_buf(),
        device: Device::Cpu,
    }
}

fn png_size(path: &Path) -> (u32, u32) {
    let image = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (image.height(), image.width())
}

fn check_run(loss: LossKind) {
    let (_folder, dir) = run_dir(&format!("{loss:?}"));
    let stop = AtomicBool::new(false);
    let (model, summaries) = train(
        &job(small_config(loss), &dir),
        false,
        &mut Recorder::default(),
        &stop,
    )
    .unwrap();
    let sizes = model.info.pyramid.sizes.clone();
    assert!(sizes.len() >= 3, "pyramid {sizes:?}");
    assert_eq!(summaries.len(), sizes.len());
    assert!(model.is_complete());

    // Every logged loss is finite.
    let records = read_losses(&dir);
    assert_eq!(records.len(), sizes.len() * 25);
    for record in &records {
        for (name, value) in &record.values {
            assert!(
                value.is_finite(),
                "{name} at scale {} iteration {}",
                record.scale,
                record.iteration
            );
        }
    }

    // The reconstruction error falls at the coarsest scale.
    let recon: Vec<f64> = records
        .iter()
        .filter(|r| r.scale == 0)
        .map(|r| r.values["G_recon"])
        .collect();
    let early = recon[..5].iter().sum::<f64>() / 5.0;
    let late = recon[recon.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(
        late < early,
        "reconstruction MSE went from {early} to {late}"
    );

    // Files: model, critic, logs, and per scale the images at that scale's size.
    for file in [
        "model.safetensors",
        "critic.safetensors",
        "log.txt",
        "losses.jsonl",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    for (k, &(h, w)) in sizes.iter().enumerate() {
        let scale_dir = dir.join(format!("s{k}"));
        assert_eq!(
            png_size(&scale_dir.join("reconstruction.png")),
            (h as u32, w as u32)
        );
        assert_eq!(
            png_size(&scale_dir.join("s0_fixed.png")),
            (h as u32, w as u32)
        );
        assert_eq!(
            png_size(&scale_dir.join("s24_sampled.png")),
            (h as u32, w as u32)
        );
        // Eight samples in a grid of four columns.
        assert_eq!(
            png_size(&scale_dir.join("samples.png")),
            (2 * h as u32, 4 * w as u32)
        );
        assert!(scale_dir.join("losses.png").is_file());
    }
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains("Scale 0: "), "{log}");
    assert!(log.contains("Iteration 24, D: "), "{log}");
}

#[test]
fn wgan_run_trains_every_scale() {
    check_run(LossKind::Wgan);
}

#[test]
fn bce_run_trains_every_scale() {
    check_run(LossKind::Bce);
}

#[test]
fn samples_at_other_sizes_and_start_scale() {
    let (_folder, dir) = run_dir("sample");
    let stop = AtomicBool::new(false);
    train(
        &job(small_config(LossKind::Wgan), &dir),
        false,
        &mut Recorder::default(),
        &stop,
    )
    .unwrap();
    let mut model = load_model::<f32>(&dir).unwrap();
    let (h, w) = *model.info.pyramid.sizes.last().unwrap();
    let mut rng = Rng::new(1);

    let same = sample(&mut model, &SampleOptions::default(), &mut rng).unwrap();
    assert_eq!(same.dims(), [1, 3, h, w]);
    assert!(same
        .as_slice()
        .iter()
        .all(|v| v.is_finite() && v.abs() <= 2.0));

    let wide = SampleOptions {
        scale_h: 1.0,
        scale_w: 1.5,
        start_scale: 0,
    };
    let image = sample(&mut model, &wide, &mut rng).unwrap();
    assert_eq!(image.dims(), [1, 3, h, (1.5 * w as f64).round() as usize]);

    let from_scale = SampleOptions {
        start_scale: 2,
        ..SampleOptions::default()
    };
    let image = sample(&mut model, &from_scale, &mut rng).unwrap();
    assert_eq!(image.dims(), [1, 3, h, w]);

    let pixels = SampleOptions {
        scale_w: 200.0,
        ..SampleOptions::default()
    };
    let error = sample(&mut model, &pixels, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(error.contains("looks like a pixel count"), "{error}");

    let past = SampleOptions {
        start_scale: 99,
        ..SampleOptions::default()
    };
    assert!(sample(&mut model, &past, &mut rng).is_err());
}

#[test]
fn resume_matches_uninterrupted_run() {
    static STOP: AtomicBool = AtomicBool::new(false);
    let config = small_config(LossKind::Wgan);

    let (_whole_folder, whole_dir) = run_dir("whole");
    let (whole, _) = train(
        &job(config.clone(), &whole_dir),
        false,
        &mut Recorder::default(),
        &AtomicBool::new(false),
    )
    .unwrap();

    let (_folder, dir) = run_dir("resumed");
    let mut stopper = Recorder {
        stop_after: Some(1),
        stop: Some(&STOP),
        ..Recorder::default()
    };
    let error = train(&job(config.clone(), &dir), false, &mut stopper, &STOP)
        .err()
        .expect("the run should stop");
    assert!(
        matches!(error, singan::Error::Interrupted { finished: 2, .. }),
        "{error}"
    );
    let partial = load_model::<f32>(&dir).unwrap();
    assert_eq!(partial.info.finished_scales, 2);
    assert!(!partial.is_complete());

    STOP.store(false, Ordering::SeqCst);
    let mut recorder = Recorder::default();
    let (resumed, _) = train(&job(config, &dir), true, &mut recorder, &STOP).unwrap();
    assert_eq!(
        recorder.started.first(),
        Some(&2),
        "resume must continue at scale 2"
    );
    assert!(resumed.is_complete());
    // Each iteration is logged once, even for the scale that was cut short and redone.
    assert_eq!(read_losses(&dir).len(), read_losses(&whole_dir).len());
    for (k, (a, b)) in whole.generators.iter().zip(&resumed.generators).enumerate() {
        for ((name, x), (_, y)) in a.state().iter().zip(b.state()) {
            assert!(x.bitwise_eq(&y), "scale {k} {name} differs after resume");
        }
    }
}

#[test]
fn non_finite_loss_stops_with_scale_and_iteration() {
    let (_folder, dir) = run_dir("nan");
    let mut image = test_image();
    image.data[17] = f32::NAN;
    let job = TrainJob {
        config: small_config(LossKind::Wgan),
        image,
        image_name: None,
        run_dir: dir.clone(),
        device: Device::Cpu,
    };
    let error = train(
        &job,
        false,
        &mut Recorder::default(),
        &AtomicBool::new(false),
    )
    .err()
    .expect("NaN must stop training");
    let message = error.to_string();
    assert!(message.contains("scale 0"), "{message}");
    assert!(message.contains("iteration 0"), "{message}");
    assert!(message.contains("NaN"), "{message}");
}

/// Overwrites the first value of the first tensor whose name starts with `prefix` in the
/// safetensors file at `path` with an f32 NaN, leaving the rest of the file as it was.
fn poison_tensor(path: &Path, prefix: &str) -> String {
    let mut bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let (name, entry) = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(name, _)| name.starts_with(prefix))
        .unwrap();
    assert_eq!(entry["dtype"], "F32");
    let start = 8 + header_len + entry["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
    name.clone()
}

#[test]
fn model_with_nan_weight_is_rejected() {
    let (_folder, dir) = run_dir("nan-model");
    let stop = AtomicBool::new(false);
    let config = TrainConfig {
        num_steps: 4,
        ..small_config(LossKind::Wgan)
    };
    train(&job(config, &dir), false, &mut Recorder::default(), &stop).unwrap();
    let name = poison_tensor(&dir.join("model.safetensors"), "g0.");
    let error = load_model::<f32>(&dir).err().unwrap().to_string();
    assert!(error.contains(&format!("tensor {name}")), "{error}");
    assert!(error.contains("NaN or an infinity"), "{error}");
    assert!(error.contains("train again"), "{error}");
}
