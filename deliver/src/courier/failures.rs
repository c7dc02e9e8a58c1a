//! What the courier does with each class of failed call (docs/delivery.md's table): a function per
//! class, so each rule is written once.

use bridge_shared::amqp::headers::DeadClass;
use bridge_shared::comagic::{Failure, QuotaWindow};
use bridge_shared::event::EventKind;
use bridge_shared::integrations::Integration;
use bridge_shared::redact::for_operators;

use super::doubt::cannot_ask;
use super::{Courier, Sending};
use crate::pending::Pending;
use crate::tenants::Tenant;

fn is_session_field(field: Option<&str>) -> bool {
    field.is_some_and(|f| f.ends_with("visitor_session_id"))
}

/// Sends each half of a batch on its own, first half first: how the item an answer did not name
/// is found.
fn bisect(s: &mut Sending, mut batch: Vec<Pending>) {
    let second = batch.split_off(batch.len() / 2);
    s.work.push_front(second);
    s.work.push_front(batch);
}

fn item_error(mnemonic: &str, message: &str, field: Option<&str>) -> String {
    format!("{mnemonic}: {message} ({})", field.unwrap_or("request"))
}

impl Courier {
    /// Asking CoMagic's report about events in doubt failed.
    pub(super) async fn report_failed(
        &self,
        s: &mut Sending,
        integration: &Integration,
        tenant: &Tenant,
        kind: EventKind,
        mut batch: Vec<Pending>,
        failure: Failure,
    ) {
        if cannot_ask(&failure) {
            self.count_in_doubt(kind, "unverifiable", batch.len());
            tracing::warn!(integration = %integration.id, kind = kind.as_str(), error = failure.label(), "CoMagic's report cannot say whether events in doubt are there; sending them (a copy is possible)");
            batch.iter_mut().for_each(|p| p.doubt = None);
            s.work.push_front(batch);
            return;
        }
        match failure {
            // A report is only read: asking again soon is harmless.
            Failure::Transient { reason, .. } => match s.delays.next_delay() {
                Some(delay) => {
                    tokio::time::sleep(delay).await;
                    s.work.push_front(batch);
                }
                None => self.retry_all(batch, &reason).await,
            },
            other => self.upload_failed(s, integration, tenant, batch, other).await,
        }
    }

    /// An upload (or a report, for the classes they share) failed.
    pub(super) async fn upload_failed(
        &self,
        s: &mut Sending,
        integration: &Integration,
        tenant: &Tenant,
        mut batch: Vec<Pending>,
        failure: Failure,
    ) {
        if !matches!(failure, Failure::Quota { .. }) {
            batch.iter_mut().for_each(|p| p.quota_waited = false);
        }
        let may_have_arrived = failure.may_have_arrived();
        match failure {
            Failure::Transient { reason, .. } if may_have_arrived => {
                // CoMagic may still carry out a call whose answer never came: the events wait out
                // the grace in the retry queues before the report is asked (courier::doubt), and
                // their claims keep the call for whoever holds them next.
                batch.iter_mut().for_each(Pending::doubt_arises);
                s.may_be_there.extend(batch.iter().map(|p| p.item.ext_id().to_owned()));
                self.retry_all(batch, &reason).await;
            }
            // Nothing reached CoMagic (the connection was never made): tried again soon, in hand,
            // each attempt with its own slot and its claims renewed right before it.
            Failure::Transient { reason, .. } => match s.delays.next_delay() {
                Some(delay) => {
                    tokio::time::sleep(delay).await;
                    s.work.push_front(batch);
                }
                None => self.retry_all(batch, &reason).await,
            },
            Failure::Request { mnemonic, message } => {
                self.retry_all(batch, &format!("{mnemonic}: {message} (the request as a whole)")).await;
            }
            Failure::Quota { window } => self.quota_spent(s, integration, tenant, batch, window).await,
            Failure::Tenant { mnemonic, message } => {
                let pause = tenant.pause(mnemonic);
                for p in &batch {
                    self.outlet.trace(p, "paused", |t| t.with_error(&format!("{mnemonic}: {message}"))).await;
                }
                self.park_paused(batch, pause).await;
            }
            Failure::Item { mnemonic, message, index, field } => {
                let error = item_error(mnemonic, &message, field.as_deref());
                self.item_refused(s, integration, batch, index, field.as_deref(), &error).await;
            }
            Failure::Duplicate { index } => self.already_there(s, batch, index).await,
        }
    }

    /// `limit_exceeded`: the batch waits for the window's reset, once. Meeting it again after the
    /// reset (CoMagic's points did not come back) is a failed attempt like any other, so a quota
    /// that never recovers ends in the retry tiers and, after `retry_for`, the dead letters.
    async fn quota_spent(
        &self,
        s: &mut Sending,
        integration: &Integration,
        tenant: &Tenant,
        mut batch: Vec<Pending>,
        window: QuotaWindow,
    ) {
        if batch.iter().any(|p| p.quota_waited) {
            batch.iter_mut().for_each(|p| p.quota_waited = false);
            return self.retry_all(batch, "limit_exceeded again after the quota window's reset").await;
        }
        let wait = tenant.quota_exceeded(window);
        for p in batch.iter_mut() {
            p.quota_waited = true;
            self.outlet
                .trace(p, "waiting_for_quota", |t| t.with_error("limit_exceeded: the account's API points are spent"))
                .await;
        }
        tracing::info!(integration = %integration.id, wait_s = wait.as_secs(), "CoMagic quota spent; waiting for its reset");
        s.work.push_front(batch);
    }

    /// One item was refused: by index when the answer names it, else found by halving the batch.
    async fn item_refused(
        &self,
        s: &mut Sending,
        integration: &Integration,
        mut batch: Vec<Pending>,
        index: Option<usize>,
        field: Option<&str>,
        error: &str,
    ) {
        let bad = match index.filter(|i| *i < batch.len()) {
            Some(i) => batch.remove(i),
            None if batch.len() > 1 => return bisect(s, batch),
            None => match batch.pop() {
                Some(bad) => bad,
                None => return,
            },
        };
        if let Some(retry) = self.reject(bad, integration, field, error).await {
            batch.push(retry);
        }
        s.work.push_front(batch);
    }

    /// `duplicate_entity`: CoMagic has the item (by index, else found by halving).
    async fn already_there(&self, s: &mut Sending, mut batch: Vec<Pending>, index: Option<usize>) {
        match index.filter(|i| *i < batch.len()) {
            Some(i) => {
                let there = vec![batch.remove(i)];
                s.delivered_now(&there);
                self.outlet.delivered(there, None).await;
                s.work.push_front(batch);
            }
            None if batch.len() > 1 => bisect(s, batch),
            None => {
                s.delivered_now(&batch);
                self.outlet.delivered(batch, None).await;
            }
        }
    }

    /// An item CoMagic refused: a refused session is re-sent once with rule 2/3 (returned to send
    /// again); anything else is dead-lettered.
    async fn reject(
        &self,
        mut bad: Pending,
        integration: &Integration,
        field: Option<&str>,
        error: &str,
    ) -> Option<Pending> {
        if is_session_field(field) && bad.fall_back_from_session(integration) {
            tracing::info!(integration = %integration.id, event_id = %bad.envelope.event_id, error = %for_operators(error, 500), "CoMagic refused the session; re-sending with the fallback attribution");
            return Some(bad);
        }
        self.outlet.dead(bad, DeadClass::ComagicRejected, error).await;
        None
    }
}
