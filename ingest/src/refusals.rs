//! Refused webhooks are always counted (`bridge_ingest_requests_total`), but logged at most once per
//! integration per minute: anyone can post to the public URL, and a line per refusal would let
//! them flood the log. Unknown integration ids share one key, so the map stays as small as the set
//! of integrations, whatever ids a scanner tries.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct RefusalLog {
    /// Per key: when a line was last written, and the refusals since then.
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl RefusalLog {
    /// Counts one refusal for `key`; `Some(n)` when a line is due, `n` being the refusals it covers.
    pub fn due(&self, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match seen.get_mut(key) {
            Some((last, count)) if now.duration_since(*last) < LOG_EVERY => {
                *count += 1;
                None
            }
            Some((last, count)) => {
                let covered = *count + 1;
                (*last, *count) = (now, 0);
                Some(covered)
            }
            None => {
                seen.insert(key.to_owned(), (now, 0));
                Some(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_minute_covering_what_was_held_back() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.due("acme", t0), Some(1));
        for s in 1..60 {
            assert_eq!(log.due("acme", t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(log.due("other", t0), Some(1), "keys are independent");
        assert_eq!(log.due("acme", t0 + LOG_EVERY), Some(60), "the next line covers the 59 held back");
        assert_eq!(log.due("acme", t0 + LOG_EVERY + Duration::from_secs(1)), None);
    }
}
