//! The run folder: the trained model and critic as safetensors files, written atomically.
//!
//! `model.safetensors` contains, for every finished scale `k`, the generator state under
//! `g{k}.` (parameters and batch-norm running statistics), and for every scale of the pyramid
//! the real image `real.{k}` and the fixed reconstruction noise `fixed_noise.{k}`. Its metadata
//! contains the configuration, the pyramid, the noise amplitudes, the number of finished scales
//! and the random generator's state, so sampling and resuming need nothing else. `critic.safetensors`
//! contains the critic of the last finished scale, which the next scale continues from.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::element::Element;
use crate::error::{Error, Result};
use crate::fixtures::FixtureFile;
use crate::nn::Module;
use crate::singan::config::TrainConfig;
use crate::singan::image_io::write_atomic;
use crate::singan::model::{Discriminator, Generator};
use crate::singan::pyramid::Pyramid;
use crate::singan::shell::quote_path;
use crate::tensor::{Device, Tensor};

/// Name of the model file in a run folder.
pub const MODEL_FILE: &str = "model.safetensors";
/// Name of the critic file in a run folder.
pub const CRITIC_FILE: &str = "critic.safetensors";
/// Format tag stored in the metadata, checked on load.
const FORMAT: &str = "singan-run-1";

/// The metadata of a model file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    pub format: String,
    pub config: TrainConfig,
    pub pyramid: Pyramid,
    /// Noise amplitude of each finished scale.
    pub amplitudes: Vec<f64>,
    pub finished_scales: usize,
    /// The training image, or `None` for the built-in sample image.
    pub image: Option<String>,
    /// Random generator state `(seed, offset)` after the last finished scale.
    pub rng_state: (u64, u64),
}

/// A trained (or partly trained) model.
pub struct Model<T: Element> {
    pub info: ModelInfo,
    pub generators: Vec<Generator<T>>,
    /// Real image of every scale, `(1, 3, H_k, W_k)`.
    pub reals: Vec<Tensor<T>>,
    /// Fixed reconstruction noise of every scale, `(1, 3, H_k, W_k)`.
    pub fixed_noises: Vec<Tensor<T>>,
}

impl<T: Element> Model<T> {
    /// Returns true when every scale of the pyramid is trained.
    pub fn is_complete(&self) -> bool {
        self.info.finished_scales == self.info.pyramid.sizes.len()
    }

    /// Returns the device of the model's tensors (the CPU for a model without scales).
    pub fn device(&self) -> Device {
        self.reals
            .first()
            .map(|real| real.device())
            .unwrap_or(Device::Cpu)
    }

    /// Moves the generators, real images and reconstruction noises to `device`.
    pub fn to_device(&mut self, device: &Device) -> Result<()> {
        for generator in &mut self.generators {
            generator.to_device(device)?;
        }
        for tensor in self.reals.iter_mut().chain(&mut self.fixed_noises) {
            *tensor = tensor.to_device(device)?;
        }
        Ok(())
    }
}

/// Serialises named tensors as f32 safetensors with `metadata`, copying GPU tensors to the
/// host first. The bytes do not depend on the device the tensors were on.
fn to_safetensors<T: Element>(
    tensors: &[(String, Tensor<T>)],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let encoded = tensors
        .iter()
        .map(|(name, t)| {
            let host = t.to_cpu()?;
            let bytes = host
                .as_slice()
                .iter()
                .flat_map(|v| (v.to_f64() as f32).to_le_bytes())
                .collect();
            Ok((name.clone(), bytes, t.dims().to_vec()))
        })
        .collect::<Result<Vec<(String, Vec<u8>, Vec<usize>)>>>()?;
    let mut views = Vec::with_capacity(encoded.len());
    for (name, bytes, dims) in &encoded {
        let view = TensorView::new(Dtype::F32, dims.clone(), bytes)
            .map_err(|e| Error::Message(format!("cannot encode tensor {name}: {e}")))?;
        views.push((name.clone(), view));
    }
    safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| Error::Message(format!("cannot encode safetensors: {e}")))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(write_atomic(path, bytes)?)
}

