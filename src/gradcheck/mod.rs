//! Numeric gradient checks: analytic gradients from the tape against central differences.
//!
//! A check evaluates a scalar loss `f(inputs)`, takes its gradient with [`grad`], and compares
//! each element with `(f(x + h) - f(x - h)) / 2h`. Second-order checks differentiate
//! `sum_i <grad_i f, v_i>` (built with `create_graph = true`) the same way, which exercises the
//! backward of every backward function involved. Checks run in f64, on the CPU or, with the
//! `_on` functions, on another device: inputs are perturbed in host memory and moved to the
//! device for every evaluation.

mod cases;

pub use cases::{all_cases, CaseDims, GradCase};

use crate::autograd::{grad, Var};
use crate::error::{Error, Result};
use crate::tensor::{Device, Tensor};

/// A scalar loss of the inputs, built from taped ops.
pub type LossFn = Box<dyn Fn(&[Var<f64>]) -> Result<Var<f64>>>;

/// Inputs and loss of one check.
pub struct CheckSetup {
    pub inputs: Vec<Tensor<f64>>,
    pub loss: LossFn,
}

/// Step and tolerance of a check.
#[derive(Clone, Copy, Debug)]
pub struct CheckSettings {
    /// Finite-difference step.
    pub step: f64,
    /// Absolute tolerance on each element's error.
    pub atol: f64,
    /// Tolerance relative to the largest numeric gradient of the same input.
    pub rtol: f64,
}

impl Default for CheckSettings {
    /// A step of 1e-6 keeps the central difference's truncation error near 1e-12 for these ops
    /// while rounding stays near 1e-10 relative; the tolerances leave a factor of about 100 over
    /// the errors seen on correct gradients.
    fn default() -> Self {
        CheckSettings {
            step: 1e-6,
            atol: 1e-7,
            rtol: 1e-5,
        }
    }
}

/// The outcome of comparing one input's gradient.
#[derive(Clone, Debug)]
pub struct InputReport {
    pub input: usize,
    pub dims: Vec<usize>,
    pub max_abs_error: f64,
    /// `max |analytic - numeric| / max(max |numeric|, atol)` over the input.
    pub max_rel_error: f64,
    pub worst_index: usize,
    pub analytic: f64,
    pub numeric: f64,
    pub passed: bool,
}

/// The outcome of a whole check.
#[derive(Clone, Debug)]
pub struct CheckReport {
    pub inputs: Vec<InputReport>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.inputs.iter().all(|report| report.passed)
    }

    pub fn max_abs_error(&self) -> f64 {
        self.inputs
            .iter()
            .map(|r| r.max_abs_error)
            .fold(0.0, f64::max)
    }

    pub fn max_rel_error(&self) -> f64 {
        self.inputs
            .iter()
            .map(|r| r.max_rel_error)
            .fold(0.0, f64::max)
    }

    /// Describes the worst element of the first failing input, for assertion messages.
    pub fn describe_failure(&self) -> String {
        match self.inputs.iter().find(|r| !r.passed) {
            None => "all inputs passed".to_string(),
            Some(r) => format!(
                "input {} {:?}: element {} analytic {:.12e} numeric {:.12e} \
                 (max abs error {:.3e}, max rel error {:.3e})",
                r.input,
                r.dims,
                r.worst_index,
                r.analytic,
                r.numeric,
                r.max_abs_error,
                r.max_rel_error
            ),
        }
    }
}

/// Returns trainable leaves holding `inputs` on `device`.
fn leaves_on(inputs: &[Tensor<f64>], device: &Device) -> Result<Vec<Var<f64>>> {
    inputs
        .iter()
        .map(|t| Ok(Var::param(t.to_device(device)?)))
        .collect()
}

/// Evaluates `loss` at `inputs` on `device` and returns its single value.
fn evaluate(loss: &LossFn, inputs: &[Tensor<f64>], device: &Device) -> Result<f64> {
    let vars = leaves_on(inputs, device)?;
    let value = loss(&vars)?;
    value.item()
}

/// Computes the analytic gradient of `loss` for every input (zeros where it does not depend on
/// one).
pub fn analytic_gradients(loss: &LossFn, inputs: &[Tensor<f64>]) -> Result<Vec<Tensor<f64>>> {
    analytic_gradients_on(loss, inputs, &Device::Cpu)
}

/// Computes the analytic gradients like [`analytic_gradients`] with the ops on `device`, and
/// returns them in host memory.
pub fn analytic_gradients_on(
    loss: &LossFn,
    inputs: &[Tensor<f64>],
    device: &Device,
) -> Result<Vec<Tensor<f64>>> {
    let vars = leaves_on(inputs, device)?;
    let out = loss(&vars)?;
    if out.numel() != 1 {
        return Err(Error::invalid(
            "gradcheck",
            format!("the loss must have one element, not shape {:?}", out.dims()),
        ));
    }
    let grads = grad(&[out], &vars, None, false)?;
    grads
        .into_iter()
        .zip(inputs)
        .map(|(g, input)| match g {
            Some(g) => g.value().to_cpu(),
            None => Ok(Tensor::zeros(input.shape())),
        })
        .collect()
}

/// Computes central differences of `loss` for every element of every input.
pub fn numeric_gradients(
    loss: &LossFn,
    inputs: &[Tensor<f64>],
    step: f64,
) -> Result<Vec<Tensor<f64>>> {
    numeric_gradients_on(loss, inputs, step, &Device::Cpu)
}

