//! Device buffers that tensors on a GPU hold.

use std::mem::ManuallyDrop;
use std::sync::Arc;

use cudarc::driver::CudaSlice;

use super::device::driver_error;
use super::{CudaDevice, CudaError};
use crate::element::Element;

/// A buffer of `T` in GPU memory, with the device handle whose stream owns it.
///
/// All work on the buffer goes to that stream, so kernels, copies and the reuse of its block
/// after a drop run in submission order and no host synchronisation is needed between them.
/// A dropped buffer returns its block to the device's pool ([`CudaDevice::recycle`]), and the
/// next buffer of the same byte size takes it.
///
/// An empty buffer still allocates one element, because the driver rejects allocations of
/// zero bytes; `len` is the logical length.
#[derive(Debug)]
pub struct CudaBuffer<T> {
    /// Taken out only by `drop`.
    slice: ManuallyDrop<CudaSlice<T>>,
    len: usize,
    device: Arc<CudaDevice>,
}

impl<T> Drop for CudaBuffer<T> {
    fn drop(&mut self) {
        // SAFETY: `slice` is taken exactly once, here, and not used afterwards.
        let slice = unsafe { ManuallyDrop::take(&mut self.slice) };
        self.device.recycle(slice);
    }
}

impl<T: Element> CudaBuffer<T> {
    /// Copies `values` to a new buffer on `device`. The copy is queued on the stream, and the
    /// driver has read `values` when this returns.
    pub fn upload(device: &Arc<CudaDevice>, values: &[T]) -> Result<Self, CudaError> {
        // SAFETY: the copy below writes every element of a non-empty buffer, and the one
        // padding element of an empty buffer is never read.
        let mut buffer = unsafe { CudaBuffer::uninit(device, values.len()) }?;
        if !values.is_empty() {
            device
                .stream()
                .memcpy_htod(values, &mut *buffer.slice)
                .map_err(|source| {
                    driver_error(
                        format!("copying {} elements to the GPU", values.len()),
                        source,
                    )
                })?;
        }
        Ok(buffer)
    }

    /// Allocates a buffer of `len` zeros on `device`. The zero fill is queued, not awaited.
    pub fn zeros(device: &Arc<CudaDevice>, len: usize) -> Result<Self, CudaError> {
        Ok(CudaBuffer {
            slice: ManuallyDrop::new(device.alloc_zeros(len.max(1))?),
            len,
            device: device.clone(),
        })
    }

    /// Allocates a buffer of `len` elements without initialising them.
    ///
    /// # Safety
    ///
    /// The caller must write every element before anything reads it, for example with a
    /// kernel that overwrites its whole output.
    pub(crate) unsafe fn uninit(device: &Arc<CudaDevice>, len: usize) -> Result<Self, CudaError> {
        // SAFETY: forwarded to the caller.
        let slice = unsafe { device.alloc_uninit(len.max(1)) }?;
        Ok(CudaBuffer {
            slice: ManuallyDrop::new(slice),
            len,
            device: device.clone(),
        })
    }

    /// Waits for the stream and copies the elements to host memory.
    pub fn download(&self) -> Result<Vec<T>, CudaError> {
        if self.len == 0 {
            self.device.synchronize()?;
            return Ok(Vec::new());
        }
        let mut values = vec![T::ZERO; self.len];
        self.device
            .stream()
            .memcpy_dtoh(&*self.slice, &mut values)
            .map_err(|source| {
                driver_error(
                    format!("copying {} elements from the GPU", self.len),
                    source,
                )
            })?;
        // Surfaces an error of any kernel queued before the copy, and makes sure the copy into
        // pageable memory has landed.
        self.device.synchronize()?;
        Ok(values)
    }

    /// Allocates a new buffer and queues a device-to-device copy of this one into it.
    pub fn try_clone(&self) -> Result<Self, CudaError> {
        // SAFETY: the copy below writes the whole allocation, padding element included.
        let mut copy = unsafe { CudaBuffer::uninit(&self.device, self.len) }?;
        self.device
            .stream()
            .memcpy_dtod(&*self.slice, &mut *copy.slice)
            .map_err(|source| driver_error("copying a buffer on the GPU", source))?;
        Ok(copy)
    }

    /// Queues a copy of all of `source` into this buffer, starting at element `offset`.
    /// Returns `false` and copies nothing when `source` does not fit there.
    pub fn copy_from_at(
        &mut self,
        offset: usize,
        source: &CudaBuffer<T>,
    ) -> Result<bool, CudaError> {
        let Some(end) = offset
            .checked_add(source.len)
            .filter(|&end| end <= self.len)
        else {
            return Ok(false);
        };
        if source.len == 0 {
            return Ok(true);
        }
        let mut window = self.slice.slice_mut(offset..end);
        self.device
            .stream()
            .memcpy_dtod(&source.slice.slice(..source.len), &mut window)
            .map_err(|source| driver_error("copying between GPU buffers", source))?;
        Ok(true)
    }

    /// Returns the number of elements. An empty buffer's allocation has one unused element.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }

    /// Returns the device slice, for passing to a kernel that reads it.
    pub fn slice(&self) -> &CudaSlice<T> {
        &self.slice
    }

    /// Returns the device slice, for passing to a kernel that writes it.
    pub fn slice_mut(&mut self) -> &mut CudaSlice<T> {
        &mut self.slice
    }
}
