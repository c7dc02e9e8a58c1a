//! Sends one batch of one integration and kind to CoMagic and acts on every outcome class
//! (docs/delivery.md). Item-level rejections shrink the batch until what is left goes through, so
//! one bad item never holds up the other 49; nothing is sent that its batch does not hold a claim
//! on, renewed right before the call ([`claims`]); events in doubt wait until CoMagic's report can
//! witness them ([`doubt`]); a panic costs the events of its batch a bounded number of tries
//! ([`panics`]), never the tenant.

mod claims;
mod doubt;
mod failures;
mod panics;
#[cfg(test)]
mod tests;

use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::amqp::headers::DeadClass;
use bridge_shared::comagic::{ComagicClient, Failure, Success, Uploaded};
use bridge_shared::event::EventKind;
use bridge_shared::integrations::Integration;
use bridge_shared::lifecycle::panic_message;
use bridge_shared::mapping::Item;
use bridge_shared::reload::IntegrationsHandle;
use bridge_shared::retry_policy::{short_retries, Delays};
use futures_util::future::join_all;
use futures_util::FutureExt;

use self::claims::HELD_COPY_WAIT;
pub use self::panics::Panics;
use self::panics::Record;
use crate::acks::Ticket;
use crate::ledger::Hold;
use crate::outlet::Outlet;
use crate::pending::Pending;
use crate::slots::{Slot, Slots};
use crate::tenants::{Block, Tenant, Tenants};

/// In-process retries of a transient failure before the events take the delayed retry queues.
const SHORT_RETRY_FOR: Duration = Duration::from_secs(5);
/// A quota reset at most this far away is waited for with the events in hand; a longer one parks
/// them in a retry queue so they do not hold the prefetch window.
const WAIT_IN_PROCESS: Duration = Duration::from_secs(60);

pub struct Courier {
    /// The Data API client (one HTTP pool for every tenant).
    pub client: ComagicClient,
    /// The CoMagic call slots of the whole process (`[deliver] concurrency`), held only while a
    /// call is under way, never during a quota wait.
    pub calls: Arc<Slots>,
    /// Read per batch, so an edit of `integrations.toml` applies from the next batch on.
    pub integrations: IntegrationsHandle,
    /// Each tenant's pause and quota state.
    pub tenants: Tenants,
    /// Where each event ends: ledger and ack, a retry queue, or the dead-letter queue.
    pub outlet: Arc<Outlet>,
    /// How long an event in doubt waits, from when the doubt arose, before CoMagic's report is
    /// asked about it (`[deliver] comagic_timeout + doubt_margin`).
    pub doubt_grace: Duration,
    /// The events whose batch panicked in this process.
    pub panics: Panics,
}

/// What one call of [`Courier::send`] did: asked CoMagic's report about events in doubt, or
/// uploaded.
enum Step {
    Asked(Uploaded),
    Sent(Success),
}

/// One batch on its way, as CoMagic's answers split it.
struct Sending {
    /// Its claims in the ledger.
    hold: Hold,
    work: VecDeque<Vec<Pending>>,
    delays: Delays,
    /// How many of its events ended delivered (recorded in the ledger).
    delivered: usize,
    /// Its events that may be at CoMagic although nothing said so: in doubt when claimed and not
    /// yet settled by CoMagic's report, or in a call whose answer was lost. Their claims are left
    /// lapsed with the call noted when the batch lets go, so the next holder asks first.
    may_be_there: HashSet<String>,
}

impl Sending {
    fn new(hold: Hold, batch: Vec<Pending>) -> Self {
        let may_be_there = batch.iter().filter(|p| p.in_doubt()).map(|p| p.item.ext_id().to_owned()).collect();
        let delays = short_retries(SHORT_RETRY_FOR);
        Sending { hold, work: VecDeque::from([batch]), delays, delivered: 0, may_be_there }
    }

