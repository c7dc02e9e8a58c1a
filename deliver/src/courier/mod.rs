//! Sends one batch of one integration and kind to CoMagic and acts on every outcome class
//! (docs/delivery.md). Item-level rejections shrink the batch until what is left goes through, so
//! one bad item never holds up the other 49; events in doubt wait until CoMagic's report can
//! witness them ([`doubt`]); a panic costs the events of its batch a bounded number of tries
//! ([`panics`]), never the tenant.

mod doubt;
mod failures;
mod panics;

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::amqp::headers::DeadClass;
use bridge_shared::comagic::{ComagicClient, Failure, Success, Uploaded};
use bridge_shared::event::EventKind;
use bridge_shared::lifecycle::panic_message;
use bridge_shared::mapping::Item;
use bridge_shared::reload::IntegrationsHandle;
use bridge_shared::retry_policy::{short_retries, Delays};
use bridge_shared::secret::Secret;
use bridge_shared::trace::Trace;
use futures_util::future::join_all;
use futures_util::FutureExt;
use tokio::time::Instant;

pub use self::panics::Panics;
use self::panics::Record;
use crate::acks::Ticket;
use crate::ledger::{Claim, CLAIM_FOR};
use crate::outlet::Outlet;
use crate::pending::Pending;
use crate::slots::Slots;
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
    /// Claims older than this are renewed before a call ([`renew_after`]).
    pub renew_after: Duration,
}

/// A claim is renewed right before a call (its call slot in hand) unless it is young enough to
/// outlast the call: taken less than `CLAIM_FOR - comagic_timeout - RENEW_MARGIN` ago. A batch
/// sent at once (the common case) costs the shared ledger no extra round trip.
pub const RENEW_MARGIN: Duration = Duration::from_secs(15);

/// How old a claim may be and still cover a call of at most `call_timeout` without a renewal.
pub fn renew_after(call_timeout: Duration) -> Duration {
    CLAIM_FOR.saturating_sub(call_timeout).saturating_sub(RENEW_MARGIN)
}

/// How long a copy of an event waits when another copy is being sent.
const HELD_COPY_WAIT: Duration = Duration::from_secs(10);

/// What one call of [`Courier::send`] did: asked CoMagic's report about events in doubt, or
/// uploaded.
enum Step {
    Asked(Uploaded),
    Sent(Success),
}

/// One batch on its way, as CoMagic's answers split it.
struct Sending {
    work: VecDeque<Vec<Pending>>,
    delays: Delays,
    /// How many of its events ended delivered (recorded in the ledger).
    delivered: usize,
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

    /// [`Self::deliver_claimed`], with a panic (a bug) caught: the batch's claims are released, its
    /// tenant's budget probe settled, its events remembered and handed back to the broker.
    async fn deliver_caught(&self, integration_id: &str, kind: EventKind, batch: Vec<Pending>) {
        let ext_ids: Vec<String> = batch.iter().map(|p| p.item.ext_id().to_owned()).collect();
        let tickets: Vec<Ticket> = batch.iter().map(|p| p.message.ticket.clone()).collect();
        let sent = AssertUnwindSafe(self.deliver_claimed(integration_id, kind, batch)).catch_unwind().await;
        if let Err(panic) = sent {
            let reason = panic_message(&*panic);
            self.panics.record(&ext_ids, &reason);
            self.outlet.ledger.release(&ext_ids).await;
            self.tenants.get(integration_id).call_failed();
            self.outlet.hand_back_after_panic("lane", &tickets, reason).await;
        }
    }

    /// Claims the batch's events in the ledger, sends what it claimed, and releases the claims of
    /// whatever was not delivered (a retry, a park, a dead letter), so a copy may then be sent.
    async fn deliver_claimed(&self, integration_id: &str, kind: EventKind, batch: Vec<Pending>) {
        let claimed_at = Instant::now();
        let batch = self.claimed(kind, batch).await;
        let claimed: Vec<String> = batch.iter().map(|p| p.item.ext_id().to_owned()).collect();
        // Recording a delivery clears its claim: a batch delivered whole costs no release.
        if self.send(integration_id, kind, batch, claimed_at).await < claimed.len() {
            self.outlet.ledger.release(&claimed).await;
        }
    }

    /// The events of `batch` this process may send now: a copy of a delivered event is acked as a
    /// duplicate; a copy of one being sent waits in the first retry tier, then meets the ledger.
    async fn claimed(&self, kind: EventKind, batch: Vec<Pending>) -> Vec<Pending> {
        let ids: Vec<&str> = batch.iter().map(|p| p.item.ext_id()).collect();
        let claims = self.outlet.ledger.claim(&ids).await;
        let (mut mine, mut held, mut unclaimed) = (Vec::with_capacity(batch.len()), Vec::new(), Vec::new());
        for (mut p, claim) in batch.into_iter().zip(claims) {
            match claim {
                Claim::Mine => mine.push(p),
                Claim::TakenOver => {
                    p.doubt_arises();
                    mine.push(p);
                }
                Claim::Delivered => self.outlet.done(&p.message.ticket, kind.as_str(), "duplicate").await,
                Claim::Held => {
                    // The copy in flight may reach CoMagic and its holder die before the ledger
                    // hears of it: this one asks before it is sent.
                    p.doubt_arises();
                    held.push(p);
                }
                // Nothing claimed, nothing sent: it waits for the ledger in the first retry tier.
                Claim::Unavailable => unclaimed.push(p),
            }
        }
        self.park_all(held, HELD_COPY_WAIT).await;
        self.park_all(unclaimed, HELD_COPY_WAIT).await;
        mine
    }

