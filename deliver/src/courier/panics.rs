//! What a panic (a bug) costs: the events of the batch it interrupted, a bounded number of tries.
//!
//! A panic anywhere in a batch's handling is caught per batch. Its claims are released and its
//! tenant's budget probe settled (else the tenant would wait on both for ever), and its messages go
//! back to the broker. Each event of that batch is remembered here with the panic's message; when
//! one comes back it is sent in a batch of its own, so only the event that sets the bug off keeps
//! panicking, and after [`PANICS_BEFORE_POISON`] panics it is dead-lettered as `poison` with that
//! message instead of being tried again. The memory is per process and bounded: several replicas
//! may each try an event that many times, and the broker's delivery limit is the last stop.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bridge_shared::redact::for_operators;

/// How often one event may panic in this process before it is dead-lettered as `poison`.
pub const PANICS_BEFORE_POISON: u32 = 3;

/// Events remembered at most; past it the memory starts again (panics are rare, bugs are fixed).
const REMEMBERED: usize = 10_000;

/// What became of one event's earlier tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// It never panicked here: batch it with the others.
    Clean,
    /// It was in a batch that panicked: send it alone.
    Suspect,
    /// It panicked this often: dead-letter it, with this reason.
    Poison(String),
}

#[derive(Default)]
pub struct Panics {
    /// ext_id → how often a batch holding it panicked, and the last panic's message.
    seen: Mutex<HashMap<String, (u32, String)>>,
}

impl Panics {
    pub fn record(&self, ext_ids: &[String], reason: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() + ext_ids.len() > REMEMBERED {
            seen.clear();
        }
        for id in ext_ids {
            let entry = seen.entry(id.clone()).or_insert((0, String::new()));
            entry.0 += 1;
            entry.1 = for_operators(reason, 300);
        }
    }

    pub fn of(&self, ext_id: &str) -> Record {
        match self.seen.lock().unwrap_or_else(PoisonError::into_inner).get(ext_id) {
            None => Record::Clean,
            Some((n, reason)) if *n >= PANICS_BEFORE_POISON => {
                Record::Poison(format!("handling it panicked {n} times: {reason}"))
            }
            Some(_) => Record::Suspect,
        }
    }

    /// Forgets events (the one dead-lettered as poison); a suspect that went through stays until
    /// the memory starts again, harmless: it is acked and gone.
    pub fn forget(&self, ext_ids: &[String]) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if !seen.is_empty() {
            ext_ids.iter().for_each(|id| drop(seen.remove(id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_a_suspect_after_one_panic_and_poison_after_the_limit() {
        let panics = Panics::default();
        let batch = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(panics.of("a"), Record::Clean);
        panics.record(&batch, "overflow");
        assert_eq!(panics.of("a"), Record::Suspect);
        panics.forget(&batch[1..]);
        assert_eq!(panics.of("b"), Record::Clean, "an event that went through is forgotten");
        for _ in 1..PANICS_BEFORE_POISON {
            panics.record(&batch[..1], "overflow again");
        }
        assert_eq!(panics.of("a"), Record::Poison("handling it panicked 3 times: overflow again".into()));
    }

    #[test]
    fn the_memory_is_bounded() {
        let panics = Panics::default();
        let many: Vec<String> = (0..REMEMBERED + 1).map(|i| i.to_string()).collect();
        panics.record(&many[..REMEMBERED], "x");
        panics.record(&many[REMEMBERED..], "x");
        assert!(panics.seen.lock().unwrap().len() <= REMEMBERED);
    }
}