    /// Counts `batch` delivered. CoMagic has it: should its record in the ledger fail, its claim
    /// must not be forgotten at release (a copy would then be sent clean), so it counts as may
    /// be there (a recorded one has no claim left to release).
    fn delivered_now(&mut self, batch: &[Pending]) {
        self.delivered += batch.len();
        self.may_be_there.extend(batch.iter().map(|p| p.item.ext_id().to_owned()));
    }
}

impl Courier {
    /// Sends the batch; an event whose batch panicked before goes in a batch of its own, and one
    /// that panicked [`panics::PANICS_BEFORE_POISON`] times is dead-lettered as `poison`.
    pub async fn deliver(&self, integration_id: &str, kind: EventKind, batch: Vec<Pending>) {
        let mut clean = Vec::with_capacity(batch.len());
        let mut alone = Vec::new();
        for p in batch {
            match self.panics.of(p.item.ext_id()) {
                Record::Clean => clean.push(p),
                Record::Suspect => alone.push(vec![p]),
                Record::Poison(reason) => {
                    self.panics.forget(&[p.item.ext_id().to_owned()]);
                    self.outlet.dead(p, DeadClass::Poison, &reason).await;
                }
            }
        }
        for batch in std::iter::once(clean).chain(alone).filter(|b| !b.is_empty()) {
            self.deliver_caught(integration_id, kind, batch).await;
        }
    }

    /// [`Self::deliver_claimed`], with a panic (a bug) caught: the batch's claims are released (a
    /// claim whose call was noted stays lapsed, so the next holder asks CoMagic first), its tenant's
    /// budget probe settled, its events remembered and handed back to the broker.
    async fn deliver_caught(&self, integration_id: &str, kind: EventKind, batch: Vec<Pending>) {
        let ext_ids: Vec<String> = batch.iter().map(|p| p.item.ext_id().to_owned()).collect();
        let tickets: Vec<Ticket> = batch.iter().map(|p| p.message.ticket.clone()).collect();
        let hold = self.outlet.ledger.hold();
        let sent = AssertUnwindSafe(self.deliver_claimed(hold, integration_id, kind, batch)).catch_unwind().await;
        if let Err(panic) = sent {
            let reason = panic_message(&*panic);
            self.panics.record(&ext_ids, &reason);
            let all = ext_ids.iter().cloned().collect();
            self.outlet.ledger.release(hold, &ext_ids, &all).await;
            self.tenants.get(integration_id).call_failed();
            self.outlet.hand_back_after_panic("lane", &tickets, reason).await;
        }
    }

    /// Claims the batch's events in the ledger for `hold`, sends what it claimed, and releases the
    /// claims of whatever was not delivered (a retry, a park, a dead letter), so a copy may then be
    /// sent.
    async fn deliver_claimed(&self, hold: Hold, integration_id: &str, kind: EventKind, batch: Vec<Pending>) {
        let batch = self.claimed(hold, kind, batch).await;
        let claimed: Vec<String> = batch.iter().map(|p| p.item.ext_id().to_owned()).collect();
        let mut s = Sending::new(hold, batch);
        self.send(integration_id, kind, &mut s).await;
        // Recording a delivery clears its claim: a batch delivered whole costs no release.
        if s.delivered < claimed.len() {
            self.outlet.ledger.release(hold, &claimed, &s.may_be_there).await;
        }
    }

