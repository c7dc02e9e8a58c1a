//! Progress of a long run, on stderr and only when it is a terminal (never in pipes or logs).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    verb: &'static str,
    total: u32,
    shown: Option<Instant>,
    enabled: bool,
}

const EVERY: Duration = Duration::from_millis(200);

impl Progress {
    pub fn new(verb: &'static str, total: u32) -> Self {
        Progress { verb, total, shown: None, enabled: std::io::stderr().is_terminal() }
    }

    pub fn tick(&mut self, scanned: usize, done: usize) {
        if !self.enabled || self.shown.is_some_and(|at| at.elapsed() < EVERY) {
            return;
        }
        self.shown = Some(Instant::now());
        let mut err = std::io::stderr();
        let _ = write!(err, "\r{}: {scanned} of {} read, {done} matched ", self.verb, self.total);
        let _ = err.flush();
    }

    pub fn finish(&mut self) {
        if self.enabled && self.shown.is_some() {
            let _ = writeln!(std::io::stderr());
        }
    }
}
