//! Training settings, with the reference implementation's defaults.

use serde::{Deserialize, Serialize};

use crate::singan::pyramid::{PyramidConfig, PyramidRule};
use crate::singan::step::{LossKind, StepWeights};

/// Every setting of a training run. Saved with the model, so a run can be resumed and sampled
/// with the settings it was trained with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Shorter side of the coarsest scale, in pixels.
    pub min_size: usize,
    /// Longer side of the finest scale, in pixels.
    pub max_size: usize,
    /// Initial per-scale factor from which the number of scales follows.
    pub scale_factor_init: f64,
    /// Noise amplitude relative to the reconstruction's RMSE at each scale above 0.
    pub noise_weight: f64,
    /// Last iteration index per scale: iterations `0..=num_steps` run.
    pub num_steps: usize,
    pub lr: f64,
    pub gen_betas: (f64, f64),
    pub dis_betas: (f64, f64),
    /// Critic steps per generator step.
    pub num_critic: usize,
    /// Iterations between learning-rate drops.
    pub step_size: usize,
    /// Learning-rate factor at each drop.
    pub gamma: f64,
    pub penalty_weight: f64,
    pub reconstruction_weight: f64,
    pub adversarial_weight: f64,
    pub min_features: usize,
    pub max_features: usize,
    pub num_blocks: usize,
    pub kernel_size: usize,
    pub padding: usize,
    pub seed: u64,
    pub print_every: usize,
    pub eval_every: usize,
    pub loss: LossKind,
    pub pyramid_rule: PyramidRule,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            min_size: 25,
            max_size: 250,
            scale_factor_init: 0.75,
            noise_weight: 0.1,
            num_steps: 4000,
            lr: 5e-4,
            gen_betas: (0.5, 0.9),
            dis_betas: (0.5, 0.9),
            num_critic: 1,
            step_size: 2000,
            gamma: 0.1,
            penalty_weight: 0.1,
            reconstruction_weight: 10.0,
            adversarial_weight: 1.0,
            min_features: 32,
            max_features: 32,
            num_blocks: 5,
            kernel_size: 3,
            padding: 0,
            seed: 0,
            print_every: 200,
            eval_every: 100,
            loss: LossKind::Wgan,
            pyramid_rule: PyramidRule::Spec,
        }
    }
}

/// Feature count that no layer exceeds at any scale: the doubling every 4 scales stops here.
pub const MAX_FEATURES: usize = 128;

impl TrainConfig {
    pub fn pyramid_config(&self) -> PyramidConfig {
        PyramidConfig {
            min_size: self.min_size,
            max_size: self.max_size,
            scale_factor_init: self.scale_factor_init,
            rule: self.pyramid_rule,
            num_blocks: self.num_blocks,
            kernel_size: self.kernel_size,
        }
    }

    pub fn step_weights(&self) -> StepWeights {
        StepWeights {
            loss: self.loss,
            penalty_weight: self.penalty_weight,
            reconstruction_weight: self.reconstruction_weight,
            adversarial_weight: self.adversarial_weight,
        }
    }

    /// Feature counts at `scale`: `min(features * 2^floor(scale / 4), 128)` for both bounds.
    pub fn features_at(&self, scale: usize) -> (usize, usize) {
        let widen = |features: usize| {
            features
                .saturating_mul(1 << (scale / 4).min(16))
                .min(MAX_FEATURES)
        };
        (widen(self.max_features), widen(self.min_features))
    }

    /// Checks the settings that no later step validates, naming the option to fix.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--num-blocks", self.num_blocks),
            ("--kernel-size", self.kernel_size),
            ("--min-features", self.min_features),
            ("--max-features", self.max_features),
            ("--num-critic", self.num_critic),
            ("--print-every", self.print_every),
            ("--eval-every", self.eval_every),
            ("--step-size", self.step_size),
        ];
        for (option, value) in positive {
            if value == 0 {
                return Err(format!("{option} must be at least 1"));
            }
        }
        if self.num_blocks < 2 {
            return Err(format!(
                "--num-blocks {} must be at least 2 (blocks plus a last convolution)",
                self.num_blocks
            ));
        }
        if self.kernel_size.is_multiple_of(2) {
            return Err(format!(
                "--kernel-size {} must be odd so the networks keep images centred",
                self.kernel_size
            ));
        }
        if 2 * self.padding >= self.kernel_size {
            return Err(format!(
                "--padding {} must be smaller than half the kernel size {}, or the networks would not shrink their input",
                self.padding, self.kernel_size
            ));
        }
        for (option, value) in [
            ("--min-features", self.min_features),
            ("--max-features", self.max_features),
        ] {
            if value > MAX_FEATURES {
                return Err(format!(
                    "{option} {value} is above {MAX_FEATURES}, the widest that any scale's \
                     networks get; pass at most {MAX_FEATURES}"
                ));
            }
        }
        if self.min_features > self.max_features {
            return Err(format!(
                "--min-features {} is larger than --max-features {}",
                self.min_features, self.max_features
            ));
        }
        let positive_floats = [
            ("--lr", self.lr),
            ("--scale-factor-init", self.scale_factor_init),
            ("--gamma", self.gamma),
        ];
        for (option, value) in positive_floats {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("{option} {value} must be a finite number above 0"));
            }
        }
        let non_negative = [
            ("--noise-weight", self.noise_weight),
            ("--penalty-weight", self.penalty_weight),
            ("--reconstruction-weight", self.reconstruction_weight),
            ("--adversarial-weight", self.adversarial_weight),
        ];
        for (option, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{option} {value} must be zero or positive"));
            }
        }
        for (option, (b1, b2)) in [
            ("--gen-betas", self.gen_betas),
            ("--dis-betas", self.dis_betas),
        ] {
            if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
                return Err(format!("{option} {b1},{b2}: both betas must lie in [0, 1)"));
            }
        }
        Ok(())
    }
}
