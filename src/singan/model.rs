//! SinGAN's per-scale networks: the generator and the patch discriminator.
//!
//! Scales are numbered from 0 (coarsest) to `num_scales - 1` (finest); the SinGAN paper numbers
//! them the other way round. Both networks are `num_blocks - 1` blocks of convolution, batch norm
//! and leaky ReLU (slope 0.2) followed by one last convolution. Parameter names follow the
//! PyTorch modules of the reference implementation: `features.K.conv.weight`,
//! `features.K.batch_norm.weight`, then `classifier.*` (discriminator) or
//! `features_to_image.0.*` (generator).

use crate::autograd::Var;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::nn::{Conv2d, ConvBlock, Module, Param};
use crate::tensor::Tensor;

/// Layer sizes of one network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Feature count of the first layer at this scale (`max_features`, widened per scale).
    pub max_features: usize,
    /// Lower bound on any hidden layer's feature count (`min_features`, widened per scale).
    pub min_features: usize,
    /// Convolutions per network, the last one included.
    pub num_blocks: usize,
    pub kernel_size: usize,
    /// Zero padding of every convolution.
    pub padding: usize,
}

impl NetConfig {
    /// Returns the `(c_in, c_out)` pair of each block, then the last convolution's input count.
    ///
    /// Layer 1 maps 3 to `max_features`; layer `i + 1` (for `i = 1..num_blocks - 2`) maps
    /// `max(min, 2 f_i)` to `max(min, f_i)` with `f_i = floor(max_features / 2^i)`.
    pub fn block_channels(&self) -> (Vec<(usize, usize)>, usize) {
        let mut blocks = vec![(3, self.max_features)];
        let mut last = self.max_features;
        for i in 1..self.num_blocks.saturating_sub(1) {
            let f = self.max_features >> i;
            blocks.push(((2 * f).max(self.min_features), f.max(self.min_features)));
            last = f.max(self.min_features);
        }
        (blocks, last)
    }

    /// Pixels each network trims from each side: `num_blocks * (kernel - 1 - 2 padding) / 2`.
    pub fn border(&self) -> usize {
        self.num_blocks * (self.kernel_size - 1 - 2 * self.padding) / 2
    }
}

/// Rebuilds the blocks of a network from the shapes in a state lookup.
fn blocks_from_state<T: Element>(
    lookup: &dyn Fn(&str) -> Option<Tensor<T>>,
    padding: usize,
) -> Result<Vec<ConvBlock<T>>> {
    let mut blocks = Vec::new();
    while let Some(weight) = lookup(&format!("features.{}.conv.weight", blocks.len())) {
        let [c_out, c_in, k, _] = weight.dims4("load_state", "convolution weight")?;
        blocks.push(ConvBlock::new(
            &format!("features.{}", blocks.len()),
            c_in,
            c_out,
            k,
            padding,
        ));
    }
    if blocks.is_empty() {
        return Err(Error::Message(
            "state has no features.0.conv.weight".to_string(),
        ));
    }
    Ok(blocks)
}

/// Initialises convolutions with N(0, 0.02^2) weights and zero biases, and batch norm weights
/// with N(1, 0.02^2).
fn init_blocks<T: Element>(
    blocks: &mut [ConvBlock<T>],
    last: &mut Conv2d<T>,
    normal: &mut dyn FnMut() -> f64,
) -> Result<()> {
    for block in blocks.iter_mut() {
        block.conv.init_normal(0.02, normal)?;
        block.batch_norm.init_normal(0.02, normal)?;
    }
    last.init_normal(0.02, normal)
}

macro_rules! impl_network_module {
    ($name:ident, $last:ident) => {
        impl<T: Element> Module<T> for $name<T> {
            fn params(&self) -> Vec<&Param<T>> {
                let mut params: Vec<&Param<T>> =
                    self.blocks.iter().flat_map(|b| b.params()).collect();
                params.extend(self.$last.params());
                params
            }

            fn params_mut(&mut self) -> Vec<&mut Param<T>> {
                let mut params: Vec<&mut Param<T>> = self
                    .blocks
                    .iter_mut()
                    .flat_map(|b| b.params_mut())
                    .collect();
                params.extend(self.$last.params_mut());
                params
            }

            fn state(&self) -> Vec<(String, Tensor<T>)> {
                let mut state: Vec<(String, Tensor<T>)> =
                    self.blocks.iter().flat_map(|b| b.state()).collect();
                state.extend(self.$last.state());
                state
            }

            fn load_state(&mut self, lookup: &dyn Fn(&str) -> Option<Tensor<T>>) -> Result<()> {
                for block in &mut self.blocks {
                    block.load_state(lookup)?;
                }
                self.$last.load_state(lookup)
            }
        }

        impl<T: Element> $name<T> {
            /// Switches every batch norm between training mode (batch statistics) and inference
            /// mode (running statistics).
            pub fn set_training(&mut self, training: bool) {
                for block in &mut self.blocks {
                    block.batch_norm.training = training;
                }
            }

            /// Feature count of the hidden layers' first block.
            pub fn width(&self) -> usize {
                self.blocks[0].conv.out_channels()
            }
        }
    };
}

