//! Rayon kernels for batch normalisation over the channel axis of NCHW buffers.
//!
//! Each channel is one task: its statistics are summed in a fixed order, so results do not depend
//! on the thread count.

use rayon::prelude::*;

use crate::element::{as_f32, DType, Element};
use crate::ops::elementwise::cpu::filled_vec;
use crate::ops::reduce::avx512;
use crate::ops::reduce::cpu::{lane_sum, lane_sums};
use crate::ops::vectorized;

/// Per-channel batch statistics: mean and biased variance over `(N, H, W)`.
#[derive(Clone, Debug)]
pub struct ChannelStats<T> {
    pub mean: Vec<T>,
    pub var: Vec<T>,
}

/// Calls `f(image, plane)` for every `(h, w)` plane of `channel` in an `(n, c, h*w)` buffer.
fn for_planes<'a, T>(
    x: &'a [T],
    c: usize,
    plane: usize,
    channel: usize,
    mut f: impl FnMut(usize, &'a [T]),
) {
    let n = x.len() / (c * plane).max(1);
    for image in 0..n {
        let start = (image * c + channel) * plane;
        f(image, &x[start..start + plane]);
    }
}

/// Computes each channel's mean and biased variance.
///
/// `f32` data is read once: the sums of the values and of their squares, both in f64, give
/// the variance as `E[x^2] - E[x]^2`. The cancellation in that difference loses about
/// `log10(mean^2 / var)` of f64's 16 digits. That is far fewer than f32 keeps while
/// `mean^2 / var` stays below about 1e8, as it does for convolution outputs, which have small
/// means. A channel of 1e4 +- 0.01 keeps only about 4 correct digits of its variance. `f64`
/// data, the precision of the gradient checks and reference comparisons, takes a second pass
/// over `x - mean`.
pub fn channel_stats<T: Element>(x: &[T], dims: [usize; 4]) -> ChannelStats<T> {
    let [n, c, h, w] = dims;
    let plane = h * w;
    let count = (n * plane) as f64;
    let one_pass = T::DTYPE == DType::F32;
    let stats: Vec<(T, T)> = (0..c)
        .into_par_iter()
        .map(|channel| {
            let (mut total, mut squares) = (0.0f64, 0.0f64);
            if one_pass {
                for_planes(x, c, plane, channel, |_, values| {
                    let [sum, sum_squares] = match as_f32(values) {
                        Some(values) if avx512::available() => avx512::value_sums(values),
                        _ => lane_sums(values, values, values, |v, _, _| {
                            let v = v.to_f64();
                            [v, v * v]
                        }),
                    };
                    total += sum;
                    squares += sum_squares;
                });
                let mean = total / count;
                let var = (squares / count - mean * mean).max(0.0);
                return (T::from_f64(mean), T::from_f64(var));
            }
            for_planes(x, c, plane, channel, |_, values| {
                total += lane_sum(values, |v| v.to_f64())
            });
            let mean = total / count;
            for_planes(x, c, plane, channel, |_, values| {
                squares += lane_sum(values, |v| {
                    let d = v.to_f64() - mean;
                    d * d
                })
            });
            (T::from_f64(mean), T::from_f64(squares / count))
        })
        .collect();
    ChannelStats {
        mean: stats.iter().map(|s| s.0).collect(),
        var: stats.iter().map(|s| s.1).collect(),
    }
}

/// Computes `y = max(scale[c] * x + shift[c], slope * (scale[c] * x + shift[c]))` per
/// channel `c`: batch norm with a fused leaky ReLU (`slope` in (0, 1]), or without one when
/// `slope` is `None`.
pub fn normalize<T: Element>(
    x: &[T],
    dims: [usize; 4],
    scale: &[T],
    shift: &[T],
    slope: Option<T>,
) -> Vec<T> {
    let [_, c, h, w] = dims;
    let plane = h * w;
    // SAFETY: `y` and `x` split into planes of equal lengths, so every element is written.
    unsafe {
        filled_vec(x.len(), |y| {
            if plane == 0 {
                return;
            }
            y.par_chunks_mut(plane)
                .zip(x.par_chunks(plane))
                .enumerate()
                .for_each(|(index, (y, x))| {
                    vectorized(|| {
                        let channel = index % c;
                        let (a, b) = (scale[channel], shift[channel]);
                        match slope {
                            None => {
                                for (out, &v) in y.iter_mut().zip(x) {
                                    out.write(a * v + b);
                                }
                            }
                            Some(slope) => {
                                for (out, &v) in y.iter_mut().zip(x) {
                                    let u = a * v + b;
                                    out.write(if u > T::ZERO { u } else { u * slope });
                                }
                            }
                        }
                    })
                });
        })
    }
}

/// Gradients of training-mode batch norm, all three at once.
pub struct BatchNormGrads<T> {
    pub grad_input: Vec<T>,
    pub grad_weight: Vec<T>,
    pub grad_bias: Vec<T>,
}

