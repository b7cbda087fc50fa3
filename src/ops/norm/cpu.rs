//! Rayon kernels for batch normalisation over the channel axis of NCHW buffers.
//!
//! Each channel is one task: its statistics are summed in a fixed order, so results do not depend
//! on the thread count.

use rayon::prelude::*;

use crate::element::Element;
use crate::ops::reduce::cpu::{lane_sum, LANES};

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

/// Computes each channel's mean and biased variance (two passes, for accuracy).
pub fn channel_stats<T: Element>(x: &[T], dims: [usize; 4]) -> ChannelStats<T> {
    let [n, c, h, w] = dims;
    let plane = h * w;
    let count = (n * plane) as f64;
    let stats: Vec<(T, T)> = (0..c)
        .into_par_iter()
        .map(|channel| {
            // Sums run in f64 so the statistics of a large f32 channel keep f32 accuracy.
            let mut total = 0.0f64;
            for_planes(x, c, plane, channel, |_, values| {
                total += lane_sum(values, |v| v.to_f64())
            });
            let mean = total / count;
            let mut squares = 0.0f64;
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

/// Computes `y = scale[c] * x + shift[c]` for every element of channel `c`.
pub fn scale_shift<T: Element>(x: &[T], dims: [usize; 4], scale: &[T], shift: &[T]) -> Vec<T> {
    let [_, c, h, w] = dims;
    let plane = h * w;
    let mut y = vec![T::ZERO; x.len()];
    if plane == 0 {
        return y;
    }
    y.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .enumerate()
        .for_each(|(index, (y, x))| {
            let channel = index % c;
            let (a, b) = (scale[channel], shift[channel]);
            for (out, &v) in y.iter_mut().zip(x) {
                *out = a * v + b;
            }
        });
    y
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
                sum_g += lane_sum(g, |g| g.to_f64());
                let mut lanes = [0.0f64; LANES];
                let pairs = g.chunks_exact(LANES).zip(v.chunks_exact(LANES));
                for (g, v) in pairs {
                    for ((lane, &g), &v) in lanes.iter_mut().zip(g).zip(v) {
                        *lane += (g * (v - mean) * inv_std).to_f64();
                    }
                }
                let tail = plane - plane % LANES;
                for ((lane, &g), &v) in lanes.iter_mut().zip(&g[tail..]).zip(&v[tail..]) {
                    *lane += (g * (v - mean) * inv_std).to_f64();
                }
                sum_g_xhat += lanes.iter().sum::<f64>();
            }
            (T::from_f64(sum_g), T::from_f64(sum_g_xhat))
        })
        .collect();

    let mut grad_input = vec![T::ZERO; x.len()];
    if plane > 0 {
        grad_input
            .par_chunks_mut(plane)
            .enumerate()
            .for_each(|(index, out)| {
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
                    *o = factor * (g - mean_g - x_hat * mean_g_xhat);
                }
            });
    }
    BatchNormGrads {
        grad_input,
        grad_weight: sums.iter().map(|s| s.1).collect(),
        grad_bias: sums.iter().map(|s| s.0).collect(),
    }
}
