//! Batch normalisation over the channel axis of `(N, C, H, W)` tensors.
//!
//! Training mode normalises with the batch mean and biased variance of each channel. Its first
//! backward runs as one fused kernel (rayon on the CPU, `batchnorm_bwd` on a GPU). When the
//! backward pass is itself being recorded (a gradient penalty), the input gradient must be
//! differentiable through the mean, the variance and the weight. On the CPU it is then one op
//! with a closed-form backward. On a GPU, and when parameter gradients are recorded too, it is
//! built from taped ops. On the CPU a following leaky ReLU can be fused in as well. Inference
//! mode uses fixed running statistics and is composed from taped ops.

pub(crate) mod cpu;
pub(crate) mod cuda;

use crate::autograd::{is_grad_enabled, Var};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::ops::activation::leaky_mask_mul;
use crate::tensor::{same_device, Tensor};

/// Per-channel statistics of one training-mode batch norm call, on the input's device.
#[derive(Clone, Debug)]
pub struct BatchStats<T: Element> {
    /// Mean of each channel over `(N, H, W)`, shape `(C)`.
    pub mean: Tensor<T>,
    /// Biased variance of each channel, shape `(C)`.
    pub var: Tensor<T>,
    /// Dims `(N, C, H, W)` of the normalised input.
    input_dims: [usize; 4],
}

impl<T: Element> BatchStats<T> {
    /// Number of values each channel's statistics are taken over: `N * H * W`.
    pub fn count(&self) -> usize {
        let [n, _, h, w] = self.input_dims;
        n * h * w
    }

    /// Updates running statistics as PyTorch does:
    /// `running = (1 - momentum) * running + momentum * batch`, with the unbiased variance
    /// `var * m / (m - 1)` for `m = count()` (the biased one when `m = 1`). The running
    /// tensors must have shape `(C)` and be on the statistics' device; on a GPU the update is
    /// queued on the stream.
    pub fn update_running(
        &self,
        running_mean: &mut Tensor<T>,
        running_var: &mut Tensor<T>,
        momentum: f64,
    ) -> Result<()> {
        const OP: &str = "batch_norm_running_update";
        let channels = [self.input_dims[1]];
        running_mean.expect_dims(OP, "running_mean", &channels)?;
        running_var.expect_dims(OP, "running_var", &channels)?;
        let device = same_device(OP, &[&self.mean, running_mean, running_var])?;

        if device.is_cuda() {
            let gpu = self.mean.cuda(OP)?.device().clone();
            return cuda::update_running(
                &gpu,
                self.input_dims,
                self.mean.cuda(OP)?,
                self.var.cuda(OP)?,
                running_mean.cuda_mut(OP)?,
                running_var.cuda_mut(OP)?,
                T::from_f64(momentum),
            );
        }

        let count = self.count();
        let correction = if count > 1 {
            count as f64 / (count as f64 - 1.0)
        } else {
            1.0
        };
        let m = T::from_f64(momentum);
        let keep = T::from_f64(1.0 - momentum);
        let c = T::from_f64(correction);
        for (running, &batch) in running_mean.data_mut().iter_mut().zip(self.mean.as_slice()) {
            *running = keep * *running + m * batch;
        }
        for (running, &batch) in running_var.data_mut().iter_mut().zip(self.var.as_slice()) {
            *running = keep * *running + m * batch * c;
        }
        Ok(())
    }
}

/// Statistics that the fused first backward of training-mode batch norm reads, saved by the
/// forward pass.
enum SavedStats<T: Element> {
    Cpu(cpu::ChannelStats<T>),
    Cuda { mean: Tensor<T>, inv_std: Tensor<T> },
}

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

