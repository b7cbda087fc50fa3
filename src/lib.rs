//! A deep-learning engine with its own autograd, a rayon CPU backend and hand-written CUDA
//! kernels, and a SinGAN trainer built on it.
//!
//! Tensors live in host memory or on a CUDA GPU ([`Device`]), and every op runs where its
//! operands are. Data flows through the modules in this order: [`tensor`] (buffers and shapes),
//! [`ops`] (differentiable ops and their kernels), [`autograd`] (the graph and `grad`), [`nn`]
//! (layers with named parameters) and [`optim`] (Adam). [`gradcheck`] and [`fixtures`] hold
//! numeric and reference checks, and [`singan`] the model and its training. [`cuda`] contains
//! the kernel modules, the device handle and GPU buffers.

pub mod autograd;
pub mod cuda;
pub mod element;
pub mod error;
pub mod fixtures;
pub mod gradcheck;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod singan;
pub mod tensor;

pub use autograd::{grad, no_grad, Var};
pub use element::{DType, Element};
pub use error::{Error, Result};
pub use tensor::{Device, Shape, Tensor};
