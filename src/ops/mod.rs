//! Differentiable ops, one folder per family, and two families outside the tape: random draws
//! (`random`) and the bicubic resize between scales (`resize`).
//!
//! Each family's `mod.rs` checks shapes and devices and computes the value through its backend
//! file: `cpu.rs` for host tensors, `cuda.rs` for GPU tensors. It registers a backward function
//! built from taped ops, so every op can be differentiated twice on either device. Operands on
//! different devices are rejected with [`crate::Error::DeviceMismatch`], and results stay on the
//! operands' device. GPU ops only queue kernels on the device's stream: nothing waits for the
//! GPU until a value is copied to the host. All ops take and return contiguous tensors; strided
//! input does not exist in this engine, so no family has to handle it.

pub mod activation;
pub mod conv2d;
pub mod elementwise;
pub mod loss;
pub mod norm;
pub mod random;
pub mod reduce;
pub mod resize;
pub mod shape;

/// Number of elements one rayon task handles in element-wise kernels.
///
/// Work is split by this fixed size, never by the thread count, so results do not depend on how
/// many threads run.
pub(crate) const CHUNK: usize = 1 << 14;
