//! Reshaping, zero padding and cropping.
//!
//! Padding and cropping act on the two spatial axes of NCHW tensors and are each other's
//! backward, so both can be differentiated any number of times.

pub(crate) mod cpu;
pub(crate) mod cuda;

pub use cpu::Margins;

use crate::autograd::Var;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

impl<T: Element> Var<T> {
    /// Returns the same elements under another shape with the same element count.
    pub fn reshape(&self, dims: &[usize]) -> Result<Var<T>> {
        if self.dims() == dims {
            return Ok(self.clone());
        }
        let value = self.value().reshape(dims)?;
        let input_dims = self.dims().to_vec();
        Ok(Var::from_op("reshape", value, &[self], move |args| {
            Ok(vec![Some(args.grad_output.reshape(&input_dims)?)])
        }))
    }

    /// Zero-pads the spatial axes of an `(N, C, H, W)` value by `margins`.
    pub fn pad(&self, margins: Margins) -> Result<Var<T>> {
        let dims = self.value().dims4("pad", "input")?;
        let [n, c, h, w] = dims;
        let out_dims = [
            n,
            c,
            h + margins.top + margins.bottom,
            w + margins.left + margins.right,
        ];
        let value = match self.value().cuda_buffer() {
            Some(buffer) => Tensor::from_cuda(out_dims, cuda::pad(buffer, dims, margins)?)?,
            None => Tensor::from_vec(out_dims, cpu::pad(self.value().as_slice(), dims, margins))?,
        };
        Ok(Var::from_op("pad", value, &[self], move |args| {
            let grad = args.grad_output.crop(margins.top, margins.left, h, w)?;
            Ok(vec![Some(grad)])
        }))
    }

    /// Zero-pads both spatial axes by `amount` on every side.
    pub fn pad_uniform(&self, amount: usize) -> Result<Var<T>> {
        self.pad(Margins {
            top: amount,
            bottom: amount,
            left: amount,
            right: amount,
        })
    }

    /// Keeps the `(h, w)` window whose top-left corner is at row `top`, column `left`.
    pub fn crop(&self, top: usize, left: usize, h: usize, w: usize) -> Result<Var<T>> {
        let dims = self.value().dims4("crop", "input")?;
        let [n, c, h_in, w_in] = dims;
        if top + h > h_in || left + w > w_in {
            return Err(Error::shape(
                "crop",
                format!("the window of {h}x{w} at ({top}, {left}) does not fit in {h_in}x{w_in}"),
                &[self.dims()],
            ));
        }
        let value = match self.value().cuda_buffer() {
            Some(buffer) => {
                Tensor::from_cuda([n, c, h, w], cuda::crop(buffer, dims, (top, left), (h, w))?)?
            }
            None => Tensor::from_vec(
                [n, c, h, w],
                cpu::crop(self.value().as_slice(), dims, top, left, h, w),
            )?,
        };
        let margins = Margins {
            top,
            bottom: h_in - top - h,
            left,
            right: w_in - left - w,
        };
        Ok(Var::from_op("crop", value, &[self], move |args| {
            Ok(vec![Some(args.grad_output.pad(margins)?)])
        }))
    }
}