/// Computes the training-mode batch norm gradients per channel, with `s = 1 / sqrt(var + eps)`
/// and `x_hat = (x - mean) s`:
/// `grad_input = weight s (g - mean(g) - x_hat mean(g x_hat))`, `grad_weight = sum(g x_hat)`,
/// `grad_bias = sum(g)`.
///
pub fn backward<T: Element>(
    x: &[T],
    grad_output: &[T],
    dims: [usize; 4],
    weight: &[T],
    stats: &ChannelStats<T>,
    eps: T,
) -> BatchNormGrads<T> {
    let [n, c, h, w] = dims;
    let plane = h * w;
    let count = T::from_f64((n * plane) as f64);
    let sums: Vec<(T, T)> = (0..c)
        .into_par_iter()
        .map(|channel| {
            let (mean, inv_std) = (
                stats.mean[channel],
                T::ONE / (stats.var[channel] + eps).sqrt(),
            );
            let (mut sum_g, mut sum_g_xhat) = (0.0f64, 0.0f64);
            for image in 0..n {
                let start = (image * c + channel) * plane;
                let (g, v) = (&grad_output[start..start + plane], &x[start..start + plane]);
                let [g_sum, g_xhat_sum] = match (as_f32(g), as_f32(v)) {
                    (Some(g32), Some(v32)) if avx512::available() => {
                        let (mean, inv_std) = (mean.to_f64() as f32, inv_std.to_f64() as f32);
                        avx512::gradient_sums(g32, v32, mean, inv_std)
                    }
                    _ => lane_sums(g, v, v, |g, v, _| {
                        [g.to_f64(), (g * (v - mean) * inv_std).to_f64()]
                    }),
                };
                sum_g += g_sum;
                sum_g_xhat += g_xhat_sum;
            }
            (T::from_f64(sum_g), T::from_f64(sum_g_xhat))
        })
        .collect();

    let fill = |grad_input: &mut [std::mem::MaybeUninit<T>]| {
        if plane == 0 {
            return;
        }
        grad_input
            .par_chunks_mut(plane)
            .enumerate()
            .for_each(|(index, out)| {
                vectorized(|| {
                    let channel = index % c;
                    let start = index * plane;
                    let (mean, inv_std) = (
                        stats.mean[channel],
                        T::ONE / (stats.var[channel] + eps).sqrt(),
                    );
                    let (sum_g, sum_g_xhat) = sums[channel];
                    let (mean_g, mean_g_xhat) = (sum_g / count, sum_g_xhat / count);
                    let factor = weight[channel] * inv_std;
                    for ((o, &g), &v) in out
                        .iter_mut()
                        .zip(&grad_output[start..start + plane])
                        .zip(&x[start..start + plane])
                    {
                        let x_hat = (v - mean) * inv_std;
                        o.write(factor * (g - mean_g - x_hat * mean_g_xhat));
                    }
                })
            });
    };
    // SAFETY: the planes cover the buffer and each is written in full.
    let grad_input = unsafe { filled_vec(x.len(), fill) };
    BatchNormGrads {
        grad_input,
        grad_weight: sums.iter().map(|s| s.1).collect(),
        grad_bias: sums.iter().map(|s| s.0).collect(),
    }
}

/// Gradients of the training-mode input gradient `grad_input(x, weight, g)` of [`backward`],
/// given an upstream gradient `r` of `grad_input`.
pub struct InputGradGrads<T> {
    /// With respect to the batch-norm input `x`, when asked for.
    pub x: Option<Vec<T>>,
    /// With respect to the batch-norm weight, one per channel.
    pub weight: Vec<T>,
    /// With respect to the gradient `g` that flowed into the batch norm's output, when asked for.
    pub grad_output: Option<Vec<T>>,
}