/// Writes `model.safetensors` into `run_dir` atomically.
pub fn save_model<T: Element>(run_dir: &Path, model: &Model<T>) -> Result<()> {
    let mut tensors: Vec<(String, Tensor<T>)> = Vec::new();
    for (k, generator) in model.generators.iter().enumerate() {
        for (name, tensor) in generator.state() {
            tensors.push((format!("g{k}.{name}"), tensor));
        }
    }
    for (k, (real, noise)) in model.reals.iter().zip(&model.fixed_noises).enumerate() {
        tensors.push((format!("real.{k}"), real.clone()));
        tensors.push((format!("fixed_noise.{k}"), noise.clone()));
    }
    let info = serde_json::to_string(&model.info).map_err(|e| Error::Message(e.to_string()))?;
    let metadata = HashMap::from([("singan".to_string(), info)]);
    write_file(
        &run_dir.join(MODEL_FILE),
        &to_safetensors(&tensors, metadata)?,
    )
}

/// Writes the critic of scale `scale` to `critic.safetensors` atomically.
pub fn save_critic<T: Element>(
    run_dir: &Path,
    critic: &Discriminator<T>,
    scale: usize,
) -> Result<()> {
    let tensors: Vec<(String, Tensor<T>)> = critic.state();
    let metadata = HashMap::from([("scale".to_string(), scale.to_string())]);
    write_file(
        &run_dir.join(CRITIC_FILE),
        &to_safetensors(&tensors, metadata)?,
    )
}

/// Loads the critic saved in `run_dir`, with the scale it was trained at.
pub fn load_critic<T: Element>(
    run_dir: &Path,
    padding: usize,
) -> Result<(Discriminator<T>, usize)> {
    let path = run_dir.join(CRITIC_FILE);
    let file = FixtureFile::open(&path)?;
    let scale = file
        .metadata
        .get("scale")
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or_else(|| Error::file(&path, "the critic file has no scale in its metadata"))?;
    let critic = Discriminator::from_state(&|name| file.lookup("", name), padding)?;
    Ok((critic, scale))
}

/// Returns the model file of a run folder, or the path itself when it names a file.
pub fn model_path(run: &Path) -> PathBuf {
    if run.is_dir() {
        run.join(MODEL_FILE)
    } else {
        run.to_path_buf()
    }
}

/// Returns the name of the image format that `bytes` start with, for the formats a user is
/// likely to pass by mistake: the PNG and JPEG inputs and the GIF that `singan animate` writes.
fn image_format_name(bytes: &[u8]) -> Option<&'static str> {
    match image::guess_format(bytes).ok()? {
        image::ImageFormat::Png => Some("PNG"),
        image::ImageFormat::Jpeg => Some("JPEG"),
        image::ImageFormat::Gif => Some("GIF"),
        _ => None,
    }
}

/// Returns the error for `path` when it is an image file where a run folder or model file is
/// expected, and `None` for anything else.
pub fn image_passed_as_run(path: &Path) -> Option<Error> {
    let mut header = [0u8; 16];
    let read = std::fs::File::open(path)
        .and_then(|mut file| std::io::Read::read(&mut file, &mut header))
        .ok()?;
    image_format_name(&header[..read]).map(|format| image_instead_of_model(path, format))
}

/// Builds the error for an image file passed where a trained model is expected. The hint to
/// train on the image is left out for a GIF, which `singan train` does not read.
fn image_instead_of_model(path: &Path, format: &str) -> Error {
    let mut message = format!(
        "{} is a {format} image, not a trained model. Pass the run folder that \
         `singan train` created or the model.safetensors file in it",
        path.display()
    );
    if format != "GIF" {
        message.push_str(&format!(
            ", or train a model on this image with `singan train {}`",
            quote_path(path)
        ));
    }
    Error::Message(message)
}

/// Returns true when `run_dir` is a folder with the log of a training run but no model file.
/// `singan train` writes `log.txt` before the first iteration and the model file only after the
/// first scale finishes, so such a folder belongs to a run that stopped before that.
pub fn stopped_before_first_scale(run_dir: &Path) -> bool {
    run_dir.is_dir()
        && !run_dir.join(MODEL_FILE).exists()
        && (run_dir.join("log.txt").exists() || run_dir.join("losses.jsonl").exists())
}

/// Builds the error for a run folder that [`stopped_before_first_scale`], naming the fix.
pub fn no_finished_scale_error(run_dir: &Path) -> Error {
    Error::file(
        run_dir,
        "this run has no finished scale yet, because its training stopped before the first \
         scale was saved. Train again with `singan train`; to reuse this folder's name with \
         --save, remove the folder first",
    )
}

