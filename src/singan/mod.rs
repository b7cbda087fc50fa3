//! SinGAN: a pyramid of small fully convolutional GANs learnt from one image.

pub mod loss;
pub mod model;