/// Builds the training-mode gradients from taped ops, so they can be differentiated: the
/// input gradient always, and the weight and bias gradients when `needs` marks them as needed. The
/// gradient penalty differentiates the critic with respect to its input only, so skipping the
/// two parameter gradients there saves full-size passes and their double backward.
fn backward_taped<T: Element>(
    x: &Var<T>,
    weight: &Var<T>,
    grad_output: &Var<T>,
    eps: f64,
    needs: &[bool],
) -> Result<[Option<Var<T>>; 3]> {
    let channels = weight.dims()[0];
    let per_channel = [1, channels, 1, 1];
    let centered = x.sub(&x.mean_axes(&[0, 2, 3])?)?;
    let var = centered.square()?.mean_axes(&[0, 2, 3])?;
    let inv_std = var.add_scalar(eps)?.sqrt()?.reciprocal_or_zero()?;
    let x_hat = centered.mul(&inv_std)?;

    let g_x_hat = grad_output.mul(&x_hat)?;
    let mean_g = grad_output.mean_axes(&[0, 2, 3])?;
    let mean_g_xhat = g_x_hat.mean_axes(&[0, 2, 3])?;
    let inner = grad_output.sub(&mean_g)?.sub(&x_hat.mul(&mean_g_xhat)?)?;
    // weight * inv_std is per channel, so the full-size tensor is multiplied once.
    let factor = inv_std.mul(&weight.reshape(&per_channel)?)?;
    let grad_input = inner.mul(&factor)?;

    let grad_weight = if needs.get(1).copied().unwrap_or(true) {
        Some(g_x_hat.sum_axes(&[0, 2, 3])?.reshape(&[channels])?)
    } else {
        None
    };
    let grad_bias = if needs.get(2).copied().unwrap_or(true) {
        Some(grad_output.sum_axes(&[0, 2, 3])?.reshape(&[channels])?)
    } else {
        None
    };
    Ok([Some(grad_input), grad_weight, grad_bias])
}

/// Records the training-mode input gradient of a CPU batch norm as one op whose own backward
/// is the closed form in [`cpu::input_grad_backward`]: two passes over the data where
/// differentiating [`backward_taped`] takes about twenty. When that backward is itself
/// recorded (a third derivative), the same closed form is built from taped ops.
fn input_grad_recorded<T: Element>(
    x: &Var<T>,
    weight: &Var<T>,
    grad_output: &Var<T>,
    dims: [usize; 4],
    stats: cpu::ChannelStats<T>,
    eps: f64,
) -> Result<Var<T>> {
    const OP: &str = "batch_norm_input_grad";
    let e = T::from_f64(eps);
    let (xv, wv, gv) = (x.value(), weight.value(), grad_output.value());
    same_device(OP, &[xv, wv, gv])?;
    let (xs, gs, ws) = (xv.as_slice(), gv.as_slice(), wv.as_slice());
    let mut sums = cpu::backward(xs, gs, dims, ws, &stats, e);
    let value = Tensor::from_vec(xv.shape(), std::mem::take(&mut sums.grad_input))?;
    let inputs = [x, weight, grad_output];
    Ok(Var::from_op(OP, value, &inputs, move |args| {
        let [x, w, g] = [&args.inputs[0], &args.inputs[1], &args.inputs[2]];
        if is_grad_enabled() {
            return input_grad_backward_taped(x, w, g, args.grad_output, eps, args.needs);
        }
        same_device(
            OP,
            &[x.value(), w.value(), g.value(), args.grad_output.value()],
        )?;
        let grads = cpu::input_grad_backward(
            x.value().as_slice(),
            g.value().as_slice(),
            args.grad_output.value().as_slice(),
            dims,
            w.value().as_slice(),
            &stats,
            &sums,
            e,
            (args.needs[0], args.needs[2]),
        );
        let full = |data: Option<Vec<T>>| -> Result<Option<Var<T>>> {
            data.map(|data| Ok(Var::constant(Tensor::from_vec(x.shape(), data)?)))
                .transpose()
        };
        let channels = [dims[1]];
        Ok(vec![
            full(grads.x)?,
            Some(Var::constant(Tensor::from_vec(channels, grads.weight)?)),
            full(grads.grad_output)?,
        ])
    }))
}

