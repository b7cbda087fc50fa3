//! SinGAN: a pyramid of small fully convolutional GANs learnt from one image.
//!
//! Scales are numbered from 0 (coarsest) to N (finest, the training image after its first
//! resize).

pub mod apps;
pub mod bench;
pub mod cascade;
pub mod config;
pub mod image_io;
pub mod imresize;
pub mod loss;
pub mod loss_log;
pub mod model;
pub mod plot;
pub mod pyramid;
pub mod run;
pub mod sample;
pub mod sample_image;
pub mod shell;
pub mod step;
pub mod train;
