//! Convolution, batch norm and the block that chains them with a leaky ReLU.

use super::{load_tensor, Module, Param};
use crate::autograd::Var;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A 2-D convolution layer with weight `(C_out, C_in, K, K)` and bias `(C_out)`.
#[derive(Clone)]
pub struct Conv2d<T: Element> {
    pub weight: Param<T>,
    pub bias: Param<T>,
    pub padding: usize,
}

impl<T: Element> Conv2d<T> {
    /// Creates a layer named `prefix` with zero weights; see [`Conv2d::init_normal`].
    pub fn new(prefix: &str, c_in: usize, c_out: usize, kernel: usize, padding: usize) -> Self {
        Conv2d {
            weight: Param::new(
                format!("{prefix}.weight"),
                Tensor::zeros([c_out, c_in, kernel, kernel]),
            ),
            bias: Param::new(format!("{prefix}.bias"), Tensor::zeros([c_out])),
            padding,
        }
    }

    /// Draws the weights from N(0, std^2) with `normal` (a standard normal source) and zeroes
    /// the bias.
    pub fn init_normal(&mut self, std: f64, normal: &mut dyn FnMut() -> f64) -> Result<()> {
        let dims = self.weight.value().dims().to_vec();
        let values: Vec<f64> = (0..self.weight.value().numel())
            .map(|_| std * normal())
            .collect();
        self.weight
            .set_value(Tensor::from_f64_slice(dims, &values)?)?;
        self.bias
            .set_value(Tensor::zeros(self.bias.value().shape()))
    }

    pub fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        x.conv2d(self.weight.var(), Some(self.bias.var()), self.padding)
    }

    pub fn out_channels(&self) -> usize {
        self.weight.value().dims()[0]
    }
}

impl<T: Element> Module<T> for Conv2d<T> {
    fn params(&self) -> Vec<&Param<T>> {
        vec![&self.weight, &self.bias]
    }

    fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        vec![&mut self.weight, &mut self.bias]
    }

    fn state(&self) -> Vec<(String, Tensor<T>)> {
        self.params()
            .into_iter()
            .map(|p| (p.name().to_string(), p.value().clone()))
            .collect()
    }

    fn load_state(&mut self, lookup: &dyn Fn(&str) -> Option<Tensor<T>>) -> Result<()> {
        for param in self.params_mut() {
            let dims = param.value().dims().to_vec();
            let value = load_tensor(lookup, param.name(), &dims)?;
            param.set_value(value)?;
        }
        Ok(())
    }
}

/// Batch norm over channels, with PyTorch's running-statistics update.
///
/// In training mode each forward normalises with the batch statistics and then updates
/// `running = (1 - momentum) * running + momentum * batch`, using the unbiased variance
/// `var * m / (m - 1)` with `m = N * H * W` (the biased one when `m = 1`). In inference mode
/// the running statistics normalise.
#[derive(Clone)]
pub struct BatchNorm2d<T: Element> {
    pub weight: Param<T>,
    pub bias: Param<T>,
    pub running_mean: Tensor<T>,
    pub running_var: Tensor<T>,
    pub num_batches_tracked: i64,
    pub eps: f64,
    pub momentum: f64,
    pub training: bool,
    prefix: String,
}

impl<T: Element> BatchNorm2d<T> {
    /// Creates a layer named `prefix` with weight 1, bias 0, running mean 0 and variance 1.
    pub fn new(prefix: &str, channels: usize) -> Self {
        BatchNorm2d {
            weight: Param::new(format!("{prefix}.weight"), Tensor::ones([channels])),
            bias: Param::new(format!("{prefix}.bias"), Tensor::zeros([channels])),
            running_mean: Tensor::zeros([channels]),
            running_var: Tensor::ones([channels]),
            num_batches_tracked: 0,
            eps: 1e-5,
            momentum: 0.1,
            training: true,
            prefix: prefix.to_string(),
        }
    }

    /// Draws the weight from N(1, std^2) with `normal` and zeroes the bias.
    pub fn init_normal(&mut self, std: f64, normal: &mut dyn FnMut() -> f64) -> Result<()> {
        let channels = self.weight.value().numel();
        let values: Vec<f64> = (0..channels).map(|_| 1.0 + std * normal()).collect();
        self.weight
            .set_value(Tensor::from_f64_slice([channels], &values)?)?;
        self.bias.set_value(Tensor::zeros([channels]))
    }

    pub fn forward(&mut self, x: &Var<T>) -> Result<Var<T>> {
        self.forward_then(x, None)
    }

    /// Applies the layer and then a leaky ReLU with `slope`, fused into one op where the
    /// backend supports it (see [`Var::batch_norm_train_leaky_relu`]).
    pub fn forward_leaky_relu(&mut self, x: &Var<T>, slope: f64) -> Result<Var<T>> {
        self.forward_then(x, Some(slope))
    }

