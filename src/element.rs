//! Floating-point element types that tensors hold.
//!
//! Training runs in `f32`; gradient checks and fixture comparisons run in `f64`. Every CPU kernel
//! is generic over [`Element`], so the two precisions share one implementation.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

use crate::cuda::KernelDtype;

/// Data type tag, used in error messages and in the names of CUDA entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
}

impl DType {
    /// Returns the short name used in kernel entry points (`f32`, `f64`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }
}

impl Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A real floating-point scalar that the engine computes in.
///
/// The cudarc bounds let buffers of the type live on a GPU: `DeviceRepr` passes values as
/// kernel arguments, and `ValidAsZeroBits` allows zero-filled device allocations.
pub trait Element:
    cudarc::driver::DeviceRepr
    + cudarc::driver::ValidAsZeroBits
    + Copy
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
    + 'static
{
    const DTYPE: DType;
    /// Suffix of the CUDA kernel entry points stamped for this type.
    const KERNEL_DTYPE: KernelDtype;
    const ZERO: Self;
    const ONE: Self;

    fn from_f64(value: f64) -> Self;
    fn to_f64(self) -> f64;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn exp(self) -> Self;
    fn ln_1p(self) -> Self;
    fn abs(self) -> Self;
    fn is_finite(self) -> bool;

    /// Computes `c = alpha * a * b + beta * c` for row-major matrices with explicit strides.
    ///
    /// `a` is `(m, k)`, `b` is `(k, n)` and `c` is `(m, n)`; strides count elements.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: &[Self],
        a_strides: (isize, isize),
        b: &[Self],
        b_strides: (isize, isize),
        beta: Self,
        c: &mut [Self],
        c_strides: (isize, isize),
    );
}

macro_rules! impl_element {
    ($t:ty, $dtype:expr, $kernel_dtype:expr, $gemm:path) => {
        impl Element for $t {
            const DTYPE: DType = $dtype;
            const KERNEL_DTYPE: KernelDtype = $kernel_dtype;
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;

            #[inline]
            fn from_f64(value: f64) -> Self {
                value as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }

            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: &[Self],
                a_strides: (isize, isize),
                b: &[Self],
                b_strides: (isize, isize),
                beta: Self,
                c: &mut [Self],
                c_strides: (isize, isize),
            ) {
                if m == 0 || n == 0 {
                    return;
                }
                assert!(
                    gemm_fits(m, k, a.len(), a_strides)
                        && gemm_fits(k, n, b.len(), b_strides)
                        && gemm_fits(m, n, c.len(), c_strides),
                    "gemm operands are smaller than their shapes and strides require"
                );
                // SAFETY: the assertion above checks that every index the product touches, the
                // largest being (rows - 1) * row_stride + (cols - 1) * col_stride, lies inside
                // each slice; `c` is borrowed mutably, so it cannot alias `a` or `b`.
                unsafe {
                    $gemm(
                        m,
                        k,
                        n,
                        alpha,
                        a.as_ptr(),
                        a_strides.0,
                        a_strides.1,
                        b.as_ptr(),
                        b_strides.0,
                        b_strides.1,
                        beta,
                        c.as_mut_ptr(),
                        c_strides.0,
                        c_strides.1,
                    );
                }
            }
        }
    };
}

/// Checks that a `(rows, cols)` matrix with non-negative strides lies inside `len` elements.
fn gemm_fits(rows: usize, cols: usize, len: usize, strides: (isize, isize)) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    if strides.0 < 0 || strides.1 < 0 {
        return false;
    }
    let last = (rows - 1) * strides.0 as usize + (cols - 1) * strides.1 as usize;
    last < len
}

impl_element!(f32, DType::F32, KernelDtype::F32, matrixmultiply::sgemm);
impl_element!(f64, DType::F64, KernelDtype::F64, matrixmultiply::dgemm);

/// Reinterprets `values` as `f32` when `T` is `f32`, for kernels written for `f32` only.
pub(crate) fn as_f32<T: 'static>(values: &[T]) -> Option<&[f32]> {
    // SAFETY: the type ids match, so `T` is `f32` and the slice is unchanged.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), values.len()) })
}

/// Reinterprets `values` as `f32` when `T` is `f32`, for kernels written for `f32` only.
pub(crate) fn as_f32_mut<T: 'static>(values: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: the type ids match, so `T` is `f32` and the slice is unchanged.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| unsafe {
        std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), values.len())
    })
}
