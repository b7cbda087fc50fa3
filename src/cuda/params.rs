//! `#[repr(C)]` copies of the structs that kernels take by value, for `LaunchArgs::arg`.
//!
//! Each struct has the fields, types and order of the C struct of the same name in the kernel
//! files named in its comment, so its bytes match the kernel's parameter layout. A test parses
//! the kernel sources and checks that the field lists still agree.
//!
//! Scalar kernel arguments map as `int` to `i32`, `long long` to `i64`, `float` to `f32` and
//! `double` to `f64`. Device pointers are `CudaSlice`/`CudaView` arguments, and an optional
//! pointer that a kernel allows to be null is passed as `&NULL_DEVICE_PTR`.

use cudarc::driver::DeviceRepr;

/// Null device pointer, for kernel arguments documented as "may be null".
pub static NULL_DEVICE_PTR: u64 = 0;

/// Shape of a stride-1 convolution with signed zero padding on all four sides
/// (`h_out = h_in + 2 * padding - k_h + 1`, the same for w).
/// Mirrors `struct Conv2dParams` in kernels/conv2d.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conv2dParams {
    pub n: i32,
    pub c_in: i32,
    pub c_out: i32,
    pub h_in: i32,
    pub w_in: i32,
    pub h_out: i32,
    pub w_out: i32,
    pub k_h: i32,
    pub k_w: i32,
    pub padding: i32,
}

/// An NCHW tensor seen as (n, c, hw) with `hw = h * w`.
/// Mirrors `struct ChannelShape` in kernels/conv2d.cu, kernels/batchnorm.cu and
/// kernels/reduce.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelShape {
    pub n: i32,
    pub c: i32,
    pub hw: i32,
}

/// Broadcast layout of a binary operation, right-aligned to rank 4 and padded on the left with
/// size 1 (stride 0). Strides count elements and are 0 along broadcast dimensions.
/// Mirrors `struct BinaryBroadcastParams` in kernels/elementwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BinaryBroadcastParams {
    pub out_shape: [i64; 4],
    pub lhs_strides: [i64; 4],
    pub rhs_strides: [i64; 4],
}

/// Shapes of a broadcast, right-aligned to rank 4 and padded on the left with 1: each
/// `reduced_shape[d]` is 1 or `full_shape[d]`.
/// Mirrors `struct BroadcastShapes` in kernels/reduce.cu and kernels/shape.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BroadcastShapes {
    pub full_shape: [i64; 4],
    pub reduced_shape: [i64; 4],
}

/// Zero padding of NCHW planes by (top, bottom, left, right), where negative values crop.
/// Mirrors `struct Pad2dParams` in kernels/shape.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pad2dParams {
    pub n: i32,
    pub c: i32,
    pub h_in: i32,
    pub w_in: i32,
    pub top: i32,
    pub bottom: i32,
    pub left: i32,
    pub right: i32,
}

/// Window of NCHW planes starting at (top, left) with size h_out x w_out.
/// Mirrors `struct Crop2dParams` in kernels/shape.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Crop2dParams {
    pub n: i32,
    pub c: i32,
    pub h_in: i32,
    pub w_in: i32,
    pub top: i32,
    pub left: i32,
    pub h_out: i32,
    pub w_out: i32,
}

/// Plane count (n * c) and sizes of a resize along one axis, with `taps` table entries per
/// output index.
/// Mirrors `struct ResizeParams` in kernels/resize.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResizeParams {
    pub planes: i32,
    pub h_in: i32,
    pub w_in: i32,
    pub h_out: i32,
    pub w_out: i32,
    pub taps: i32,
}

// SAFETY: each struct is `#[repr(C)]`, contains only integers and matches the layout of its C
// counterpart field for field, so the kernel reads the same bytes.
unsafe impl DeviceRepr for Conv2dParams {}
unsafe impl DeviceRepr for ChannelShape {}
unsafe impl DeviceRepr for BinaryBroadcastParams {}
unsafe impl DeviceRepr for BroadcastShapes {}
unsafe impl DeviceRepr for Pad2dParams {}
unsafe impl DeviceRepr for Crop2dParams {}
unsafe impl DeviceRepr for ResizeParams {}
