//! One SinGAN training iteration: a critic step, then (optionally) a generator step.
//!
//! The caller supplies every random draw ([`StepInputs`]), so training, trace replay and tests
//! run the same code. The steps return their losses as one-element tensors on the training
//! device without reading them, so a caller on a GPU decides when to copy them to the host.
//! Within a step the forward passes run in this order, each updating the batch-norm running
//! statistics of its network: `G(fake)`, `D(real)`, `D(fake)`, `D(x_hat)` for the penalty,
//! then `G(reconstruction)` and `D(fake)` for the generator step.

use serde::{Deserialize, Serialize};

use crate::autograd::{grad, Var};
use crate::element::Element;
use crate::error::Result;
use crate::nn::Module;
use crate::optim::Adam;
use crate::singan::loss::gradient_penalty;
use crate::singan::model::{Discriminator, Generator};
use crate::tensor::Tensor;

/// The adversarial objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Wasserstein loss with gradient penalty: the critic minimises
    /// `-mean D(real) + mean D(fake) + penalty_weight * GP`, the generator `-mean D(fake)`.
    #[default]
    Wgan,
    /// Binary cross-entropy on the patch logits: the discriminator minimises
    /// `mean softplus(-D(real)) + mean softplus(D(fake))`, the generator the non-saturating
    /// `mean softplus(-D(fake))`, which maximises `log sigmoid(D(fake))`.
    Bce,
}

/// Loss weights of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepWeights {
    pub loss: LossKind,
    pub penalty_weight: f64,
    pub reconstruction_weight: f64,
    pub adversarial_weight: f64,
}

/// Every input of one iteration at one scale; all are constants of shape `(1, 3, H, W)` except
/// `alpha`, `(1, 1, 1, 1)`.
pub struct StepInputs<T: Element> {
    pub real: Var<T>,
    /// Input from the coarser scales for the random sample (zeros at scale 0).
    pub prev_random: Var<T>,
    /// Noise of the random sample, already repeated over RGB at scale 0.
    pub noise: Var<T>,
    /// Input from the coarser scales for the reconstruction (zeros at scale 0).
    pub prev_reconstruction: Var<T>,
    /// The fixed reconstruction noise of this scale.
    pub fixed_noise: Var<T>,
    /// Noise amplitude of this scale.
    pub amplitude: f64,
    /// Interpolation weight of the gradient penalty, one per sample.
    pub alpha: Var<T>,
}

/// The critic's losses, in the logged form. [`CriticLossTensors::read`] returns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CriticLosses {
    /// The whole critic loss, penalty included.
    pub critic: f64,
    /// The real term: `-mean D(real)` (WGAN) or `mean softplus(-D(real))` (BCE).
    pub real: f64,
    /// The fake term: `mean D(fake)` (WGAN) or `mean softplus(D(fake))` (BCE).
    pub fake: f64,
    /// The unweighted gradient penalty (0 when its weight is 0).
    pub gradient_penalty: f64,
}

/// The generator's losses, in the logged form. [`GeneratorLossTensors::read`] returns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorLosses {
    /// `reconstruction_weight * reconstruction + adversarial_weight * adversarial`.
    pub generator: f64,
    /// The unweighted reconstruction MSE.
    pub reconstruction: f64,
    /// `-mean D(fake)` (WGAN) or `mean softplus(-D(fake))` (BCE).
    pub adversarial: f64,
}

/// The terms of [`CriticLosses`] as one-element tensors on the training device.
#[derive(Clone, Debug)]
pub struct CriticLossTensors<T: Element> {
    pub critic: Tensor<T>,
    pub real: Tensor<T>,
    pub fake: Tensor<T>,
    /// `None` when the penalty weight is 0, in which case the penalty is not computed.
    pub gradient_penalty: Option<Tensor<T>>,
}

impl<T: Element> CriticLossTensors<T> {
    /// Copies the losses to the host, waiting for the GPU when they are there.
    pub fn read(&self) -> Result<CriticLosses> {
        Ok(CriticLosses {
            critic: self.critic.item()?.to_f64(),
            real: self.real.item()?.to_f64(),
            fake: self.fake.item()?.to_f64(),
            gradient_penalty: match &self.gradient_penalty {
                Some(penalty) => penalty.item()?.to_f64(),
                None => 0.0,
            },
        })
    }
}

