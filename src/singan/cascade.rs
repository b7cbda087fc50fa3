//! The coarse-to-fine cascade: each generator refines the upsampled output of the one below.
//!
//! `y_0 = 0`, and for each scale `k`: `x_k = G_k(y_k + a_k n_k, y_k)`, `y_{k+1} = U_{k+1}(x_k)`.
//! Every pass here runs without a tape, with the generators in inference-mode batch norm. The
//! noise draws and the upsampling run on the cascade's device, so a pass on a GPU copies
//! nothing to or from the host.

use crate::autograd::{no_grad, Var};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::random::draw;
use crate::ops::reduce::broadcast_values;
use crate::ops::resize::resize_cropped;
use crate::rng::{DrawKind, Rng};
use crate::singan::imresize::Planes;
use crate::singan::model::Generator;
use crate::singan::pyramid::{Size, UpsamplePlan};
use crate::tensor::{Device, Tensor};

/// Converts CHW planes to a `(1, C, H, W)` tensor.
pub fn planes_to_tensor<T: Element>(planes: &Planes<f32>) -> Tensor<T> {
    let data = planes.data.iter().map(|&v| T::from_f64(v as f64)).collect();
    Tensor::from_vec([1, planes.channels, planes.height, planes.width], data)
        .expect("planes hold channels * height * width values")
}

/// Converts a `(1, C, H, W)` tensor to CHW planes, copying it from the GPU first when it is
/// there.
pub fn tensor_to_planes<T: Element>(tensor: &Tensor<T>) -> Result<Planes<f32>> {
    let [n, c, h, w] = tensor.dims4("tensor_to_planes", "image")?;
    if n != 1 {
        return Err(Error::shape(
            "tensor_to_planes",
            "expected a single image",
            &[tensor.dims()],
        ));
    }
    let host = tensor.to_cpu()?;
    let data = host.as_slice().iter().map(|v| v.to_f64() as f32).collect();
    Ok(Planes::new(c, h, w, data)?)
}

/// Applies a between-scale upsampling plan to a `(1, C, H, W)` tensor, on its device.
pub fn upsample<T: Element>(x: &Tensor<T>, plan: &UpsamplePlan) -> Result<Tensor<T>> {
    resize_cropped(x, &plan.resize, plan.target)
}

/// Draws the noise map of `scale` at `size` on `device`: one channel repeated over RGB at
/// scale 0, independent channels above it. Shape `(1, 3, H, W)`; the values are f32 standard
/// normals, the same on every device.
pub fn draw_noise<T: Element>(
    rng: &mut Rng,
    scale: usize,
    size: Size,
    device: &Device,
) -> Result<Tensor<T>> {
    let (h, w) = size;
    if scale == 0 {
        let plane = draw::<T>(rng, DrawKind::NormalF32, [1, 1, h, w], device)?;
        return broadcast_values(&plane, &[1, 3, h, w]);
    }
    draw(rng, DrawKind::NormalF32, [1, 3, h, w], device)
}

/// The source of each scale's noise.
pub enum NoiseSource<'a, T: Element> {
    /// Fresh draws from the generator.
    Random(&'a mut Rng),
    /// The stored reconstruction noise of each scale.
    Fixed(&'a [Tensor<T>]),
    /// Stored noise below `start`, fresh draws from `start` on.
    FixedBelow {
        fixed: &'a [Tensor<T>],
        start: usize,
        rng: &'a mut Rng,
    },
}

impl<T: Element> NoiseSource<'_, T> {
    /// Returns the noise of `scale`: a fresh draw on `device`, or the stored map.
    fn noise(&mut self, scale: usize, size: Size, device: &Device) -> Result<Tensor<T>> {
        let fixed_at = |fixed: &[Tensor<T>]| -> Result<Tensor<T>> {
            let noise = fixed.get(scale).ok_or_else(|| {
                Error::Message(format!(
                    "no reconstruction noise is stored for scale {scale}"
                ))
            })?;
            noise.expect_dims("cascade", "reconstruction noise", &[1, 3, size.0, size.1])?;
            Ok(noise.clone())
        };
        match self {
            NoiseSource::Random(rng) => draw_noise(rng, scale, size, device),
            NoiseSource::Fixed(fixed) => fixed_at(fixed),
            NoiseSource::FixedBelow { fixed, start, rng } => {
                if scale < *start {
                    fixed_at(fixed)
                } else {
                    draw_noise(rng, scale, size, device)
                }
            }
        }
    }
}

/// The trained scales with what the cascade needs to run them.
pub struct Cascade<'a, T: Element> {
    pub generators: &'a mut [Generator<T>],
    pub amplitudes: &'a [f64],
    /// The output size of each scale.
    pub sizes: &'a [Size],
    /// The per-scale factor `r` of the pyramid.
    pub scale_factor: f64,
    /// The device of the generators, where the inputs, noises and outputs are created.
    pub device: Device,
}

impl<T: Element> Cascade<'_, T> {
    /// Returns the upsampling plan into scale `k` (from the size of scale `k - 1`).
    pub fn plan_into(&self, k: usize) -> Result<UpsamplePlan> {
        Ok(UpsamplePlan::new(
            self.sizes[k - 1],
            self.scale_factor,
            self.sizes[k],
        )?)
    }

    /// Runs scales `start..=last` from the input `prev` at scale `start` and returns `x_last`.
    pub fn run_from(
        &mut self,
        start: usize,
        last: usize,
        prev: Tensor<T>,
        noise: &mut NoiseSource<'_, T>,
    ) -> Result<Tensor<T>> {
        if last >= self.generators.len() {
            return Err(Error::Message(format!(
                "scale {last} is not trained; the model has {} scales",
                self.generators.len()
            )));
        }
        no_grad(|| {
            let mut prev = prev;
            for k in start..=last {
                if k > start {
                    prev = upsample(&prev, &self.plan_into(k)?)?;
                }
                let n = noise.noise(k, self.sizes[k], &self.device)?;
                let prev_var = Var::constant(prev.clone());
                let z = prev_var.add(&Var::constant(n).mul_scalar(self.amplitudes[k])?)?;
                prev = self.generators[k].forward(&z, &prev_var)?.value().clone();
            }
            Ok(prev)
        })
    }

    /// Returns `x_last`, starting from zeros at scale 0.
    pub fn run(&mut self, last: usize, noise: &mut NoiseSource<'_, T>) -> Result<Tensor<T>> {
        let (h, w) = self.sizes[0];
        let zeros = Tensor::zeros_on([1, 3, h, w], &self.device)?;
        self.run_from(0, last, zeros, noise)
    }

    /// Returns the input `y_k` of scale `k`: zeros at scale 0, else the upsampled `x_{k-1}`.
    pub fn input_at(&mut self, k: usize, noise: &mut NoiseSource<'_, T>) -> Result<Tensor<T>> {
        if k == 0 {
            let (h, w) = self.sizes[0];
            return Tensor::zeros_on([1, 3, h, w], &self.device);
        }
        let below = self.run(k - 1, noise)?;
        upsample(&below, &self.plan_into(k)?)
    }
}
