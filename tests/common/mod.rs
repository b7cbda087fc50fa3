//! Helpers shared by test files: the GPU probe, error measures, training helpers and test
//! folders.

// Each test file uses only some of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, Once, OnceLock, PoisonError};

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

/// A fresh folder for one test's files, removed with everything in it when the guard is
/// dropped, which also happens while a failing test unwinds.
///
/// The folder is `singan-TEST-PID-NAME` under the system temp dir, where TEST is the test
/// file's name with `-` for `_`. The process id keeps test binaries that run at the same time
/// apart, and `new` rejects a name that a live guard of the same process already uses.
///
/// Set `SINGAN_KEEP_TEST_FILES=1` to keep the folders for inspection: each guard then prints
/// the path of its folder instead of removing it.
pub struct TestFolder {
    path: PathBuf,
}

impl TestFolder {
    /// Creates the folder for `name`, first removing a stale folder of the same name that an
    /// earlier process with the same id left.
    ///
    /// Panics when another live guard of this process uses `name`, because dropping either
    /// guard would delete the other's files.
    pub fn new(name: &str) -> Self {
        let test = env!("CARGO_CRATE_NAME").replace('_', "-");
        let folder = format!("singan-{test}-{}-{name}", std::process::id());
        let path = std::env::temp_dir().join(folder);
        let claimed = lock(&LIVE_FOLDERS).insert(path.clone());
        assert!(
            claimed,
            "a live test folder already uses the name {name:?}, so give each test its own name"
        );
        let _ = std::fs::remove_dir_all(&path);
        if let Err(error) = std::fs::create_dir_all(&path) {
            panic!("cannot create the test folder {}: {error}", path.display());
        }
        Self { path }
    }

    /// Hands the folder to a handler that removes it when the test process exits, and returns
    /// its path. This is for a fixture kept in a static, because Rust never drops statics.
    ///
    /// NOTE: a process killed by a signal or by an abort never runs the handler, so its
    /// fixture folder stays behind.
    pub fn remove_at_exit(self) -> PathBuf {
        static REGISTER: Once = Once::new();
        REGISTER.call_once(|| {
            // SAFETY: `remove_exit_folders` has the `extern "C" fn()` signature that `atexit`
            // expects, and it catches every panic, so no panic unwinds into the C library.
            let status = unsafe { libc::atexit(remove_exit_folders) };
            assert_eq!(
                status, 0,
                "cannot register the exit handler for test folders"
            );
        });
        let path = self.path.clone();
        lock(&EXIT_FOLDERS).push(self);
        path
    }

    /// Writes `bytes` to the file `name` in the folder and returns the file's path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Returns the names of the entries directly inside the folder, sorted.
    pub fn entry_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.path)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Deref for TestFolder {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TestFolder {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestFolder {
    fn drop(&mut self) {
        lock(&LIVE_FOLDERS).remove(&self.path);
        if std::env::var_os("SINGAN_KEEP_TEST_FILES").is_some_and(|value| value == "1") {
            eprintln!("kept the test folder {}", self.path.display());
            return;
        }
        // A drop that panics while a failing test unwinds would abort the whole test binary,
        // so a folder that cannot be removed is only reported.
        match std::fs::remove_dir_all(&self.path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => eprintln!(
                "warning: cannot remove the test folder {}: {error}",
                self.path.display()
            ),
            _ => {}
        }
    }
}

/// The folders of the live `TestFolder` guards of this process.
static LIVE_FOLDERS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// The folders that `remove_exit_folders` removes when the process exits.
static EXIT_FOLDERS: Mutex<Vec<TestFolder>> = Mutex::new(Vec::new());

/// Locks `mutex` even when a panicking test poisoned it, because the folder lists stay valid
/// after any panic.
fn lock<T>(mutex: &'static Mutex<T>) -> MutexGuard<'static, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

extern "C" fn remove_exit_folders() {
    // A panic that reached the end of an `extern "C"` function would abort the process.
    let _ = std::panic::catch_unwind(|| {
        let folders = std::mem::take(&mut *lock(&EXIT_FOLDERS));
        drop(folders);
    });
}
