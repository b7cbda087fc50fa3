//! Dense, contiguous NCHW tensors in host or GPU memory.
//!
//! A [`Tensor`] is a shape plus a reference-counted buffer, which lives either in host memory
//! ([`Storage::Cpu`]) or on a CUDA GPU ([`Storage::Cuda`]). Cloning a tensor shares the buffer;
//! writing through [`Tensor::data_mut`] copies it first when another tensor still shares it, so a
//! value that the autograd graph saved is never changed behind its back. Every op produces
//! contiguous row-major output on the device of its operands, and there are no strided views:
//! cropping and padding copy.

mod host_memory;
pub(crate) mod shape;

pub use host_memory::keep_freed_memory;
pub use shape::{broadcast_shape, numel, Shape};

use std::sync::Arc;

use crate::cuda::{CudaBuffer, CudaDevice};
use crate::element::Element;
use crate::error::{Error, Result};

/// The memory a tensor's buffer lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory; ops run on the rayon CPU backend.
    Cpu,
    /// Memory of the CUDA GPU with this ordinal; ops launch the kernels under `kernels/`.
    Cuda(usize),
}

impl Device {
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// Waits until the work queued on this device has finished, and returns the error of any
    /// kernel that failed. Does nothing for the CPU, whose ops finish before they return.
    pub fn synchronize(&self) -> Result<()> {
        if let Device::Cuda(ordinal) = *self {
            CudaDevice::shared(ordinal)?.synchronize()?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// The buffer of a tensor.
#[derive(Clone, Debug)]
pub enum Storage<T: Element> {
    /// Elements in host memory, row-major.
    Cpu(Arc<Vec<T>>),
    /// Elements in GPU memory, row-major.
    Cuda(Arc<CudaBuffer<T>>),
}

/// A dense row-major tensor of element type `T`.
#[derive(Clone, Debug)]
pub struct Tensor<T: Element> {
    shape: Shape,
    storage: Storage<T>,
}

/// Returns the device that all `tensors` are on, or a device-mismatch error naming `op` and the
/// first two devices that differ. An empty list gives the CPU.
pub fn same_device<T: Element>(op: &'static str, tensors: &[&Tensor<T>]) -> Result<Device> {
    let Some(first) = tensors.first() else {
        return Ok(Device::Cpu);
    };
    let device = first.device();
    for tensor in &tensors[1..] {
        let other = tensor.device();
        if other != device {
            return Err(Error::DeviceMismatch {
                op,
                left: device.to_string(),
                right: other.to_string(),
            });
        }
    }
    Ok(device)
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
            storage: Storage::Cpu(Arc::new(data)),
        })
    }

    /// Wraps a GPU buffer as a tensor of `shape`; fails when the element count differs.
    pub fn from_cuda(shape: impl Into<Shape>, buffer: CudaBuffer<T>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != buffer.len() {
            return Err(Error::shape(
                "from_cuda",
                format!(
                    "shape holds {} elements but the GPU buffer has {}",
                    shape.numel(),
                    buffer.len()
                ),
                &[shape.dims()],
            ));
        }
        Ok(Tensor {
            shape,
            storage: Storage::Cuda(Arc::new(buffer)),
        })
    }