/// The terms of [`GeneratorLosses`] as one-element tensors on the training device.
#[derive(Clone, Debug)]
pub struct GeneratorLossTensors<T: Element> {
    pub generator: Tensor<T>,
    pub reconstruction: Tensor<T>,
    pub adversarial: Tensor<T>,
}

impl<T: Element> GeneratorLossTensors<T> {
    /// Copies the losses to the host, waiting for the GPU when they are there.
    pub fn read(&self) -> Result<GeneratorLosses> {
        Ok(GeneratorLosses {
            generator: self.generator.item()?.to_f64(),
            reconstruction: self.reconstruction.item()?.to_f64(),
            adversarial: self.adversarial.item()?.to_f64(),
        })
    }
}

/// Converts `grad()` results to the optimiser's form.
fn values<T: Element>(grads: Vec<Option<Var<T>>>) -> Vec<Option<Tensor<T>>> {
    grads
        .into_iter()
        .map(|g| g.map(|g| g.value().clone()))
        .collect()
}

/// Runs the critic step: draws `fake = G(prev + a n, prev)` with its graph, updates the critic
/// with Adam and returns the losses and `fake` for the generator step.
pub fn critic_step<T: Element>(
    generator: &mut Generator<T>,
    critic: &mut Discriminator<T>,
    critic_optimizer: &mut Adam<T>,
    inputs: &StepInputs<T>,
    weights: &StepWeights,
) -> Result<(CriticLossTensors<T>, Var<T>)> {
    let z = inputs
        .prev_random
        .add(&inputs.noise.mul_scalar(inputs.amplitude)?)?;
    let fake = generator.forward(&z, &inputs.prev_random)?;
    let fake_detached = fake.detach();

    let real_score = critic.forward(&inputs.real)?;
    let fake_score = critic.forward(&fake_detached)?;
    let (real_term, fake_term) = match weights.loss {
        LossKind::Wgan => (real_score.mean()?.neg()?, fake_score.mean()?),
        LossKind::Bce => (
            real_score.bce_with_logits(true)?,
            fake_score.bce_with_logits(false)?,
        ),
    };
    let mut loss = real_term.add(&fake_term)?;
    let mut penalty_value = None;
    if weights.penalty_weight != 0.0 {
        let (penalty, _) = gradient_penalty(critic, &inputs.real, &fake_detached, &inputs.alpha)?;
        penalty_value = Some(penalty.value().clone());
        loss = loss.add(&penalty.mul_scalar(weights.penalty_weight)?)?;
    }
    let losses = CriticLossTensors {
        critic: loss.value().clone(),
        real: real_term.value().clone(),
        fake: fake_term.value().clone(),
        gradient_penalty: penalty_value,
    };

    let grads = grad(
        std::slice::from_ref(&loss),
        &critic.param_vars(),
        None,
        false,
    )?;
    critic_optimizer.step(&mut critic.params_mut(), &values(grads))?;
    Ok((losses, fake))
}

/// Runs the generator step: the reconstruction loss against the fixed noise plus the adversarial
/// loss of `fake` under the updated critic, whose parameters receive no gradient.
pub fn generator_step<T: Element>(
    generator: &mut Generator<T>,
    critic: &mut Discriminator<T>,
    generator_optimizer: &mut Adam<T>,
    inputs: &StepInputs<T>,
    fake: &Var<T>,
    weights: &StepWeights,
) -> Result<GeneratorLossTensors<T>> {
    let z = inputs
        .prev_reconstruction
        .add(&inputs.fixed_noise.mul_scalar(inputs.amplitude)?)?;
    let reconstruction = generator.forward(&z, &inputs.prev_reconstruction)?;
    let mse = reconstruction.mse(&inputs.real)?;

    let score = critic.forward(fake)?;
    let adversarial = match weights.loss {
        LossKind::Wgan => score.mean()?.neg()?,
        LossKind::Bce => score.bce_with_logits(true)?,
    };
    let loss = mse
        .mul_scalar(weights.reconstruction_weight)?
        .add(&adversarial.mul_scalar(weights.adversarial_weight)?)?;
    let losses = GeneratorLossTensors {
        generator: loss.value().clone(),
        reconstruction: mse.value().clone(),
        adversarial: adversarial.value().clone(),
    };

    let grads = grad(
        std::slice::from_ref(&loss),
        &generator.param_vars(),
        None,
        false,
    )?;
    generator_optimizer.step(&mut generator.params_mut(), &values(grads))?;
    Ok(losses)
}