/// Differentiates `grad_input = weight s (g - <g> - x_hat <g x_hat>)` (per channel, `<.>` the
/// mean over `(N, H, W)`), weighted by the upstream gradient `r`. With `A = <r g> - <r><g>`:
///
/// * `d/dg = weight s (r - <r> - x_hat <r x_hat>)`, the first backward applied to `r`;
/// * `d/dweight = s N (A - <r x_hat><g x_hat>)`;
/// * `d/dx = weight s^2 (x_hat (3 <r x_hat><g x_hat> - A) - (r - <r>) <g x_hat>
///   - <r x_hat> (g - <g>))`, from the dependence of the mean, `s` and `x_hat` on `x`.
///
/// `sums` is the first backward's result, whose `grad_bias` and `grad_weight` are the
/// per-channel `sum(g)` and `sum(g x_hat)`. One pass sums the three products of `r`, and a
/// second writes the requested full-size gradients.
#[allow(clippy::too_many_arguments)]
pub fn input_grad_backward<T: Element>(
    x: &[T],
    grad_output: &[T],
    upstream: &[T],
    dims: [usize; 4],
    weight: &[T],
    stats: &ChannelStats<T>,
    sums: &BatchNormGrads<T>,
    eps: T,
    needs: (bool, bool),
) -> InputGradGrads<T> {
    let [n, c, h, w] = dims;
    let plane = h * w;
    let count = (n * plane) as f64;
    let mean_and_scale = |channel: usize| {
        let inv_std = T::ONE / (stats.var[channel] + eps).sqrt();
        (stats.mean[channel], inv_std)
    };
    // Per channel: sum(r), sum(r x_hat), sum(r g).
    let upstream_sums: Vec<[f64; 3]> = (0..c)
        .into_par_iter()
        .map(|channel| {
            let (mean, inv_std) = mean_and_scale(channel);
            let mut totals = [0.0f64; 3];
            for image in 0..n {
                let range = (image * c + channel) * plane..(image * c + channel + 1) * plane;
                let (r, v, g) = (
                    &upstream[range.clone()],
                    &x[range.clone()],
                    &grad_output[range],
                );
                let sums = match (as_f32(r), as_f32(v), as_f32(g)) {
                    (Some(r32), Some(v32), Some(g32)) if avx512::available() => {
                        let (mean, inv_std) = (mean.to_f64() as f32, inv_std.to_f64() as f32);
                        avx512::upstream_sums(r32, v32, g32, mean, inv_std)
                    }
                    _ => lane_sums(r, v, g, |r, v, g| {
                        let products = [r * (v - mean) * inv_std, r * g];
                        [r.to_f64(), products[0].to_f64(), products[1].to_f64()]
                    }),
                };
                for (total, sum) in totals.iter_mut().zip(sums) {
                    *total += sum;
                }
            }
            totals
        })
        .collect();

    // Per channel, each output as a combination of x_hat, r and g plus a constant.
    struct Coefficients<T> {
        mean: T,
        inv_std: T,
        x: [T; 4],
        grad_output: [T; 3],
    }
    let mut grad_weight = Vec::with_capacity(c);
    let coefficients: Vec<Coefficients<T>> = (0..c)
        .map(|channel| {
            let (mean, inv_std) = mean_and_scale(channel);
            let s = inv_std.to_f64();
            let gamma = weight[channel].to_f64();
            let mean_g = sums.grad_bias[channel].to_f64() / count;
            let mean_g_xhat = sums.grad_weight[channel].to_f64() / count;
            let [sum_r, sum_r_xhat, sum_r_g] = upstream_sums[channel];
            let (mean_r, mean_r_xhat) = (sum_r / count, sum_r_xhat / count);
            let a = sum_r_g / count - mean_r * mean_g;
            grad_weight.push(T::from_f64(s * count * (a - mean_r_xhat * mean_g_xhat)));
            let k = gamma * s * s;
            let x = [
                k * (3.0 * mean_r_xhat * mean_g_xhat - a),
                -k * mean_g_xhat,
                -k * mean_r_xhat,
                k * (mean_r * mean_g_xhat + mean_r_xhat * mean_g),
            ];
            let grad_output = [-gamma * s * mean_r_xhat, gamma * s, -gamma * s * mean_r];
            Coefficients {
                mean,
                inv_std,
                x: x.map(T::from_f64),
                grad_output: grad_output.map(T::from_f64),
            }
        })
        .collect();

    let (needs_x, needs_grad_output) = needs;
    let full = |wanted: bool| {
        if wanted {
            vec![T::ZERO; x.len()]
        } else {
            Vec::new()
        }
    };
    let (mut grad_x, mut grad_g) = (full(needs_x), full(needs_grad_output));
    if plane > 0 {
        let planes = n * c;
        plane_slots(&mut grad_x, plane, planes)
            .into_par_iter()
            .zip(plane_slots(&mut grad_g, plane, planes))
            .enumerate()
            .for_each(|(index, (out_x, out_g))| {
                vectorized(|| {
                    let k = &coefficients[index % c];
                    let range = index * plane..(index + 1) * plane;
                    let (r, v, g) = (
                        &upstream[range.clone()],
                        &x[range.clone()],
                        &grad_output[range],
                    );
                    if let Some(out_x) = out_x {
                        let [ax, ar, ag, a0] = k.x;
                        for (((o, &r), &v), &g) in out_x.iter_mut().zip(r).zip(v).zip(g) {
                            *o = ax * ((v - k.mean) * k.inv_std) + ar * r + ag * g + a0;
                        }
                    }
                    if let Some(out_g) = out_g {
                        let [bx, br, b0] = k.grad_output;
                        for ((o, &r), &v) in out_g.iter_mut().zip(r).zip(v) {
                            *o = bx * ((v - k.mean) * k.inv_std) + br * r + b0;
                        }
                    }
                })
            });
    }
    InputGradGrads {
        x: needs_x.then_some(grad_x),
        weight: grad_weight,
        grad_output: needs_grad_output.then_some(grad_g),
    }
}

/// Splits `buffer` into `planes` planes of `plane` elements, or gives `planes` empty slots when
/// the buffer is empty (an output that was not asked for).
fn plane_slots<T>(buffer: &mut [T], plane: usize, planes: usize) -> Vec<Option<&mut [T]>> {
    if buffer.is_empty() {
        (0..planes).map(|_| None).collect()
    } else {
        buffer.chunks_mut(plane).map(Some).collect()
    }
}
