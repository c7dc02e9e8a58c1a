//! The points windows an account is charged in ("minute" and "day"), which `metadata.limits`
//! reports: how many points remain and when the window resets.

use std::time::{Duration, Instant};

pub(super) struct Window {
    pub(super) started: Instant,
    pub(super) used: u64,
}

impl Window {
    pub(super) fn new() -> Self {
        Window { started: Instant::now(), used: 0 }
    }

    /// The points left of `limit` and the seconds until the window of `length` resets (at least 1).
    pub(super) fn remaining(&mut self, limit: u64, length: Duration) -> (u64, u64) {
        if self.started.elapsed() >= length {
            *self = Window::new();
        }
        let reset = length.saturating_sub(self.started.elapsed()).as_secs().max(1);
        (limit.saturating_sub(self.used), reset)
    }
}

/// The length of the "minute" and "day" windows; shortened by tests of quota handling.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub minute: Duration,
    pub day: Duration,
}

impl Default for Windows {
    fn default() -> Self {
        Windows { minute: Duration::from_secs(60), day: Duration::from_secs(86_400) }
    }
}