    /// Sends `batch`, split as CoMagic's answers require; returns how many of its events ended
    /// delivered (recorded in the ledger).
    /// `claimed_at`: when its claims were taken (before the claim call, so never later than the
    /// ledger's own time).
    async fn send(&self, integration_id: &str, kind: EventKind, batch: Vec<Pending>, mut claimed_at: Instant) -> usize {
        let tenant = self.tenants.get(integration_id);
        let mut s = Sending { work: VecDeque::from([batch]), delays: short_retries(SHORT_RETRY_FOR), delivered: 0 };
        while let Some(batch) = s.work.pop_front() {
            // Read per batch: an edit of integrations.toml applies from the next batch on.
            let Some(integration) = self.integrations.current().get(integration_id).cloned() else {
                for p in batch {
                    self.outlet.dead(p, DeadClass::InvalidEvent, "the integration is no longer configured").await;
                }
                continue;
            };
            let batch = self.hold_back_doubts(batch).await;
            let Some(batch) = self.when_callable(&tenant, batch, &mut s).await else { continue };
            let Ok(slot) = self.calls.acquire().await else { return s.delivered };
            // Right before the call, after any wait for its slot: a claim that lapsed meanwhile
            // may have been taken by a copy, and what is no longer claimed is not sent.
            let batch = if claimed_at.elapsed() > self.renew_after {
                claimed_at = Instant::now();
                match self.still_claimed(batch, &mut s).await {
                    Some(batch) => batch,
                    None => {
                        // No call after all: the budget probe reserved for it is free again.
                        tenant.call_failed();
                        continue;
                    }
                }
            } else {
                batch
            };
            let asking = batch.iter().any(Pending::in_doubt);
            let outcome = {
                let _slot = slot;
                // References, not copies: a batch of large dialogs is megabytes.
                let items: Vec<&Item> = batch.iter().map(|p| &p.item).collect();
                let (api, token) = (&integration.comagic_api, &integration.comagic_token);
                if asking {
                    self.client.uploaded(api, token, kind, &items).await.map(Step::Asked)
                } else {
                    self.call(api, token, kind, &items, &mut s.delays).await.map(Step::Sent)
                }
            };
            if outcome.is_err() {
                tenant.call_failed();
            }
            match outcome {
                Ok(Step::Asked(uploaded)) => {
                    tenant.succeeded(uploaded.limits);
                    let asked = batch.len();
                    let absent = self.settle_found(&integration.id, kind, batch, &uploaded).await;
                    s.delivered += asked - absent.len();
                    s.work.push_front(absent);
                }
                Ok(Step::Sent(success)) => {
                    tenant.succeeded(success.limits);
                    s.delays = short_retries(SHORT_RETRY_FOR);
                    self.trace_sent(&batch, &success).await;
                    s.delivered += batch.len();
                    self.outlet.delivered(batch, false).await;
                }
                Err(failure) if asking => self.report_failed(&mut s, &integration, &tenant, kind, batch, failure).await,
                Err(failure) => self.upload_failed(&mut s, &integration, &tenant, batch, failure).await,
            }
        }
        s.delivered
    }

    /// Renews the claims of everything in hand; returns what of `batch` is still claimed (`None`
    /// when nothing is). What lost its claim waits like a copy met in flight.
    async fn still_claimed(&self, batch: Vec<Pending>, s: &mut Sending) -> Option<Vec<Pending>> {
        s.work.push_front(batch);
        let ids: Vec<&str> = s.work.iter().flatten().map(|p| p.item.ext_id()).collect();
        let renewed = self.outlet.ledger.renew(&ids).await;
        let mut lost = Vec::new();
        for in_hand in s.work.iter_mut() {
            let (kept, gone): (Vec<Pending>, Vec<Pending>) =
                std::mem::take(in_hand).into_iter().partition(|p| renewed.contains(p.item.ext_id()));
            *in_hand = kept;
            lost.extend(gone);
        }
        if !lost.is_empty() {
            tracing::info!(events = lost.len(), "claims lapsed or not renewable before the call; those events wait");
            lost.iter_mut().for_each(Pending::doubt_arises);
            self.park_all(lost, HELD_COPY_WAIT).await;
        }
        s.work.pop_front().filter(|batch| !batch.is_empty())
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

    /// The test chats of a batch CoMagic took, each with the id CoMagic gave it (`result.data`
    /// lists one `{id}` per item, in order).
    async fn trace_sent(&self, batch: &[Pending], success: &Success) {
        for (i, p) in batch.iter().enumerate().filter(|(_, p)| p.test) {
            let id = success.result.pointer(&format!("/data/{i}/id")).and_then(serde_json::Value::as_u64);
            self.outlet.trace(p, "delivered", |t| Trace { comagic_id: id, ..t }).await;
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

    /// One upload, tried again at once while the connection cannot even be made (nothing reached
    /// CoMagic). Any other transient failure goes back to [`Self::send`].
    async fn call(
        &self,
        api: &str,
        token: &Secret,
        kind: EventKind,
        items: &[&Item],
        delays: &mut Delays,
    ) -> Result<Success, Failure> {
        loop {
            let outcome = self.client.upload(api, token, kind, items).await;
            match &outcome {
                Err(f @ Failure::Transient { .. }) if !f.may_have_arrived() => match delays.next_delay() {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => return outcome,
                },
                _ => return outcome,
            }
        }
    }
}
