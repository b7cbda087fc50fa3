//! A deep-learning engine with its own autograd, a rayon CPU backend and hand-written CUDA
//! kernels, and a SinGAN trainer built on it.
//!
//! Data flows through the modules in this order: [`tensor`] (buffers and shapes), [`ops`]
//! (differentiable ops and their kernels), [`autograd`] (the graph and `grad`), [`nn`] (layers
//! with named parameters), [`optim`] (Adam), [`gradcheck`] and [`fixtures`] (numeric and
//! reference checks), then [`singan`] (the model and its training).

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
