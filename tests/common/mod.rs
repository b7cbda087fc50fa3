//! Helpers shared by test files: the GPU probe, error measures and training helpers.

// Each test file uses only some of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use singan::cuda::CudaError;
use singan::singan::run::LossRecord;
use singan::singan::train::Reporter;
use singan::Device;

/// Returns GPU 0, or `None` after printing why the tests skip. Fails the test when a GPU is
/// present but its kernels cannot be loaded.
pub fn gpu() -> Option<Device> {
    static PROBE: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
    let probed = PROBE.get_or_init(|| match singan::cuda::probe_device(0) {
        Ok(device) => Ok(Device::Cuda(device.ordinal())),
        Err(error @ (CudaError::DriverNotFound | CudaError::DeviceNotFound { .. })) => {
            Err(error.to_string())
        }
        Err(error) => panic!("GPU 0 is present but cannot run the kernels: {error}"),
    });
    match probed {
        Ok(device) => Some(*device),
        Err(reason) => {
            println!("skipped: no CUDA device ({reason})");
            None
        }
    }
}

/// Returns `max |a - b| / max(1, max |b|)`, or infinity when either contains NaN.
pub fn distance(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let mut worst = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let error = (x - y).abs();
        if error.is_nan() {
            return f64::INFINITY;
        }
        worst = worst.max(error);
    }
    worst / scale
}

/// Reads the `losses.jsonl` records of a run folder.
pub fn read_losses(dir: &Path) -> Vec<LossRecord> {
    std::fs::read_to_string(dir.join("losses.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A reporter that discards every report.
pub struct Quiet;

impl Reporter for Quiet {
    fn scale_started(&mut self, _: usize, _: (usize, usize), _: usize, _: f64, _: usize) {}
    fn iteration(&mut self, _: usize, _: usize, _: &BTreeMap<String, f64>) {}
    fn line(&mut self, _: &str) {}
    fn scale_finished(&mut self, _: usize, _: f64) {}
}

/// Starts `count` copies of `singan` with `args` at the same time and waits for them all.
pub fn singan_concurrently(args: &[&str], count: usize) -> Vec<Output> {
    let children: Vec<_> = (0..count)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_singan"))
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect()
}

/// Lists the paths of the entries directly inside `dir`.
pub fn folder_entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}