    /// Sends what `s` holds, split as CoMagic's answers require.
    async fn send(&self, integration_id: &str, kind: EventKind, s: &mut Sending) {
        let tenant = self.tenants.get(integration_id);
        while let Some(batch) = s.work.pop_front() {
            // Read per batch: an edit of integrations.toml applies from the next batch on.
            let integrations = self.integrations.current();
            let Some(integration) = integrations.get(integration_id).cloned() else {
                if integrations.refused_outright(integration_id).is_some() {
                    join_all(batch.iter().map(|p| self.outlet.park_refused(&p.message, p.raw()))).await;
                } else {
                    let gone = "the integration is no longer configured";
                    join_all(batch.into_iter().map(|p| self.outlet.dead(p, DeadClass::InvalidEvent, gone))).await;
                }
                continue;
            };
            let batch = self.hold_back_doubts(batch).await;
            let Some(batch) = self.when_callable(&tenant, batch, s).await else { continue };
            let Ok(slot) = self.calls.acquire().await else { return };
            // Right before the call, after any wait for its slot: a claim that lapsed meanwhile
            // may have been taken by a copy, and what is no longer claimed is not sent.
            let (batch, lost) = self.still_claimed(batch, s).await;
            let park_lost = self.park_all(lost, HELD_COPY_WAIT);
            if batch.is_empty() {
                drop(slot);
                // No call after all: the budget probe reserved for it is free again.
                tenant.call_failed();
                park_lost.await;
                continue;
            }
            let asking = batch.iter().any(Pending::in_doubt);
            let (outcome, ()) = tokio::join!(self.call(&integration, kind, &batch, asking, slot), park_lost);
            if outcome.is_err() {
                tenant.call_failed();
            }
            match outcome {
                Ok(Step::Asked(uploaded)) => {
                    tenant.succeeded(uploaded.limits);
                    let asked = batch.len();
                    let absent = self.settle_found(&integration.id, kind, batch, &uploaded).await;
                    for p in &absent {
                        s.may_be_there.remove(p.item.ext_id());
                    }
                    s.delivered += asked - absent.len();
                    s.work.push_front(absent);
                }
                Ok(Step::Sent(success)) => {
                    tenant.succeeded(success.limits);
                    s.delays = short_retries(SHORT_RETRY_FOR);
                    s.delivered_now(&batch);
                    self.outlet.delivered(batch, Some(&success)).await;
                }
                Err(failure) if asking => self.report_failed(s, &integration, &tenant, kind, batch, failure).await,
                Err(failure) => self.upload_failed(s, &integration, &tenant, batch, failure).await,
            }
        }
    }

    /// One call, its slot held until it answers: CoMagic's report asked about events in doubt, or
    /// an upload.
    async fn call(
        &self,
        integration: &Integration,
        kind: EventKind,
        batch: &[Pending],
        asking: bool,
        _slot: Slot,
    ) -> Result<Step, Failure> {
        // References, not copies: a batch of large dialogs is megabytes.
        let items: Vec<&Item> = batch.iter().map(|p| &p.item).collect();
        let (api, token) = (&integration.comagic_api, &integration.comagic_token);
        if asking {
            self.client.uploaded(api, token, kind, &items).await.map(Step::Asked)
        } else {
            self.client.upload(api, token, kind, &items).await.map(Step::Sent)
        }
    }

    /// The batch, when its tenant may start a call now (or after a short quota wait); `None` when
    /// it was parked instead (a pause, a long quota wait).
    async fn when_callable(&self, tenant: &Tenant, batch: Vec<Pending>, s: &mut Sending) -> Option<Vec<Pending>> {
        if batch.is_empty() {
            return None;
        }
        match tenant.reserve_call() {
            None => Some(batch),
            Some(Block::Paused(left)) => {
                self.park_paused(batch, left).await;
                None
            }
            Some(Block::Quota(wait)) if wait > WAIT_IN_PROCESS => {
                self.park_all(batch, wait).await;
                None
            }
            Some(Block::Quota(wait)) => {
                tokio::time::sleep(wait).await;
                s.work.push_front(batch);
                None
            }
        }
    }

    /// Moves the batch to a retry queue, every message at once (each publish waits for its own
    /// confirm).
    async fn park_all(&self, batch: Vec<Pending>, wait: Duration) {
        join_all(batch.into_iter().map(|p| self.outlet.park(p, wait))).await;
    }

    async fn park_paused(&self, batch: Vec<Pending>, wait: Duration) {
        join_all(batch.into_iter().map(|p| self.outlet.park_paused(p, wait))).await;
    }

    /// A failed attempt for each event: the next retry tier, or the dead-letter queue once
    /// `retry_for` has passed.
    async fn retry_all(&self, batch: Vec<Pending>, error: &str) {
        join_all(batch.into_iter().map(|p| self.outlet.retry(p, error))).await;
    }
}
