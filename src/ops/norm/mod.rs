//! Batch normalisation over the channel axis of `(N, C, H, W)` tensors.
//!
//! Training mode normalises with the batch mean and biased variance of each channel. Its first
//! backward runs as one fused kernel; when the backward pass is itself being recorded (a
//! gradient penalty), it is built from taped ops instead, so that the input gradient can be
//! differentiated through the mean, the variance and the weight. Inference mode uses fixed
//! running statistics and is composed from taped ops.

pub(crate) mod cpu;

pub use cpu::ChannelStats;

use crate::autograd::{is_grad_enabled, Var};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Checks an NCHW input and per-channel parameters of length `C`.
fn check_params<T: Element>(
    op: &'static str,
    x: &Var<T>,
    weight: &Var<T>,
    bias: &Var<T>,
) -> Result<[usize; 4]> {
    let dims = x.value().dims4(op, "input")?;
    let channels = dims[1];
    for (what, param) in [("weight", weight), ("bias", bias)] {
        if param.dims() != [channels] {
            return Err(Error::shape(
                op,
                format!("{what} must have one entry per channel ({channels})"),
                &[x.dims(), param.dims()],
            ));
        }
    }
    Ok(dims)
}

/// Builds the three training-mode gradients from taped ops, so they can be differentiated.
fn backward_taped<T: Element>(
    x: &Var<T>,
    weight: &Var<T>,
    grad_output: &Var<T>,
    eps: f64,
) -> Result<[Var<T>; 3]> {
    let channels = weight.dims()[0];
    let per_channel = [1, channels, 1, 1];
    let centered = x.sub(&x.mean_axes(&[0, 2, 3])?)?;
    let var = centered.square()?.mean_axes(&[0, 2, 3])?;
    let inv_std = var.add_scalar(eps)?.sqrt()?.reciprocal_or_zero()?;
    let x_hat = centered.mul(&inv_std)?;

    let mean_g = grad_output.mean_axes(&[0, 2, 3])?;
    let mean_g_xhat = grad_output.mul(&x_hat)?.mean_axes(&[0, 2, 3])?;
    let inner = grad_output.sub(&mean_g)?.sub(&x_hat.mul(&mean_g_xhat)?)?;
    let grad_input = inner.mul(&inv_std)?.mul(&weight.reshape(&per_channel)?)?;

    let grad_weight = grad_output
        .mul(&x_hat)?
        .sum_axes(&[0, 2, 3])?
        .reshape(&[channels])?;
    let grad_bias = grad_output.sum_axes(&[0, 2, 3])?.reshape(&[channels])?;
    Ok([grad_input, grad_weight, grad_bias])
}

impl<T: Element> Var<T> {
    /// Normalises each channel with the batch mean and biased variance, then applies
    /// `weight * x_hat + bias`. Returns the output and the batch statistics, from which the
    /// caller updates its running statistics.
    pub fn batch_norm_train(
        &self,
        weight: &Var<T>,
        bias: &Var<T>,
        eps: f64,
    ) -> Result<(Var<T>, ChannelStats<T>)> {
        let dims = check_params("batch_norm_train", self, weight, bias)?;
        if dims[0] * dims[2] * dims[3] == 0 {
            return Err(Error::shape(
                "batch_norm_train",
                "batch statistics need at least one value per channel",
                &[self.dims()],
            ));
        }
        let stats = cpu::channel_stats(self.value().as_slice(), dims);
        let e = T::from_f64(eps);
        let scale: Vec<T> = (0..dims[1])
            .map(|c| weight.value().as_slice()[c] / (stats.var[c] + e).sqrt())
            .collect();
        let shift: Vec<T> = (0..dims[1])
            .map(|c| bias.value().as_slice()[c] - stats.mean[c] * scale[c])
            .collect();
        let data = cpu::scale_shift(self.value().as_slice(), dims, &scale, &shift);
        let value = Tensor::from_vec(self.shape(), data)?;

        let saved = stats.clone();
        let out = Var::from_op(
            "batch_norm_train",
            value,
            &[self, weight, bias],
            move |args| {
                let (x, w, g) = (&args.inputs[0], &args.inputs[1], args.grad_output);
                let [grad_input, grad_weight, grad_bias] = if is_grad_enabled() {
                    backward_taped(x, w, g, eps)?
                } else {
                    let grads = cpu::backward(
                        x.value().as_slice(),
                        g.value().as_slice(),
                        dims,
                        w.value().as_slice(),
                        &saved,
                        e,
                    );
                    [
                        Var::constant(Tensor::from_vec(x.shape(), grads.grad_input)?),
                        Var::constant(Tensor::from_vec([dims[1]], grads.grad_weight)?),
                        Var::constant(Tensor::from_vec([dims[1]], grads.grad_bias)?),
                    ]
                };
                Ok(vec![Some(grad_input), Some(grad_weight), Some(grad_bias)])
            },
        );
        Ok((out, stats))
    }

    /// Normalises each channel with fixed statistics `running_mean`, `running_var` (each `(C)`),
    /// then applies `weight * x_hat + bias`.
    pub fn batch_norm_eval(
        &self,
        weight: &Var<T>,
        bias: &Var<T>,
        running_mean: &Tensor<T>,
        running_var: &Tensor<T>,
        eps: f64,
    ) -> Result<Var<T>> {
        let dims = check_params("batch_norm_eval", self, weight, bias)?;
        let channels = dims[1];
        running_mean.expect_dims("batch_norm_eval", "running_mean", &[channels])?;
        running_var.expect_dims("batch_norm_eval", "running_var", &[channels])?;
        let e = T::from_f64(eps);
        let inv_std: Vec<T> = running_var
            .as_slice()
            .iter()
            .map(|&v| T::ONE / (v + e).sqrt())
            .collect();
        let per_channel = [1, channels, 1, 1];
        let inv_std = Var::constant(Tensor::from_vec(per_channel, inv_std)?);
        let mean = Var::constant(running_mean.reshape(per_channel)?);
        let scale = weight.reshape(&per_channel)?.mul(&inv_std)?;
        self.sub(&mean)?
            .mul(&scale)?
            .add(&bias.reshape(&per_channel)?)
    }
}