/// Computes central differences like [`numeric_gradients`], evaluating the loss on `device`.
/// `inputs` are in host memory.
pub fn numeric_gradients_on(
    loss: &LossFn,
    inputs: &[Tensor<f64>],
    step: f64,
    device: &Device,
) -> Result<Vec<Tensor<f64>>> {
    let mut result = Vec::with_capacity(inputs.len());
    for index in 0..inputs.len() {
        let mut grads = vec![0.0; inputs[index].numel()];
        for (element, slot) in grads.iter_mut().enumerate() {
            let mut shifted = inputs.to_vec();
            let original = inputs[index].as_slice()[element];
            shifted[index].data_mut()[element] = original + step;
            let plus = evaluate(loss, &shifted, device)?;
            shifted[index].data_mut()[element] = original - step;
            let minus = evaluate(loss, &shifted, device)?;
            *slot = (plus - minus) / (2.0 * step);
        }
        result.push(Tensor::from_vec(inputs[index].shape(), grads)?);
    }
    Ok(result)
}

/// Compares an analytic gradient with a numeric one under `settings`.
pub fn compare(
    input: usize,
    analytic: &Tensor<f64>,
    numeric: &Tensor<f64>,
    settings: &CheckSettings,
) -> InputReport {
    let scale = numeric
        .as_slice()
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let mut report = InputReport {
        input,
        dims: analytic.dims().to_vec(),
        max_abs_error: 0.0,
        max_rel_error: 0.0,
        worst_index: 0,
        analytic: 0.0,
        numeric: 0.0,
        passed: true,
    };
    let mut worst_excess = f64::NEG_INFINITY;
    for (index, (&a, &n)) in analytic
        .as_slice()
        .iter()
        .zip(numeric.as_slice())
        .enumerate()
    {
        let error = (a - n).abs();
        let excess = error - (settings.atol + settings.rtol * scale);
        if error > report.max_abs_error || error.is_nan() {
            report.max_abs_error = error;
        }
        if excess > worst_excess || error.is_nan() {
            worst_excess = if error.is_nan() {
                f64::INFINITY
            } else {
                excess
            };
            report.worst_index = index;
            report.analytic = a;
            report.numeric = n;
        }
    }
    // The absolute tolerance floors the denominator, so an input whose true gradient is zero
    // reports rounding noise as a small relative error instead of 1.
    report.max_rel_error = report.max_abs_error / scale.max(settings.atol);
    report.passed = worst_excess <= 0.0 && report.max_abs_error.is_finite();
    report
}

/// Checks the gradient of `setup.loss` with respect to every input.
pub fn check(setup: &CheckSetup, settings: &CheckSettings) -> Result<CheckReport> {
    check_on(setup, settings, &Device::Cpu)
}

/// Checks like [`check`] with the ops on `device`. `setup.inputs` stay in host memory, and the
/// loss must accept inputs on `device` (every loss of [`all_cases`] moves its constants to the
/// device of its inputs).
pub fn check_on(
    setup: &CheckSetup,
    settings: &CheckSettings,
    device: &Device,
) -> Result<CheckReport> {
    let analytic = analytic_gradients_on(&setup.loss, &setup.inputs, device)?;
    let numeric = numeric_gradients_on(&setup.loss, &setup.inputs, settings.step, device)?;
    let inputs = analytic
        .iter()
        .zip(&numeric)
        .enumerate()
        .map(|(index, (a, n))| compare(index, a, n, settings))
        .collect();
    Ok(CheckReport { inputs })
}

/// Wraps a loss into its second-order form `sum_i <grad_i loss, v_i>`, whose gradient is a
/// Hessian-vector product; `directions[i]` is `v_i`, with the shape of input `i`. Each `v_i`
/// is moved to the device of its gradient.
pub fn second_order(loss: LossFn, directions: Vec<Tensor<f64>>) -> LossFn {
    Box::new(move |inputs: &[Var<f64>]| {
        let out = loss(inputs)?;
        let grads = grad(&[out], inputs, None, true)?;
        let mut total: Option<Var<f64>> = None;
        for (g, v) in grads.into_iter().zip(&directions) {
            let Some(g) = g else { continue };
            let v = v.to_device(&g.value().device())?;
            let term = g.mul(&Var::constant(v))?.sum()?;
            total = Some(match total {
                None => term,
                Some(previous) => previous.add(&term)?,
            });
        }
        total.ok_or_else(|| Error::invalid("gradcheck", "the loss depends on none of its inputs"))
    })
}

/// A deterministic standard-normal source (SplitMix64 and Box-Muller) for test data.
pub struct SeededNormal {
    state: u64,
    spare: Option<f64>,
}

impl SeededNormal {
    pub fn new(seed: u64) -> Self {
        SeededNormal {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Returns a uniform value in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Returns a standard normal value.
    pub fn normal(&mut self) -> f64 {
        if let Some(value) = self.spare.take() {
            return value;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(radius * angle.sin());
        radius * angle.cos()
    }

    /// Returns a tensor of `dims` with standard normal entries.
    pub fn tensor(&mut self, dims: &[usize]) -> Tensor<f64> {
        let values: Vec<f64> = (0..dims.iter().product::<usize>())
            .map(|_| self.normal())
            .collect();
        Tensor::from_vec(dims, values).expect("element count matches dims")
    }

    /// Returns a normal tensor whose entries lie at least `margin` away from zero, for ops with
    /// a kink at zero (a central difference across the kink is meaningless).
    pub fn tensor_away_from_zero(&mut self, dims: &[usize], margin: f64) -> Tensor<f64> {
        let mut t = self.tensor(dims);
        for v in t.data_mut() {
            if v.abs() < margin {
                *v = if *v < 0.0 { *v - margin } else { *v + margin };
            }
        }
        t
    }
}
