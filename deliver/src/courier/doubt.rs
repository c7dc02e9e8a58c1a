//! Events in doubt: CoMagic may already have them although no answer said so (an upload whose
//! answer was lost, a copy met in flight, a redelivery after a replica died).
//!
//! CoMagic's report is the witness, but only once the upload in doubt can no longer land: a call
//! that timed out on our side may still be carried out by CoMagic, and the report may list an upload
//! only some time after it was stored (how long is not documented). So an event in doubt waits
//! `[deliver] comagic_timeout + doubt_margin` from when the doubt arose, parked in the retry queues
//! (it holds no prefetch and no call slot meanwhile), and only then is the report asked; what it
//! lists is acked, the rest sent. The grace trades latency of the events in doubt (a minute by
//! default) against copies in the tenant's analytics; docs/delivery.md says how to choose it.

use bridge_shared::comagic::mnemonics::lookup;
use bridge_shared::comagic::{Failure, Uploaded};
use bridge_shared::event::EventKind;
use bridge_shared::trace::Trace;
use futures_util::future::join_all;

use super::Courier;
use crate::pending::Pending;

/// A report that failed like this will not answer on a retry either (the account lacks the
/// report, or the request does not suit it); the events are then sent without asking. A refusal
/// of the account itself (token, IP, inactive) would refuse the upload too, and pauses as usual.
pub(super) fn cannot_ask(failure: &Failure) -> bool {
    match failure {
        Failure::Request { .. } | Failure::Item { .. } | Failure::Duplicate { .. } => true,
        Failure::Tenant { mnemonic, .. } => lookup(mnemonic).is_some_and(|m| m.report_never_answers),
        Failure::Transient { .. } | Failure::Quota { .. } => false,
    }
}

impl Courier {
    /// Parks the events of `batch` whose doubt is younger than the grace until it has passed;
    /// returns the others.
    pub(super) async fn hold_back_doubts(&self, batch: Vec<Pending>) -> Vec<Pending> {
        let now = chrono::Utc::now();
        let (waiting, ready): (Vec<Pending>, Vec<Pending>) =
            batch.into_iter().partition(|p| !p.doubt_wait(self.doubt_grace, now).is_zero());
        join_all(waiting.into_iter().map(|p| {
            let wait = p.doubt_wait(self.doubt_grace, now);
            self.outlet.park(p, wait)
        }))
        .await;
        ready
    }

    /// Acks the events of `batch` that CoMagic's report lists (as duplicates: CoMagic has them)
    /// and returns the others, no longer in doubt, to be sent.
    pub(super) async fn settle_found(
        &self,
        integration_id: &str,
        kind: EventKind,
        batch: Vec<Pending>,
        uploaded: &Uploaded,
    ) -> Vec<Pending> {
        let (found, mut absent): (Vec<Pending>, Vec<Pending>) =
            batch.into_iter().partition(|p| uploaded.ext_ids.contains(p.item.ext_id()));
        let asked_absent = absent.iter().filter(|p| p.in_doubt()).count();
        self.count_in_doubt(kind, "found", found.len());
        self.count_in_doubt(kind, "absent", asked_absent);
        if !found.is_empty() {
            tracing::info!(integration = %integration_id, kind = kind.as_str(), found = found.len(), absent = asked_absent, "events in doubt found in CoMagic's report: acked, not sent again");
        }
        for p in absent.iter().filter(|p| p.in_doubt()) {
            self.outlet
                .trace(p, "in_doubt", |t| Trace { error: Some("not in CoMagic's report: sent".into()), ..t })
                .await;
        }
        self.outlet.delivered(found, None).await;
        absent.iter_mut().for_each(|p| p.doubt = None);
        absent
    }

    pub(super) fn count_in_doubt(&self, kind: EventKind, outcome: &str, n: usize) {
        self.outlet.metrics.in_doubt.with_label_values(&[kind.as_str(), outcome]).inc_by(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_given_up_on_only_when_a_retry_cannot_help() {
        let tenant = |mnemonic| Failure::Tenant { mnemonic, message: String::new() };
        for unanswerable in [
            tenant("method_component_disabled"),
            tenant("forbidden"),
            Failure::Request { mnemonic: "method_not_found", message: String::new() },
            Failure::Item { mnemonic: "invalid_parameter_value", message: String::new(), index: None, field: None },
        ] {
            assert!(cannot_ask(&unanswerable), "{unanswerable:?}");
        }
        for retried_or_paused in [
            tenant("access_token_invalid"),
            tenant("ip_not_whitelisted"),
            Failure::Quota { window: bridge_shared::comagic::QuotaWindow::Minute },
            Failure::Transient { label: "http_5xx", reason: String::new() },
        ] {
            assert!(!cannot_ask(&retried_or_paused), "{retried_or_paused:?}");
        }
    }
}