    /// Creates a tensor of `shape` filled with `value`.
    pub fn full(shape: impl Into<Shape>, value: T) -> Self {
        let shape = shape.into();
        let data = vec![value; shape.numel()];
        Tensor {
            shape,
            storage: Storage::Cpu(Arc::new(data)),
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

    /// Wraps `data` as a tensor of `shape` on `device`, copying it there.
    pub fn from_vec_on(shape: impl Into<Shape>, data: Vec<T>, device: &Device) -> Result<Self> {
        Self::from_vec(shape, data)?.to_device(device)
    }

    /// Creates a tensor of `shape` filled with `value` on `device`. On a GPU the fill is
    /// queued on the device's stream.
    pub fn full_on(shape: impl Into<Shape>, value: T, device: &Device) -> Result<Self> {
        match *device {
            Device::Cpu => Ok(Self::full(shape, value)),
            Device::Cuda(ordinal) => {
                let shape = shape.into();
                let gpu = CudaDevice::shared(ordinal)?;
                let buffer = crate::ops::elementwise::cuda::fill(&gpu, shape.numel(), value)?;
                Self::from_cuda(shape, buffer)
            }
        }
    }

    /// Creates a tensor of `shape` filled with zeros on `device`.
    pub fn zeros_on(shape: impl Into<Shape>, device: &Device) -> Result<Self> {
        match *device {
            Device::Cpu => Ok(Self::zeros(shape)),
            Device::Cuda(ordinal) => {
                let shape = shape.into();
                let gpu = CudaDevice::shared(ordinal)?;
                let buffer = CudaBuffer::zeros(&gpu, shape.numel())?;
                Self::from_cuda(shape, buffer)
            }
        }
    }

    /// Creates a tensor of `shape` filled with ones on `device`.
    pub fn ones_on(shape: impl Into<Shape>, device: &Device) -> Result<Self> {
        Self::full_on(shape, T::ONE, device)
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(buffer) => Device::Cuda(buffer.device().ordinal()),
        }
    }

    pub fn storage(&self) -> &Storage<T> {
        &self.storage
    }

    /// Returns the GPU buffer, or `None` for a CPU tensor.
    pub fn cuda_buffer(&self) -> Option<&CudaBuffer<T>> {
        match &self.storage {
            Storage::Cpu(_) => None,
            Storage::Cuda(buffer) => Some(buffer),
        }
    }

    /// Returns the GPU buffer, or an error naming `op` for a CPU tensor. GPU launchers call
    /// this after [`same_device`] has picked the CUDA path.
    pub(crate) fn cuda(&self, op: &'static str) -> Result<&CudaBuffer<T>> {
        self.cuda_buffer().ok_or_else(|| Error::DeviceMismatch {
            op,
            left: "cuda".to_string(),
            right: Device::Cpu.to_string(),
        })
    }

    /// Returns the GPU buffer for writing, copying it on the GPU first if another tensor
    /// shares it, or an error naming `op` for a CPU tensor.
    pub(crate) fn cuda_mut(&mut self, op: &'static str) -> Result<&mut CudaBuffer<T>> {
        let Storage::Cuda(buffer) = &mut self.storage else {
            return Err(Error::DeviceMismatch {
                op,
                left: "cuda".to_string(),
                right: Device::Cpu.to_string(),
            });
        };
        if Arc::get_mut(buffer).is_none() {
            *buffer = Arc::new(buffer.try_clone()?);
        }
        Ok(Arc::get_mut(buffer).expect("a freshly copied buffer has one owner"))
    }

    /// Returns the elements in row-major order.
    ///
    /// # Panics
    ///
    /// When the tensor is on a GPU; copy it with [`Tensor::to_vec`] or move it with
    /// [`Tensor::to_cpu`] first.
    pub fn as_slice(&self) -> &[T] {
        match &self.storage {
            Storage::Cpu(data) => data,
            Storage::Cuda(_) => panic!(
                "Tensor::as_slice needs a CPU tensor, but this {:?} tensor is on {}; copy it with to_vec() or move it with to_cpu() first",
                self.dims(),
                self.device()
            ),
        }
    }

    /// Returns the elements for writing, copying the buffer first if another tensor shares it.
    ///
    /// # Panics
    ///
    /// When the tensor is on a GPU; move it with [`Tensor::to_cpu`] first.
    pub fn data_mut(&mut self) -> &mut [T] {
        let device = self.device();
        match &mut self.storage {
            Storage::Cpu(data) => Arc::make_mut(data).as_mut_slice(),
            Storage::Cuda(_) => panic!(
                "Tensor::data_mut needs a CPU tensor, but this {:?} tensor is on {device}; move it with to_cpu() first",
                self.shape.dims()
            ),
        }
    }

    /// Copies the elements into a new vector, from either device. For a GPU tensor this waits
    /// for the work queued on its stream.
    ///
    /// # Panics
    ///
    /// When the copy from the GPU fails, which means the driver reported an error, for example
    /// of a kernel queued earlier. [`Tensor::to_cpu`] returns that error instead.
    pub fn to_vec(&self) -> Vec<T> {
        match &self.storage {
            Storage::Cpu(data) => data.as_ref().clone(),
            Storage::Cuda(buffer) => buffer
                .download()
                .unwrap_or_else(|error| panic!("Tensor::to_vec: {error}")),
        }
    }

    /// Converts every element to f64, copying from the GPU like [`Tensor::to_vec`].
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.storage {
            Storage::Cpu(data) => data.iter().map(|v| v.to_f64()).collect(),
            Storage::Cuda(_) => self.to_vec().iter().map(|v| v.to_f64()).collect(),
        }
    }

