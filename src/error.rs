//! The engine's error type.
//!
//! Every fallible library call returns [`Result`]. Shape errors name the op and show the shapes
//! involved, so a message alone shows the caller which call to fix.

use crate::element::DType;

/// Errors raised by tensors, ops, the tape and the tools built on them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: {message} (shapes {shapes})")]
    Shape {
        op: &'static str,
        message: String,
        shapes: String,
    },

    #[error("{op}: invalid argument: {message}")]
    InvalidArgument { op: &'static str, message: String },

    #[error("{op}: {dtype} is not supported on {device}")]
    UnsupportedDType {
        op: &'static str,
        dtype: DType,
        device: String,
    },

    #[error("{op}: operands are on different devices ({left} and {right})")]
    DeviceMismatch {
        op: &'static str,
        left: String,
        right: String,
    },

    #[error(transparent)]
    Cuda(#[from] crate::cuda::CudaError),

    #[error("autograd: {0}")]
    Autograd(String),

    #[error("{path}: {message}")]
    File { path: String, message: String },

    #[error("{0}")]
    Message(String),

    #[error(transparent)]
    Io(#[from] std::io::Error),

    #[error(transparent)]
    Image(#[from] crate::singan::image_io::ImageIoError),

    #[error(transparent)]
    Pyramid(#[from] crate::singan::pyramid::PyramidError),

    #[error(transparent)]
    Resize(#[from] crate::singan::imresize::ResizeError),

    /// Training stopped because a loss became NaN or infinite.
    #[error("training stopped at scale {scale}, iteration {iteration}: {message}; the scales finished before it are saved")]
    NonFinite {
        scale: usize,
        iteration: usize,
        message: String,
    },

    /// Training was interrupted (Ctrl-C) after `finished` scales were saved.
    #[error("interrupted; {finished} finished scales are saved in {run_dir}")]
    Interrupted { finished: usize, run_dir: String },
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds a shape error for `op` that lists every shape involved.
    pub fn shape(op: &'static str, message: impl Into<String>, shapes: &[&[usize]]) -> Self {
        let shapes = shapes
            .iter()
            .map(|shape| format!("{shape:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Error::Shape {
            op,
            message: message.into(),
            shapes,
        }
    }

    /// Builds an invalid-argument error for `op`.
    pub fn invalid(op: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            message: message.into(),
        }
    }

    /// Builds an error about a file, naming its path.
    pub fn file(path: impl AsRef<std::path::Path>, message: impl Into<String>) -> Self {
        Error::File {
            path: path.as_ref().display().to_string(),
            message: message.into(),
        }
    }
}
