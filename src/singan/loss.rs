//! The adversarial losses of SinGAN training.

use crate::autograd::{grad, Var};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::singan::model::Discriminator;

/// Computes the WGAN-GP penalty at `x_hat = alpha * real + (1 - alpha) * fake`, with `alpha`
/// of shape `(N, 1, 1, 1)` (one value per sample): `mean over (n, h, w) of
/// (||g[n, :, h, w]||_2 - 1)^2` with `g = d(sum D(x_hat)) / d x_hat`.
///
/// The input gradient is taken with `create_graph = true`, so the penalty can be differentiated
/// with respect to the critic's weights. `fake` should be detached. Returns the penalty and the
/// input gradient.
pub fn gradient_penalty<T: Element>(
    critic: &mut Discriminator<T>,
    real: &Var<T>,
    fake: &Var<T>,
    alpha: &Var<T>,
) -> Result<(Var<T>, Var<T>)> {
    let mixed = crate::autograd::no_grad(|| -> Result<Var<T>> {
        alpha
            .mul(real)?
            .add(&alpha.neg()?.add_scalar(1.0)?.mul(fake)?)
    })?;
    // A fresh leaf, so the penalty's graph starts at the interpolated image.
    let interpolated = Var::param(mixed.value().clone());
    let score = critic.forward(&interpolated)?.sum()?;
    let input_grad = grad(&[score], std::slice::from_ref(&interpolated), None, true)?
        .remove(0)
        .ok_or_else(|| {
            Error::Autograd("the critic's output does not depend on its input".into())
        })?;
    let penalty = input_grad
        .channel_norm()?
        .add_scalar(-1.0)?
        .square()?
        .mean()?;
    Ok((penalty, input_grad))
}
