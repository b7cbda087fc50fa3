//! The coarse-to-fine cascade: each generator refines the upsampled output of the one below.
//!
//! `y_0 = 0`, and for each scale `k`: `x_k = G_k(y_k + a_k n_k, y_k)`, `y_{k+1} = U_{k+1}(x_k)`.
//! Every pass here runs without a tape, with the generators in inference-mode batch norm.

use crate::autograd::{no_grad, Var};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::singan::imresize::Planes;
use crate::singan::model::Generator;
use crate::singan::pyramid::{Size, UpsamplePlan};
use crate::tensor::Tensor;

/// Converts CHW planes to a `(1, C, H, W)` tensor.
pub fn planes_to_tensor<T: Element>(planes: &Planes<f32>) -> Tensor<T> {
    let data = planes.data.iter().map(|&v| T::from_f64(v as f64)).collect();
    Tensor::from_vec([1, planes.channels, planes.height, planes.width], data)
        .expect("planes hold channels * height * width values")
}

/// Converts a `(1, C, H, W)` tensor to CHW planes.
pub fn tensor_to_planes<T: Element>(tensor: &Tensor<T>) -> Result<Planes<f32>> {
    let [n, c, h, w] = tensor.dims4("tensor_to_planes", "image")?;
    if n != 1 {
        return Err(Error::shape(
            "tensor_to_planes",
            "expected a single image",
            &[tensor.dims()],
        ));
    }
    let data = tensor
        .as_slice()
        .iter()
        .map(|v| v.to_f64() as f32)
        .collect();
    Ok(Planes::new(c, h, w, data)?)
}

/// Applies a between-scale upsampling plan to a `(1, C, H, W)` tensor.
pub fn upsample<T: Element>(x: &Tensor<T>, plan: &UpsamplePlan) -> Result<Tensor<T>> {
    let planes = tensor_to_planes(x)?;
    Ok(planes_to_tensor(&plan.apply(&planes)?))
}

/// Draws the noise map of `scale` at `size`: one channel repeated over RGB at scale 0,
/// independent channels above it. Shape `(1, 3, H, W)`.
pub fn draw_noise<T: Element>(rng: &mut Rng, scale: usize, size: Size) -> Tensor<T> {
    let (h, w) = size;
    let plane = h * w;
    let mut values = vec![0.0f32; if scale == 0 { plane } else { 3 * plane }];
    rng.fill_normal_f32(&mut values);
    let data: Vec<T> = if scale == 0 {
        values
            .iter()
            .cycle()
            .take(3 * plane)
            .map(|&v| T::from_f64(v as f64))
            .collect()
    } else {
        values.iter().map(|&v| T::from_f64(v as f64)).collect()
    };
    Tensor::from_vec([1, 3, h, w], data).expect("noise has 3 * H * W values")
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
    fn noise(&mut self, scale: usize, size: Size) -> Result<Tensor<T>> {
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
            NoiseSource::Random(rng) => Ok(draw_noise(rng, scale, size)),
            NoiseSource::Fixed(fixed) => fixed_at(fixed),
            NoiseSource::FixedBelow { fixed, start, rng } => {
                if scale < *start {
                    fixed_at(fixed)
                } else {
                    Ok(draw_noise(rng, scale, size))
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
                let n = noise.noise(k, self.sizes[k])?;
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
        self.run_from(0, last, Tensor::zeros([1, 3, h, w]), noise)
    }

    /// Returns the input `y_k` of scale `k`: zeros at scale 0, else the upsampled `x_{k-1}`.
    pub fn input_at(&mut self, k: usize, noise: &mut NoiseSource<'_, T>) -> Result<Tensor<T>> {
        if k == 0 {
            let (h, w) = self.sizes[0];
            return Ok(Tensor::zeros([1, 3, h, w]));
        }
        let below = self.run(k - 1, noise)?;
        upsample(&below, &self.plan_into(k)?)
    }
}
