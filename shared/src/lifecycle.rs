//! A process's long-running tasks: the signal that stops them, and whether each is still running.
//!
//! [`Shutdown`] is the stop signal every task holds and selects on, so a stop reaches each loop at
//! its next await instead of the process being torn down under it. [`Liveness`] answers `/healthz`: a task that ends while the process is not stopping (a
//! panic, or a bug that returns early) leaves the process up but idle, and only a failing health
//! check makes an orchestrator restart it.

use std::any::Any;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A binary's answer to a configuration it cannot start with: one line naming what is wrong
/// (`<binary>: invalid configuration: ingest.listen: ...`), and exit code 2.
pub fn invalid_configuration(binary: &str, error: impl std::fmt::Display) -> std::process::ExitCode {
    eprintln!("{binary}: invalid configuration: {error}");
    std::process::ExitCode::from(2)
}

/// Fires the [`Shutdown`]s handed out by [`Stopper::listener`].
#[derive(Debug)]
pub struct Stopper(watch::Sender<bool>);

impl Default for Stopper {
    fn default() -> Self {
        Stopper(watch::channel(false).0)
    }
}

impl Stopper {
    pub fn listener(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }

    /// Tells every listener to stop.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// A task's view of the stop signal; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Whether the stop signal has fired (a dropped [`Stopper`] counts as fired).
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Completes once the stop signal fires.
    pub async fn stopped(&self) {
        let mut rx = self.0.clone();
        // The guard `wait_for` returns is not Send: drop it before the future ends.
        let _ = rx.wait_for(|stop| *stop).await.is_ok();
    }
}

/// What a caught panic said, for a log line or a dead letter's reason.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Which of a process's essential tasks have ended before the process was stopping.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    ended: Arc<Mutex<Vec<&'static str>>>,
}

impl Liveness {
    /// Runs `task` named `name`. If it panics, or returns while `shutdown` has not fired, the
    /// process is no longer healthy. The handle yields the task's output, `None` after a panic.
    pub fn spawn<F>(&self, name: &'static str, shutdown: &Shutdown, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (ended, shutdown) = (self.ended.clone(), shutdown.clone());
        let inner = tokio::spawn(task);
        tokio::spawn(async move {
            let output = match inner.await {
                Ok(output) => Some(output),
                Err(error) => {
                    tracing::error!(task = name, %error, "an essential task panicked");
                    None
                }
            };
            if output.is_none() || !shutdown.is_stopping() {
                tracing::error!(task = name, "an essential task ended; the process reports itself unhealthy");
                ended.lock().unwrap_or_else(PoisonError::into_inner).push(name);
            }
            output
        })
    }

    /// `/healthz`'s body, and whether it is healthy (200) or not (503).
    pub fn health(&self) -> (bool, serde_json::Value) {
        match self.check() {
            Ok(()) => (true, serde_json::json!({"status": "ok"})),
            Err(ended) => (false, serde_json::json!({"status": "unhealthy", "ended": ended})),
        }
    }

    /// `Err` with the names of the tasks that ended.
    pub fn check(&self) -> Result<(), Vec<&'static str>> {
        let ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        if ended.is_empty() {
            Ok(())
        } else {
            Err(ended.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_or_ends_early_makes_the_process_unhealthy() {
        let stopper = Stopper::default();
        let shutdown = stopper.listener();
        let live = Liveness::default();
        let panicked = live.spawn("panics", &shutdown, async { panic!("boom") });
        assert_eq!(panicked.await.unwrap(), None::<()>);
        assert_eq!(live.check(), Err(vec!["panics"]));
        let early = Liveness::default();
        assert_eq!(early.spawn("returns", &shutdown, async { 7 }).await.unwrap(), Some(7));
        assert_eq!(early.check(), Err(vec!["returns"]));
    }

    #[tokio::test]
    async fn a_task_that_ends_because_the_process_stops_is_fine() {
        let stopper = Stopper::default();
        let live = Liveness::default();
        let shutdown = stopper.listener();
        let waiting = shutdown.clone();
        let task = live.spawn("loop", &shutdown, async move { waiting.stopped().await });
        assert!(!shutdown.is_stopping());
        stopper.stop();
        assert_eq!(task.await.unwrap(), Some(()));
        assert!(shutdown.is_stopping());
        assert_eq!(live.check(), Ok(()));
    }
}