/// The patch critic: maps `(N, 3, H, W)` to a score map `(N, 1, H - 2b, W - 2b)`, where `b` is
/// [`NetConfig::border`].
#[derive(Clone)]
pub struct Discriminator<T: Element> {
    pub blocks: Vec<ConvBlock<T>>,
    pub classifier: Conv2d<T>,
}

impl<T: Element> Discriminator<T> {
    /// Creates a discriminator with zero weights; call [`Discriminator::init`] to draw them.
    pub fn new(config: &NetConfig) -> Self {
        let (channels, last) = config.block_channels();
        let blocks = channels
            .iter()
            .enumerate()
            .map(|(i, &(c_in, c_out))| {
                ConvBlock::new(
                    &format!("features.{i}"),
                    c_in,
                    c_out,
                    config.kernel_size,
                    config.padding,
                )
            })
            .collect();
        Discriminator {
            blocks,
            classifier: Conv2d::new("classifier", last, 1, config.kernel_size, config.padding),
        }
    }

    /// Builds a discriminator with the layer shapes and values found in `lookup`.
    pub fn from_state(lookup: &dyn Fn(&str) -> Option<Tensor<T>>, padding: usize) -> Result<Self> {
        let blocks = blocks_from_state(lookup, padding)?;
        let weight = lookup("classifier.weight")
            .ok_or_else(|| Error::Message("state has no classifier.weight".to_string()))?;
        let [c_out, c_in, k, _] = weight.dims4("load_state", "classifier weight")?;
        let mut net = Discriminator {
            blocks,
            classifier: Conv2d::new("classifier", c_in, c_out, k, padding),
        };
        net.load_state(lookup)?;
        Ok(net)
    }

    /// Draws fresh weights from `normal`, a standard normal source.
    pub fn init(&mut self, normal: &mut dyn FnMut() -> f64) -> Result<()> {
        init_blocks(&mut self.blocks, &mut self.classifier, normal)
    }

    pub fn forward(&mut self, x: &Var<T>) -> Result<Var<T>> {
        let mut h = x.clone();
        for block in &mut self.blocks {
            h = block.forward(&h)?;
        }
        self.classifier.forward(&h)
    }
}

impl_network_module!(Discriminator, classifier);

/// The generator of one scale: `G(z, prev) = prev + tanh(net(zero_pad(z, b)))`, where `b` is
/// [`NetConfig::border`], so the output has the size of `prev`.
#[derive(Clone)]
pub struct Generator<T: Element> {
    pub blocks: Vec<ConvBlock<T>>,
    pub features_to_image: Conv2d<T>,
    /// Zero padding added around the input so the output keeps its size.
    pub input_padding: usize,
}

impl<T: Element> Generator<T> {
    /// Creates a generator with zero weights; call [`Generator::init`] to draw them.
    pub fn new(config: &NetConfig) -> Self {
        let (channels, last) = config.block_channels();
        let blocks = channels
            .iter()
            .enumerate()
            .map(|(i, &(c_in, c_out))| {
                ConvBlock::new(
                    &format!("features.{i}"),
                    c_in,
                    c_out,
                    config.kernel_size,
                    config.padding,
                )
            })
            .collect();
        Generator {
            blocks,
            features_to_image: Conv2d::new(
                "features_to_image.0",
                last,
                3,
                config.kernel_size,
                config.padding,
            ),
            input_padding: config.border(),
        }
    }

    /// Builds a generator with the layer shapes and values found in `lookup`; the input padding
    /// is derived so that the output keeps the input's size.
    pub fn from_state(lookup: &dyn Fn(&str) -> Option<Tensor<T>>, padding: usize) -> Result<Self> {
        let blocks = blocks_from_state(lookup, padding)?;
        let weight = lookup("features_to_image.0.weight")
            .ok_or_else(|| Error::Message("state has no features_to_image.0.weight".to_string()))?;
        let [c_out, c_in, k, _] = weight.dims4("load_state", "features_to_image weight")?;
        let shrink: usize = (blocks.len() + 1) * (k - 1 - 2 * padding);
        let mut net = Generator {
            blocks,
            features_to_image: Conv2d::new("features_to_image.0", c_in, c_out, k, padding),
            input_padding: shrink / 2,
        };
        net.load_state(lookup)?;
        Ok(net)
    }

    /// Draws fresh weights from `normal`, a standard normal source.
    pub fn init(&mut self, normal: &mut dyn FnMut() -> f64) -> Result<()> {
        init_blocks(&mut self.blocks, &mut self.features_to_image, normal)
    }

    /// Computes `prev + tanh(net(zero_pad(z)))` for `z` and `prev` of shape `(N, 3, H, W)`.
    pub fn forward(&mut self, z: &Var<T>, prev: &Var<T>) -> Result<Var<T>> {
        if z.dims() != prev.dims() {
            return Err(Error::shape(
                "Generator::forward",
                "noise input and previous image must have the same shape",
                &[z.dims(), prev.dims()],
            ));
        }
        let mut h = z.pad_uniform(self.input_padding)?;
        for block in &mut self.blocks {
            h = block.forward(&h)?;
        }
        let residual = self.features_to_image.forward(&h)?.tanh()?;
        prev.add(&residual)
    }
}

impl_network_module!(Generator, features_to_image);
