//! A temporary folder for the unit tests of the command-line modules.

use std::path::{Path, PathBuf};

/// A fresh, empty folder under the temp dir, removed with everything in it when the guard is
/// dropped, which also happens while a failing test unwinds.
pub struct TestFolder(PathBuf);

impl TestFolder {
    /// Creates `singan-cli-PID-NAME` under the temp dir, removing a stale folder of that name.
    pub fn new(name: &str) -> Self {
        let folder = format!("singan-cli-{}-{name}", std::process::id());
        let path = std::env::temp_dir().join(folder);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl std::ops::Deref for TestFolder {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
