//! Adam with PyTorch's update rule, and a step learning-rate schedule.
//!
//! Parameters on a GPU are updated by the fused `adam_update` kernel, whose moment estimates
//! live on the same GPU.

mod cuda;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::nn::Param;
use crate::tensor::{same_device, Device, Tensor};

/// Adam settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 5e-4,
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-8,
        }
    }
}

/// The Adam optimiser over a fixed list of parameters.
///
/// Each step computes, with `t` the number of steps taken so far including this one:
/// `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
/// `p = p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.
pub struct Adam<T: Element> {
    pub config: AdamConfig,
    step: u64,
    first_moment: Vec<Tensor<T>>,
    second_moment: Vec<Tensor<T>>,
}

impl<T: Element> Adam<T> {
    /// Creates an optimiser with zero moments for parameters of the given shapes.
    pub fn new(config: AdamConfig, params: &[&Param<T>]) -> Self {
        Adam {
            config,
            step: 0,
            first_moment: params
                .iter()
                .map(|p| Tensor::zeros(p.value().shape()))
                .collect(),
            second_moment: params
                .iter()
                .map(|p| Tensor::zeros(p.value().shape()))
                .collect(),
        }
    }

    /// Moves the moment estimates to `device`. [`Adam::step`] also moves them to each
    /// parameter's device, but moving them before the first step keeps that step from
    /// allocating.
    pub fn to_device(&mut self, device: &Device) -> Result<()> {
        for moment in self
            .first_moment
            .iter_mut()
            .chain(self.second_moment.iter_mut())
        {
            *moment = moment.to_device(device)?;
        }
        Ok(())
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Updates every parameter from its gradient; a `None` gradient counts as zero, as for a
    /// parameter the loss does not reach. Each gradient must be on its parameter's device.
    /// A parameter moved to another device since the last step keeps its moments, which move
    /// with it.
    pub fn step(
        &mut self,
        params: &mut [&mut Param<T>],
        grads: &[Option<Tensor<T>>],
    ) -> Result<()> {
        if params.len() != self.first_moment.len() || grads.len() != params.len() {
            return Err(Error::invalid(
                "Adam::step",
                format!(
                    "the optimiser was built for {} parameters but got {} parameters and {} gradients",
                    self.first_moment.len(),
                    params.len(),
                    grads.len()
                ),
            ));
        }
        self.step += 1;
        let coefficients = Coefficients::new(&self.config, self.step);
        for (index, param) in params.iter_mut().enumerate() {
            let grad = match &grads[index] {
                Some(grad) => grad.clone(),
                // A missing gradient is a zero one: the moments still decay, as in PyTorch.
                None => Tensor::zeros_on(param.value().shape(), &param.value().device())?,
            };
            self.update_one(index, param, &grad, &coefficients)?;
        }
        Ok(())
    }

    fn update_one(
        &mut self,
        index: usize,
        param: &mut Param<T>,
        grad: &Tensor<T>,
        k: &Coefficients<T>,
    ) -> Result<()> {
        if grad.dims() != param.value().dims() {
            return Err(Error::shape(
                "Adam::step",
                format!("gradient for {} has the wrong shape", param.name()),
                &[param.value().dims(), grad.dims()],
            ));
        }
        let device = same_device("Adam::step", &[param.value(), grad])?;
        for moment in [
            &mut self.first_moment[index],
            &mut self.second_moment[index],
        ] {
            if moment.device() != device {
                *moment = moment.to_device(&device)?;
            }
        }
        if device.is_cuda() {
            return self.update_one_cuda(index, param, grad);
        }
        let m = self.first_moment[index].data_mut();
        let v = self.second_moment[index].data_mut();
        let mut value = param.value().clone();
        let values = value.data_mut();
        for (((p, m), v), &g) in values.iter_mut().zip(m).zip(v).zip(grad.as_slice()) {
            *m = k.beta1 * *m + k.one_minus_beta1 * g;
            *v = k.beta2 * *v + k.one_minus_beta2 * g * g;
            *p -= k.step_size * *m / (v.sqrt() / k.sqrt_correction2 + k.eps);
        }
        param.set_value(value)
    }

    /// Runs the update of one GPU parameter with the fused kernel, in the kernel's order of
    /// operations: `p -= lr * (m / c1) / (sqrt(v / c2) + eps)`.
    fn update_one_cuda(
        &mut self,
        index: usize,
        param: &mut Param<T>,
        grad: &Tensor<T>,
    ) -> Result<()> {
        const OP: &str = "Adam::step";
        let config = &self.config;
        let t = self.step as f64;
        let scalars = cuda::AdamScalars {
            lr: T::from_f64(config.lr),
            beta1: T::from_f64(config.beta1),
            beta2: T::from_f64(config.beta2),
            eps: T::from_f64(config.eps),
            bias_correction1: T::from_f64(1.0 - config.beta1.powf(t)),
            bias_correction2: T::from_f64(1.0 - config.beta2.powf(t)),
        };
        // The clone shares its buffer with the parameter's leaf, so cuda_mut copies it first
        // and a graph that saved the old value keeps it.
        let mut value = param.value().clone();
        let (first, second) = (&mut self.first_moment, &mut self.second_moment);
        cuda::adam_update(
            grad.cuda(OP)?,
            value.cuda_mut(OP)?,
            first[index].cuda_mut(OP)?,
            second[index].cuda_mut(OP)?,
            &scalars,
        )?;
        param.set_value(value)
    }
}

/// The per-step constants of the update, in the element type and in PyTorch's order of
/// operations: `p -= (lr / c1) * m / (sqrt(v) / sqrt(c2) + eps)`.
struct Coefficients<T> {
    beta1: T,
    beta2: T,
    one_minus_beta1: T,
    one_minus_beta2: T,
    step_size: T,
    sqrt_correction2: T,
    eps: T,
}

impl<T: Element> Coefficients<T> {
    fn new(config: &AdamConfig, step: u64) -> Self {
        let correction1 = 1.0 - config.beta1.powf(step as f64);
        let correction2 = 1.0 - config.beta2.powf(step as f64);
        Coefficients {
            beta1: T::from_f64(config.beta1),
            beta2: T::from_f64(config.beta2),
            one_minus_beta1: T::from_f64(1.0 - config.beta1),
            one_minus_beta2: T::from_f64(1.0 - config.beta2),
            step_size: T::from_f64(config.lr / correction1),
            sqrt_correction2: T::from_f64(correction2.sqrt()),
            eps: T::from_f64(config.eps),
        }
    }
}

/// A step schedule: `lr(t) = base_lr * gamma^floor(t / step_size)` for the learning rate set after
/// iteration `t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLr {
    pub base_lr: f64,
    pub step_size: u64,
    pub gamma: f64,
}

impl StepLr {
    /// Returns the learning rate that iteration `t` (counted from 0) runs at: the base rate for
    /// iteration 0 and the rate set after iteration `t - 1` from then on.
    pub fn lr_for_iteration(&self, t: u64) -> f64 {
        if t == 0 || self.step_size == 0 {
            return self.base_lr;
        }
        let drops = (t - 1) / self.step_size;
        self.base_lr * self.gamma.powf(drops as f64)
    }
}
