//! Tensors of random values from the Philox stream of [`Rng`], on any device.
//!
//! The CPU fills with [`Rng`]'s own methods, and a GPU runs the matching kernel of
//! `kernels/random.cu` at the stream position that [`Rng::reserve`] returns, so both devices
//! draw the same values and leave the generator at the same offset.

pub(crate) mod cuda;

use crate::element::Element;
use crate::error::Result;
use crate::rng::{DrawKind, Rng};
use crate::tensor::{Device, Shape, Tensor};

/// Draws a tensor of `shape` with values of `kind` from `rng` on `device`, converted to `T`.
///
/// On a GPU the kernel writes `T` directly when `T` has the width of `kind` (f32 for the
/// `*F32` kinds, f64 for the `*F64` kinds). Otherwise the values are drawn on the CPU and copied
/// to the GPU, which gives the same values more slowly.
pub fn draw<T: Element>(
    rng: &mut Rng,
    kind: DrawKind,
    shape: impl Into<Shape>,
    device: &Device,
) -> Result<Tensor<T>> {
    let shape = shape.into();
    if let Device::Cuda(ordinal) = *device {
        if cuda::kernel_writes::<T>(kind) {
            let buffer = cuda::draw::<T>(ordinal, rng, kind, shape.numel())?;
            return Tensor::from_cuda(shape, buffer);
        }
    }
    let numel = shape.numel();
    let data: Vec<T> = match kind {
        DrawKind::UniformF32 | DrawKind::NormalF32 => {
            let mut values = vec![0.0f32; numel];
            if kind == DrawKind::UniformF32 {
                rng.fill_uniform_f32(&mut values);
            } else {
                rng.fill_normal_f32(&mut values);
            }
            values.iter().map(|&v| T::from_f64(f64::from(v))).collect()
        }
        DrawKind::UniformF64 | DrawKind::NormalF64 => {
            let mut values = vec![0.0f64; numel];
            if kind == DrawKind::UniformF64 {
                rng.fill_uniform_f64(&mut values);
            } else {
                rng.fill_normal_f64(&mut values);
            }
            values.iter().map(|&v| T::from_f64(v)).collect()
        }
    };
    Tensor::from_vec_on(shape, data, device)
}
