//! The thread-local switch between recording ops and running them untracked.

use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Returns true when ops on this thread are recorded for differentiation.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Sets grad mode on this thread until the guard is dropped, then restores the previous mode.
pub struct GradModeGuard {
    previous: bool,
}

impl GradModeGuard {
    pub fn new(enabled: bool) -> Self {
        let previous = GRAD_ENABLED.with(|mode| mode.replace(enabled));
        GradModeGuard { previous }
    }
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|mode| mode.set(self.previous));
    }
}

/// Runs `body` with recording turned off, as sampling and frozen scales do.
pub fn no_grad<R>(body: impl FnOnce() -> R) -> R {
    let _guard = GradModeGuard::new(false);
    body()
}
