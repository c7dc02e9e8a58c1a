//! One warning per outage of the moves to the retry and dead-letter queues, not one per message:
//! while a queue or its leader is unavailable, every message in hand fails its publish again and
//! again, and a warning each time buried the one line that said what was wrong. The first failure
//! warns (with its error), the rest are debug lines, and the first success after them says, once,
//! that moves work again and what the outage cost. Kept per exchange, so a dead-letter queue in
//! trouble does not make the retry moves' log flap.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

#[derive(Default)]
pub struct RetryWarnings {
    outages: Mutex<HashMap<String, Outage>>,
}

/// Moves to one exchange failing since `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub since: Instant,
    pub failures: u64,
    /// Messages handed back to the broker meanwhile (their moves kept failing).
    pub handed_back: u64,
}

impl RetryWarnings {
    fn outages(&self) -> std::sync::MutexGuard<'_, HashMap<String, Outage>> {
        self.outages.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A move to `exchange` failed; true when it began an outage (and was warned about).
    pub fn failed(&self, exchange: &str, error: &dyn std::fmt::Display) -> bool {
        let mut outages = self.outages();
        if let Some(outage) = outages.get_mut(exchange) {
            outage.failures += 1;
            tracing::debug!(%error, %exchange, failures = outage.failures, "could not move a message; trying again");
            return false;
        }
        outages.insert(exchange.to_owned(), Outage { since: Instant::now(), failures: 1, handed_back: 0 });
        tracing::warn!(%error, %exchange, "could not move a message to a retry or dead queue; messages are held and tried again (one warning until it works again)");
        true
    }

    /// A message whose moves to `exchange` kept failing went back to the broker.
    pub fn handed_back(&self, exchange: &str) {
        if let Some(outage) = self.outages().get_mut(exchange) {
            outage.handed_back += 1;
        }
        tracing::debug!(%exchange, "could not move a message; handing it back to the broker");
    }

    /// A move to `exchange` went through: the outage there, if any, is over (returned, and logged).
    pub fn succeeded(&self, exchange: &str) -> Option<Outage> {
        let outage = self.outages().remove(exchange)?;
        let lasted_ms = outage.since.elapsed().as_millis() as u64;
        tracing::info!(%exchange, failures = outage.failures, handed_back = outage.handed_back, lasted_ms, "moving messages works again");
        Some(outage)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Outage, RetryWarnings};

    #[tokio::test(start_paused = true)]
    async fn an_outage_warns_once_and_its_end_is_told_once() {
        let warnings = RetryWarnings::default();
        assert_eq!(warnings.succeeded("retry"), None, "no outage: nothing to tell");
        let began = tokio::time::Instant::now();
        assert!(warnings.failed("retry", &"queue not found"), "the first failure warns");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!warnings.failed("retry", &"queue not found"), "the next ones do not");
        assert!(!warnings.failed("retry", &"no confirm"));
        warnings.handed_back("retry");
        assert!(warnings.failed("dead", &"queue not found"), "another exchange's outage is its own");
        let over = warnings.succeeded("retry");
        assert_eq!(over, Some(Outage { since: began, failures: 3, handed_back: 1 }));
        assert_eq!(warnings.succeeded("retry"), None, "told once");
        assert!(warnings.failed("retry", &"queue not found"), "a new outage warns again");
        assert!(!warnings.failed("dead", &"queue not found"), "still the same outage there");
    }
}