/// Builds the derivatives of the input gradient `weight s (g - <g> - x_hat <g x_hat>)` with
/// respect to `x`, `weight` and `g`, weighted by `upstream`, from taped ops, so they can be
/// differentiated once more. The formulas are those of [`cpu::input_grad_backward`]; `x_hat`
/// and `s` come from `x` through taped means, as in [`backward_taped`].
fn input_grad_backward_taped<T: Element>(
    x: &Var<T>,
    weight: &Var<T>,
    g: &Var<T>,
    upstream: &Var<T>,
    eps: f64,
    needs: &[bool],
) -> Result<Vec<Option<Var<T>>>> {
    const AXES: [usize; 3] = [0, 2, 3];
    let channels = weight.dims()[0];
    let count = (x.numel() / channels.max(1)) as f64;
    let centered = x.sub(&x.mean_axes(&AXES)?)?;
    let var = centered.square()?.mean_axes(&AXES)?;
    let inv_std = var.add_scalar(eps)?.sqrt()?.reciprocal_or_zero()?;
    let x_hat = centered.mul(&inv_std)?;
    let gamma_s = weight.reshape(&[1, channels, 1, 1])?.mul(&inv_std)?;
    let r = upstream;

    let mean_r = r.mean_axes(&AXES)?;
    let mean_g = g.mean_axes(&AXES)?;
    let mean_r_xhat = r.mul(&x_hat)?.mean_axes(&AXES)?;
    let mean_g_xhat = g.mul(&x_hat)?.mean_axes(&AXES)?;
    // A = <r g> - <r><g>.
    let a = r.mul(g)?.mean_axes(&AXES)?.sub(&mean_r.mul(&mean_g)?)?;
    let need = |index: usize| needs.get(index).copied().unwrap_or(true);

    let grad_x = if need(0) {
        let coefficient = mean_r_xhat.mul(&mean_g_xhat)?.mul_scalar(3.0)?.sub(&a)?;
        let terms = x_hat
            .mul(&coefficient)?
            .sub(&r.sub(&mean_r)?.mul(&mean_g_xhat)?)?
            .sub(&g.sub(&mean_g)?.mul(&mean_r_xhat)?)?;
        Some(terms.mul(&gamma_s.mul(&inv_std)?)?)
    } else {
        None
    };
    let grad_weight = if need(1) {
        let per_channel = a.sub(&mean_r_xhat.mul(&mean_g_xhat)?)?.mul(&inv_std)?;
        Some(per_channel.mul_scalar(count)?.reshape(&[channels])?)
    } else {
        None
    };
    let grad_g = if need(2) {
        let projected = r.sub(&mean_r)?.sub(&x_hat.mul(&mean_r_xhat)?)?;
        Some(projected.mul(&gamma_s)?)
    } else {
        None
    };
    Ok(vec![grad_x, grad_weight, grad_g])
}