    /// Returns this tensor on `device`: a clone sharing the buffer when it is already there,
    /// otherwise a copy. A copy from a GPU waits for the work queued on its stream.
    pub fn to_device(&self, device: &Device) -> Result<Tensor<T>> {
        if self.device() == *device {
            return Ok(self.clone());
        }
        let host = match &self.storage {
            Storage::Cpu(data) => Arc::clone(data),
            Storage::Cuda(buffer) => Arc::new(buffer.download()?),
        };
        let storage = match *device {
            Device::Cpu => Storage::Cpu(host),
            Device::Cuda(ordinal) => {
                let gpu = CudaDevice::shared(ordinal)?;
                Storage::Cuda(Arc::new(CudaBuffer::upload(&gpu, &host)?))
            }
        };
        Ok(Tensor {
            shape: self.shape.clone(),
            storage,
        })
    }

    /// Returns this tensor in host memory; see [`Tensor::to_device`].
    pub fn to_cpu(&self) -> Result<Tensor<T>> {
        self.to_device(&Device::Cpu)
    }

    /// Waits until the work queued on this tensor's GPU stream has finished, and returns the
    /// error of any kernel that failed. Does nothing for a CPU tensor. GPU ops return before
    /// their kernels run, so timing code calls this before reading the clock.
    pub fn synchronize(&self) -> Result<()> {
        if let Storage::Cuda(buffer) = &self.storage {
            buffer.device().synchronize()?;
        }
        Ok(())
    }

    /// Copies every element of `source` into this tensor, starting at flat element `offset`.
    /// Both tensors must be on the same device; on a GPU the copy is queued, not awaited.
    /// Copies this tensor's buffer first if another tensor shares it.
    pub fn write_at(&mut self, offset: usize, source: &Tensor<T>) -> Result<()> {
        const OP: &str = "write_at";
        same_device(OP, &[self, source])?;
        let fits = offset
            .checked_add(source.numel())
            .is_some_and(|end| end <= self.numel());
        if !fits {
            return Err(Error::shape(
                OP,
                format!(
                    "{} elements written at offset {offset} do not fit; use an offset of at most {}",
                    source.numel(),
                    self.numel().saturating_sub(source.numel())
                ),
                &[self.dims(), source.dims()],
            ));
        }
        if self.device().is_cpu() {
            let end = offset + source.numel();
            self.data_mut()[offset..end].copy_from_slice(source.as_slice());
            return Ok(());
        }
        let source = source.cuda(OP)?;
        self.cuda_mut(OP)?.copy_from_at(offset, source)?;
        Ok(())
    }

    /// Returns the single element of a one-element tensor. For a GPU tensor this waits for
    /// the work queued on its stream.
    pub fn item(&self) -> Result<T> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "item",
                "expected a tensor with exactly one element",
                &[self.dims()],
            ));
        }
        match &self.storage {
            Storage::Cpu(data) => Ok(data[0]),
            Storage::Cuda(buffer) => Ok(buffer.download()?[0]),
        }
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
            storage: self.storage.clone(),
        })
    }

    /// Converts the elements to another precision, on the same device.
    ///
    /// # Panics
    ///
    /// For a GPU tensor, which is converted through host memory, when a copy fails (see
    /// [`Tensor::to_vec`]).
    pub fn cast<U: Element>(&self) -> Tensor<U> {
        let converted = Tensor {
            shape: self.shape.clone(),
            storage: Storage::Cpu(Arc::new(
                self.to_host_values()
                    .iter()
                    .map(|v| U::from_f64(v.to_f64()))
                    .collect(),
            )),
        };
        converted
            .to_device(&self.device())
            .unwrap_or_else(|error| panic!("Tensor::cast: {error}"))
    }

    /// Returns true when every element is finite (no NaN or infinity).
    pub fn all_finite(&self) -> bool {
        self.to_host_values().iter().all(|v| v.is_finite())
    }

    /// Returns true when both tensors have the same shape and bit-identical elements, on any
    /// devices.
    pub fn bitwise_eq(&self, other: &Self) -> bool {
        self.shape == other.shape
            && self
                .to_host_values()
                .iter()
                .zip(other.to_host_values().iter())
                .all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits())
    }

    /// Returns the host buffer of a CPU tensor without copying, or a downloaded copy of a GPU
    /// tensor (panicking like [`Tensor::to_vec`] when that fails).
    fn to_host_values(&self) -> Arc<Vec<T>> {
        match &self.storage {
            Storage::Cpu(data) => Arc::clone(data),
            Storage::Cuda(_) => Arc::new(self.to_vec()),
        }
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
