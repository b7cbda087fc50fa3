//! Dense, contiguous NCHW tensors.
//!
//! A [`Tensor`] is a shape plus a reference-counted buffer. Cloning a tensor shares the buffer;
//! writing through [`Tensor::data_mut`] copies it first when another tensor still shares it, so a
//! value that the autograd graph saved is never changed behind its back. Every op produces
//! contiguous row-major output, and there are no strided views: cropping and padding copy.

pub(crate) mod shape;

pub use shape::{broadcast_shape, numel, Shape};

use std::sync::Arc;

use crate::element::Element;
use crate::error::{Error, Result};

/// Where a tensor's buffer lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory; ops run on the rayon CPU backend.
    Cpu,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
        }
    }
}

/// A dense row-major tensor of element type `T`.
#[derive(Clone, Debug)]
pub struct Tensor<T: Element> {
    shape: Shape,
    data: Arc<Vec<T>>,
}

impl<T: Element> Tensor<T> {
    /// Wraps `data` as a tensor of `shape`; fails when the element count differs.
    pub fn from_vec(shape: impl Into<Shape>, data: Vec<T>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != data.len() {
            return Err(Error::shape(
                "from_vec",
                format!(
                    "shape holds {} elements but the buffer has {}",
                    shape.numel(),
                    data.len()
                ),
                &[shape.dims()],
            ));
        }
        Ok(Tensor {
            shape,
            data: Arc::new(data),
        })
    }

    /// Creates a tensor of `shape` filled with `value`.
    pub fn full(shape: impl Into<Shape>, value: T) -> Self {
        let shape = shape.into();
        let data = vec![value; shape.numel()];
        Tensor {
            shape,
            data: Arc::new(data),
        }
    }

    /// Creates a tensor of `shape` filled with zeros.
    pub fn zeros(shape: impl Into<Shape>) -> Self {
        Self::full(shape, T::ZERO)
    }

    /// Creates a tensor of `shape` filled with ones.
    pub fn ones(shape: impl Into<Shape>) -> Self {
        Self::full(shape, T::ONE)
    }

    /// Creates a one-element tensor of shape `[1]`.
    pub fn scalar(value: T) -> Self {
        Self::full([1], value)
    }

    /// Converts an f64 buffer into a tensor of this element type.
    pub fn from_f64_slice(shape: impl Into<Shape>, values: &[f64]) -> Result<Self> {
        Self::from_vec(shape, values.iter().map(|&v| T::from_f64(v)).collect())
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn device(&self) -> Device {
        Device::Cpu
    }

    /// Returns the elements in row-major order.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// Returns the elements for writing, copying the buffer first if another tensor shares it.
    pub fn data_mut(&mut self) -> &mut [T] {
        Arc::make_mut(&mut self.data).as_mut_slice()
    }

    /// Copies the elements into a new vector.
    pub fn to_vec(&self) -> Vec<T> {
        self.data.as_ref().clone()
    }

    /// Converts every element to f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.data.iter().map(|v| v.to_f64()).collect()
    }

    /// Returns the single element of a one-element tensor.
    pub fn item(&self) -> Result<T> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "item",
                "expected a tensor with exactly one element",
                &[self.dims()],
            ));
        }
        Ok(self.data[0])
    }

    /// Returns a tensor that shares this buffer under another shape with the same element count.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(Error::shape(
                "reshape",
                "the new shape must hold the same number of elements",
                &[self.dims(), shape.dims()],
            ));
        }
        Ok(Tensor {
            shape,
            data: Arc::clone(&self.data),
        })
    }

    /// Converts the elements to another precision.
    pub fn cast<U: Element>(&self) -> Tensor<U> {
        Tensor {
            shape: self.shape.clone(),
            data: Arc::new(self.data.iter().map(|v| U::from_f64(v.to_f64())).collect()),
        }
    }

    /// Returns true when every element is finite (no NaN or infinity).
    pub fn all_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }

    /// Returns true when both tensors have the same shape and bit-identical elements.
    pub fn bitwise_eq(&self, other: &Self) -> bool {
        self.shape == other.shape
            && self
                .data
                .iter()
                .zip(other.data.iter())
                .all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits())
    }

    /// Checks that this tensor has exactly `dims`, naming `op` and `what` on failure.
    pub fn expect_dims(&self, op: &'static str, what: &str, dims: &[usize]) -> Result<()> {
        if self.dims() != dims {
            return Err(Error::shape(
                op,
                format!("{what} has the wrong shape"),
                &[self.dims(), dims],
            ));
        }
        Ok(())
    }

    /// Returns the 4 dims of an NCHW tensor, or a shape error naming `op` and `what`.
    pub fn dims4(&self, op: &'static str, what: &str) -> Result<[usize; 4]> {
        match *self.dims() {
            [n, c, h, w] => Ok([n, c, h, w]),
            _ => Err(Error::shape(
                op,
                format!("{what} must have 4 dims (N, C, H, W)"),
                &[self.dims()],
            )),
        }
    }
}