    fn forward_then(&mut self, x: &Var<T>, slope: Option<f64>) -> Result<Var<T>> {
        if !self.training {
            let out = x.batch_norm_eval(
                self.weight.var(),
                self.bias.var(),
                &self.running_mean,
                &self.running_var,
                self.eps,
            )?;
            return match slope {
                Some(slope) => out.leaky_relu(slope),
                None => Ok(out),
            };
        }
        let (weight, bias) = (self.weight.var(), self.bias.var());
        let (out, stats) = match slope {
            Some(slope) => x.batch_norm_train_leaky_relu(weight, bias, self.eps, slope)?,
            None => x.batch_norm_train(weight, bias, self.eps)?,
        };
        stats.update_running(&mut self.running_mean, &mut self.running_var, self.momentum)?;
        self.num_batches_tracked += 1;
        Ok(out)
    }
}

impl<T: Element> Module<T> for BatchNorm2d<T> {
    fn params(&self) -> Vec<&Param<T>> {
        vec![&self.weight, &self.bias]
    }

    fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        vec![&mut self.weight, &mut self.bias]
    }

    fn state(&self) -> Vec<(String, Tensor<T>)> {
        let p = &self.prefix;
        vec![
            (format!("{p}.weight"), self.weight.value().clone()),
            (format!("{p}.bias"), self.bias.value().clone()),
            (format!("{p}.running_mean"), self.running_mean.clone()),
            (format!("{p}.running_var"), self.running_var.clone()),
            (
                format!("{p}.num_batches_tracked"),
                Tensor::scalar(T::from_f64(self.num_batches_tracked as f64)),
            ),
        ]
    }

    fn load_state(&mut self, lookup: &dyn Fn(&str) -> Option<Tensor<T>>) -> Result<()> {
        let channels = self.weight.value().numel();
        let p = self.prefix.clone();
        self.weight
            .set_value(load_tensor(lookup, &format!("{p}.weight"), &[channels])?)?;
        self.bias
            .set_value(load_tensor(lookup, &format!("{p}.bias"), &[channels])?)?;
        // Exports of trainable parameters alone carry no running statistics; the current ones
        // are kept then.
        if lookup(&format!("{p}.running_mean")).is_some() {
            self.running_mean = load_tensor(lookup, &format!("{p}.running_mean"), &[channels])?;
        }
        if lookup(&format!("{p}.running_var")).is_some() {
            self.running_var = load_tensor(lookup, &format!("{p}.running_var"), &[channels])?;
        }
        if let Some(count) = lookup(&format!("{p}.num_batches_tracked")) {
            let value = count.to_cpu()?.as_slice().first().copied().ok_or_else(|| {
                Error::Message(format!("state tensor {p}.num_batches_tracked is empty"))
            })?;
            self.num_batches_tracked = value.to_f64() as i64;
        }
        Ok(())
    }
}

/// Convolution, batch norm and leaky ReLU (slope 0.2), named `conv` and `batch_norm`.
#[derive(Clone)]
pub struct ConvBlock<T: Element> {
    pub conv: Conv2d<T>,
    pub batch_norm: BatchNorm2d<T>,
    pub slope: f64,
}

impl<T: Element> ConvBlock<T> {
    pub fn new(prefix: &str, c_in: usize, c_out: usize, kernel: usize, padding: usize) -> Self {
        ConvBlock {
            conv: Conv2d::new(&format!("{prefix}.conv"), c_in, c_out, kernel, padding),
            batch_norm: BatchNorm2d::new(&format!("{prefix}.batch_norm"), c_out),
            slope: 0.2,
        }
    }

    pub fn forward(&mut self, x: &Var<T>) -> Result<Var<T>> {
        let y = self.conv.forward(x)?;
        self.batch_norm.forward_leaky_relu(&y, self.slope)
    }
}

impl<T: Element> Module<T> for ConvBlock<T> {
    fn params(&self) -> Vec<&Param<T>> {
        let mut params = self.conv.params();
        params.extend(self.batch_norm.params());
        params
    }

    fn params_mut(&mut self) -> Vec<&mut Param<T>> {
        let mut params = self.conv.params_mut();
        params.extend(self.batch_norm.params_mut());
        params
    }

    fn state(&self) -> Vec<(String, Tensor<T>)> {
        let mut state = self.conv.state();
        state.extend(self.batch_norm.state());
        state
    }

    fn load_state(&mut self, lookup: &dyn Fn(&str) -> Option<Tensor<T>>) -> Result<()> {
        self.conv.load_state(lookup)?;
        self.batch_norm.load_state(lookup)
    }
}
