//! Launcher of the Philox fills in kernels/random.cu.

use cudarc::driver::PushKernelArg;

use crate::cuda::launch::grid_stride;
use crate::cuda::{CudaBuffer, CudaDevice, KernelDtype, KernelModule};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::rng::{DrawKind, Rng};

/// Returns whether the kernel of `kind` writes elements of type `T`.
pub(crate) fn kernel_writes<T: Element>(kind: DrawKind) -> bool {
    let kernel_dtype = match kind {
        DrawKind::UniformF32 | DrawKind::NormalF32 => KernelDtype::F32,
        DrawKind::UniformF64 | DrawKind::NormalF64 => KernelDtype::F64,
    };
    T::KERNEL_DTYPE == kernel_dtype
}

/// Reserves a draw of `numel` values of `kind` from `rng` and queues the kernel that computes
/// them on GPU `ordinal`. The caller has checked [`kernel_writes`].
pub(crate) fn draw<T: Element>(
    ordinal: usize,
    rng: &mut Rng,
    kind: DrawKind,
    numel: usize,
) -> Result<CudaBuffer<T>> {
    let device = CudaDevice::shared(ordinal)?;
    let offset = rng.reserve(kind, numel);
    // SAFETY: the kernel writes out[i] for every i < numel; an empty buffer is never read.
    let mut out = unsafe { CudaBuffer::<T>::uninit(&device, numel) }?;
    if numel == 0 {
        return Ok(out);
    }
    let blocks = kind
        .philox_block_count(offset, numel as u64)
        .and_then(|count| usize::try_from(count).ok())
        .ok_or_else(|| {
            Error::invalid(
                "random draw",
                format!(
                    "a {kind:?} draw of {numel} values at stream word {offset} runs past the end of the stream; use a new seed"
                ),
            )
        })?;
    let entry = kind.kernel_name();
    let function = device.function(KernelModule::Random, entry)?;
    let numel_arg = numel as u64;
    let seed_arg = rng.seed();
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(out.slice_mut()) // T* out
        .arg(&numel_arg) // unsigned long long numel
        .arg(&seed_arg) // unsigned long long seed
        .arg(&offset); // unsigned long long offset

    // One loop iteration per Philox block of 4 stream words: grid = ceil(blocks / 256) blocks
    // (capped, the kernel's grid-stride loop covers the rest), block = 256, no dynamic shared
    // memory.
    let config = grid_stride(blocks);
    // SAFETY: the arguments match <kind>(T* out, unsigned long long numel, unsigned long long
    // seed, unsigned long long offset), whose element type is T (checked by the caller through
    // kernel_writes), and out has numel elements.
    let launched = unsafe { launch.launch(config) };
    device.after_launch(entry, launched)?;
    Ok(out)
}