/// Loads a model from a run folder (or a model file) into host memory; see
/// [`Model::to_device`].
pub fn load_model<T: Element>(run: &Path) -> Result<Model<T>> {
    let path = model_path(run);
    if !path.exists() {
        if stopped_before_first_scale(run) {
            return Err(no_finished_scale_error(run));
        }
        return Err(Error::file(
            &path,
            "no trained model here; pass the run folder that `singan train` printed",
        ));
    }
    let bytes = std::fs::read(&path)
        .map_err(|e| Error::file(&path, format!("cannot read the file: {e}")))?;
    let file = FixtureFile::from_bytes(&path, &bytes).map_err(|error| {
        match image_format_name(&bytes) {
            Some(format) => image_instead_of_model(&path, format),
            None => error,
        }
    })?;
    let raw = file.metadata.get("singan").ok_or_else(|| {
        Error::file(
            &path,
            "not a SinGAN model file (its metadata has no \"singan\" entry)",
        )
    })?;
    let info: ModelInfo = serde_json::from_str(raw)
        .map_err(|e| Error::file(&path, format!("the model metadata is malformed: {e}")))?;
    if info.format != FORMAT {
        return Err(Error::file(
            &path,
            format!(
                "unsupported model format {:?}; expected {FORMAT}",
                info.format
            ),
        ));
    }

    let scales = info.pyramid.sizes.len();
    if info.finished_scales > scales {
        return Err(Error::file(
            &path,
            format!(
                "the model claims {} finished scales but its pyramid has {scales}",
                info.finished_scales
            ),
        ));
    }
    let mut generators = Vec::with_capacity(info.finished_scales);
    for k in 0..info.finished_scales {
        let prefix = format!("g{k}.");
        let mut generator =
            Generator::from_state(&|name| file.lookup(&prefix, name), info.config.padding)
                .map_err(|e| {
                    Error::file(
                        &path,
                        format!("the generator of scale {k} cannot be loaded: {e}"),
                    )
                })?;
        generator.set_training(false);
        generator.set_requires_grad(false);
        generators.push(generator);
    }
    let mut reals = Vec::with_capacity(scales);
    let mut fixed_noises = Vec::with_capacity(scales);
    for (k, &(h, w)) in info.pyramid.sizes.iter().enumerate() {
        // The stored images bound every size the metadata may claim, so a damaged size table
        // is caught here instead of in a huge allocation later.
        for (name, list) in [("real", &mut reals), ("fixed_noise", &mut fixed_noises)] {
            let tensor = file.get::<T>(&format!("{name}.{k}"))?;
            if tensor.dims() != [1, 3, h, w] {
                return Err(Error::file(
                    &path,
                    format!(
                        "the model metadata is malformed: scale {k} is {h}x{w} but {name}.{k} has shape {:?}",
                        tensor.dims()
                    ),
                ));
            }
            list.push(tensor);
        }
    }
    let damaged = |what: String| {
        Error::file(
            &path,
            format!(
                "{what} holds NaN or an infinity, so every image drawn from this model would be \
                 wrong; train again (if the losses grew without bound, with a lower learning \
                 rate) or restore the file from a copy"
            ),
        )
    };
    if let Some(name) = file.non_finite_tensor() {
        return Err(damaged(format!("tensor {name}")));
    }
    if let Some(k) = info.amplitudes.iter().position(|a| !a.is_finite()) {
        return Err(damaged(format!("the noise amplitude of scale {k}")));
    }
    if info.amplitudes.len() != info.finished_scales {
        return Err(Error::file(
            &path,
            format!(
                "the model stores {} amplitudes for {} finished scales",
                info.amplitudes.len(),
                info.finished_scales
            ),
        ));
    }
    Ok(Model {
        info,
        generators,
        reals,
        fixed_noises,
    })
}

/// Builds a fresh model record for a new run.
pub fn new_model_info(config: &TrainConfig, pyramid: &Pyramid, image: Option<String>) -> ModelInfo {
    ModelInfo {
        format: FORMAT.to_string(),
        config: config.clone(),
        pyramid: pyramid.clone(),
        amplitudes: Vec::new(),
        finished_scales: 0,
        image,
        rng_state: (config.seed, 0),
    }
}

/// One line of `losses.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LossRecord {
    pub scale: usize,
    pub iteration: usize,
    pub lr: f64,
    #[serde(flatten)]
    pub values: BTreeMap<String, f64>,
}