/// Computes the three training-mode gradients with the fused kernel of the value's device.
fn backward_fused<T: Element>(
    x: &Var<T>,
    weight: &Var<T>,
    grad_output: &Var<T>,
    dims: [usize; 4],
    saved: &SavedStats<T>,
    eps: T,
) -> Result<[Var<T>; 3]> {
    const OP: &str = "batch_norm_train_backward";
    let channels = [dims[1]];
    let (x, w, g) = (x.value(), weight.value(), grad_output.value());
    same_device(OP, &[x, w, g])?;
    let (grad_input, grad_weight, grad_bias) = match saved {
        SavedStats::Cpu(stats) => {
            let grads = cpu::backward(x.as_slice(), g.as_slice(), dims, w.as_slice(), stats, eps);
            (
                Tensor::from_vec(x.shape(), grads.grad_input)?,
                Tensor::from_vec(channels, grads.grad_weight)?,
                Tensor::from_vec(channels, grads.grad_bias)?,
            )
        }
        SavedStats::Cuda { mean, inv_std } => {
            let grads = cuda::backward(
                x.cuda(OP)?,
                g.cuda(OP)?,
                dims,
                mean.cuda(OP)?,
                inv_std.cuda(OP)?,
                w.cuda(OP)?,
            )?;
            (
                Tensor::from_cuda(x.shape(), grads.grad_input)?,
                Tensor::from_cuda(channels, grads.grad_weight)?,
                Tensor::from_cuda(channels, grads.grad_bias)?,
            )
        }
    };
    Ok([
        Var::constant(grad_input),
        Var::constant(grad_weight),
        Var::constant(grad_bias),
    ])
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
    ) -> Result<(Var<T>, BatchStats<T>)> {
        self.batch_norm_train_then(weight, bias, eps, None)
    }

    /// Applies [`Var::batch_norm_train`] and then a leaky ReLU with `slope` in (0, 1]. On the
    /// CPU the two are one op: the normalised values are never stored, which saves a
    /// full-size pass and the memory of one tensor per block. The backward masks the gradient
    /// with the output (positive where the normalised value is) before the batch-norm kernel.
    /// Elsewhere, and for other slopes, it runs the two ops.
    pub fn batch_norm_train_leaky_relu(
        &self,
        weight: &Var<T>,
        bias: &Var<T>,
        eps: f64,
        slope: f64,
    ) -> Result<(Var<T>, BatchStats<T>)> {
        let on_cpu = !self.value().device().is_cuda();
        if on_cpu && slope > 0.0 && slope <= 1.0 {
            return self.batch_norm_train_then(weight, bias, eps, Some(slope));
        }
        let (normalized, stats) = self.batch_norm_train(weight, bias, eps)?;
        Ok((normalized.leaky_relu(slope)?, stats))
    }

    /// Training-mode batch norm, followed on the CPU by a leaky ReLU with `slope` when one is
    /// given (the CUDA path takes `None` only).
    fn batch_norm_train_then(
        &self,
        weight: &Var<T>,
        bias: &Var<T>,
        eps: f64,
        slope: Option<f64>,
    ) -> Result<(Var<T>, BatchStats<T>)> {
        let op: &'static str = match slope {
            None => "batch_norm_train",
            Some(_) => "batch_norm_train_leaky_relu",
        };
        let dims = check_params(op, self, weight, bias)?;
        if dims[0] * dims[2] * dims[3] == 0 {
            return Err(Error::shape(
                op,
                "batch statistics need at least one value per channel",
                &[self.dims()],
            ));
        }
        let channels = [dims[1]];
        let e = T::from_f64(eps);
        let (x, w, b) = (self.value(), weight.value(), bias.value());
        let (value, stats, saved) = if same_device(op, &[x, w, b])?.is_cuda() {
            let x_buffer = x.cuda(op)?;
            let stats = cuda::stats(x_buffer, dims, e)?;
            let y = cuda::normalize(x_buffer, dims, &stats, w.cuda(op)?, b.cuda(op)?)?;
            let mean = Tensor::from_cuda(channels, stats.mean)?;
            let var = Tensor::from_cuda(channels, stats.var)?;
            let inv_std = Tensor::from_cuda(channels, stats.inv_std)?;
            let saved = SavedStats::Cuda {
                mean: mean.clone(),
                inv_std,
            };
            (Tensor::from_cuda(x.shape(), y)?, (mean, var), saved)
        } else {
            let stats = cpu::channel_stats(x.as_slice(), dims);
            let scale: Vec<T> = (0..dims[1])
                .map(|c| w.as_slice()[c] / (stats.var[c] + e).sqrt())
                .collect();
            let shift: Vec<T> = (0..dims[1])
                .map(|c| b.as_slice()[c] - stats.mean[c] * scale[c])
                .collect();
            let slope = slope.map(T::from_f64);
            let data = cpu::normalize(x.as_slice(), dims, &scale, &shift, slope);
            let mean = Tensor::from_vec(channels, stats.mean.clone())?;
            let var = Tensor::from_vec(channels, stats.var.clone())?;
            (
                Tensor::from_vec(x.shape(), data)?,
                (mean, var),
                SavedStats::Cpu(stats),
            )
        };

        let out = Var::from_op(op, value, &[self, weight, bias], move |args| {
            let (x, w) = (&args.inputs[0], &args.inputs[1]);
            // The ReLU's mask-multiply first, as its own op (recorded when the backward is).
            // Applied inside the batch-norm kernels, whose sums are compute-bound, the mask
            // made them twice as slow.
            let g = match slope {
                Some(slope) => leaky_mask_mul(args.grad_output, args.output.value(), slope)?,
                None => args.grad_output.clone(),
            };
            if is_grad_enabled() {
                let needs_params = args.needs.iter().skip(1).any(|&need| need);
                if let (SavedStats::Cpu(stats), false) = (&saved, needs_params) {
                    let grad_input = input_grad_recorded(x, w, &g, dims, stats.clone(), eps)?;
                    return Ok(vec![Some(grad_input), None, None]);
                }
                return Ok(backward_taped(x, w, &g, eps, args.needs)?.into());
            }
            let grads = backward_fused(x, w, &g, dims, &saved, e)?;
            Ok(grads.into_iter().map(Some).collect())
        });
        let (mean, var) = stats;
        Ok((
            out,
            BatchStats {
                mean,
                var,
                input_dims: dims,
            },
        ))
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
        let device = same_device(
            "batch_norm_eval",
            &[self.value(), weight.value(), running_mean, running_var],
        )?;
        let per_channel = [1, channels, 1, 1];
        let inv_std = if device.is_cuda() {
            // 1 / sqrt(var + eps) from the element-wise kernels. reciprocal_or_zero is 1 / x
            // here, because a variance plus a positive eps is positive.
            Var::constant(running_var.reshape(per_channel)?)
                .add_scalar(eps)?
                .sqrt()?
                .reciprocal_or_zero()?
        } else {
            let e = T::from_f64(eps);
            let inv_std: Vec<T> = running_var
                .as_slice()
                .iter()
                .map(|&v| T::ONE / (v + e).sqrt())
                .collect();
            Var::constant(Tensor::from_vec(per_channel, inv_std)?)
        };
        let mean = Var::constant(running_mean.reshape(per_channel)?);
        let scale = weight.reshape(&per_channel)?.mul(&inv_std)?;
        self.sub(&mean)?
            .mul(&scale)?
            .add(&bias.reshape(&per_channel)?)
    }
}
