//! The MATLAB-style bicubic resize of `src/singan/imresize.rs` applied to NCHW tensors, on the
//! tensor's device.
//!
//! The resize is not differentiable and records nothing on the tape: the cascade uses it
//! between frozen scales, where no gradient flows. On the CPU it runs [`ResizePlan::apply`]
//! on every plane. On a GPU it runs the two passes of `kernels/resize.cu`, which compute in f64
//! in the same order, so both devices return the same bits.

pub(crate) mod cuda;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::singan::imresize::{Planes, ResizePlan};
use crate::tensor::Tensor;

/// Resizes every `(H, W)` plane of the `(N, C, H, W)` tensor `x` with `plan` and keeps the
/// top-left `size` (height, width) window of the result, on `x`'s device.
///
/// `x` must be `plan.in_height x plan.in_width`, and `size` must not exceed the plan's output
/// size. Sums are computed in f64 for both element types and rounded once to `T`, so f32
/// results equal those of [`ResizePlan::apply`] on `Planes<f32>` bit for bit.
pub fn resize_cropped<T: Element>(
    x: &Tensor<T>,
    plan: &ResizePlan,
    size: (usize, usize),
) -> Result<Tensor<T>> {
    const OP: &str = "resize";
    let [n, c, h, w] = x.dims4(OP, "input")?;
    if (h, w) != (plan.in_height, plan.in_width) {
        return Err(Error::shape(
            OP,
            format!(
                "the resize plan was built for {}x{} planes; build a plan for {h}x{w}",
                plan.in_height, plan.in_width
            ),
            &[x.dims()],
        ));
    }
    let (out_h, out_w) = size;
    if out_h > plan.out_height || out_w > plan.out_width {
        return Err(Error::invalid(
            OP,
            format!(
                "the crop {out_h}x{out_w} is larger than the resized {}x{}; pass a size within it",
                plan.out_height, plan.out_width
            ),
        ));
    }
    let out_dims = [n, c, out_h, out_w];
    if let Some(buffer) = x.cuda_buffer() {
        return Tensor::from_cuda(out_dims, cuda::resize_cropped(buffer, n * c, plan, size)?);
    }

    let plane_in = h * w;
    let values = x.as_slice();
    let mut data = Vec::with_capacity(n * c * out_h * out_w);
    for plane in values.chunks(plane_in.max(1)).take(n * c) {
        let planes = Planes::new(1, h, w, plane.iter().map(|v| v.to_f64()).collect())?;
        let resized = plan.apply(&planes)?.crop_top_left(out_h, out_w)?;
        data.extend(resized.data.iter().map(|&v| T::from_f64(v)));
    }
    Tensor::from_vec(out_dims, data)
}
