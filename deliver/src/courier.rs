//! Sends one batch of one integration and kind to CoMagic and acts on every outcome class
//! (docs/delivery.md). Item-level rejections shrink the batch until what is left
//! goes through, so one bad item never holds up the other 49.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::amqp::headers::DeadClass;
use bridge_shared::comagic::{ComagicClient, Failure, Success, Uploaded};
use bridge_shared::event::EventKind;
use bridge_shared::integrations::Integration;
use bridge_shared::mapping::Item;
use bridge_shared::redact::for_operators;
use bridge_shared::reload::IntegrationsHandle;
use bridge_shared::retry_policy::{short_retries, Delays};
use bridge_shared::secret::Secret;
use bridge_shared::trace::Trace;
use futures_util::future::join_all;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::ledger::{Claim, CLAIM_FOR};
use crate::outlet::Outlet;
use crate::pending::Pending;
use crate::tenants::{Block, Tenants};

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
    pub calls: Semaphore,
    /// Read per batch, so an edit of `integrations.toml` applies from the next batch on.
    pub integrations: IntegrationsHandle,
    /// Each tenant's pause and quota state.
    pub tenants: Tenants,
    /// Where each event ends: ledger and ack, a retry queue, or the dead-letter queue.
    pub outlet: Arc<Outlet>,
}

fn is_session_field(field: Option<&str>) -> bool {
    field.is_some_and(|f| f.ends_with("visitor_session_id"))
}

/// Sends each half of a batch on its own, first half first: how the item an answer did not name
/// is found.
fn bisect(work: &mut VecDeque<Vec<Pending>>, mut batch: Vec<Pending>) {
    let second = batch.split_off(batch.len() / 2);
    work.push_front(second);
    work.push_front(batch);
}

/// Claims taken this recently are not renewed before a call: a batch sent at once (the common
/// case) costs the shared ledger no extra round trip, and a third of [`CLAIM_FOR`] leaves room
/// for the call and its short retries before the claim could lapse.
const RENEW_AFTER: Duration = Duration::from_secs(CLAIM_FOR.as_secs() / 3);

/// How long a copy of an event waits when another copy is being sent.
const HELD_COPY_WAIT: Duration = Duration::from_secs(10);

/// What one call of [`Courier::send`] did: asked CoMagic's report about events in doubt, or
/// uploaded.
enum Step {
    Asked(Uploaded),
    Sent(Success),
}

/// A report that failed like this will not answer on a retry either (the account lacks the
/// report, or the request does not suit it); the events are then sent without asking. A refusal
/// of the account itself (token, IP, inactive) would refuse the upload too, and pauses as usual.
fn cannot_ask(failure: &Failure) -> bool {
    match failure {
        Failure::Request { .. } | Failure::Item { .. } | Failure::Duplicate { .. } => true,
        Failure::Tenant { mnemonic, .. } => {
            ["forbidden", "method_component_disabled", "parameter_component_disabled"].contains(mnemonic)
        }
        Failure::Transient { .. } | Failure::Quota { .. } => false,
    }
}

impl Courier {
    /// Claims the batch's events in the ledger, sends what it claimed, and releases the claims of
    /// whatever was not delivered (a retry, a park, a dead letter), so a copy may then be sent.
    pub async fn deliver(&self, integration_id: &str, kind: EventKind, batch: Vec<Pending>) {
        let batch = self.claimed(kind, batch).await;
        let claimed: Vec<String> = batch.iter().map(|p| p.item.ext_id().to_owned()).collect();
        // Recording a delivery clears its claim: a batch delivered whole costs no release.
        if self.send(integration_id, kind, batch).await < claimed.len() {
            self.outlet.ledger.release(&claimed).await;
        }
    }

    /// The events of `batch` this process may send now: a copy of a delivered event is acked as a
    /// duplicate; a copy of one being sent waits in the first retry tier, then meets the ledger.
    async fn claimed(&self, kind: EventKind, batch: Vec<Pending>) -> Vec<Pending> {
        let ids: Vec<&str> = batch.iter().map(|p| p.item.ext_id()).collect();
        let claims = self.outlet.ledger.claim(&ids).await;
        let (mut mine, mut held) = (Vec::with_capacity(batch.len()), Vec::new());
        for (mut p, claim) in batch.into_iter().zip(claims) {
            match claim {
                Claim::Mine => mine.push(p),
                Claim::TakenOver => {
                    p.in_doubt = true;
                    mine.push(p);
                }
                Claim::Delivered => self.outlet.done(&p.message.ticket, kind.as_str(), "duplicate").await,
                Claim::Held => {
                    // The copy in flight may reach CoMagic and its holder die before the ledger
                    // hears of it: this one asks before it is sent.
                    p.in_doubt = true;
                    held.push(p);
                }
            }
        }
        self.park_all(held, HELD_COPY_WAIT).await;
        mine
    }

    /// Sends `batch`, split as CoMagic's answers require; returns how many of its events ended
    /// delivered (recorded in the ledger).
    async fn send(&self, integration_id: &str, kind: EventKind, batch: Vec<Pending>) -> usize {
        let tenant = self.tenants.get(integration_id);
        let mut work = VecDeque::from([batch]);
        let mut claimed_at = Instant::now();
        let mut delays = short_retries(SHORT_RETRY_FOR);
        let mut delivered = 0;
        while let Some(mut batch) = work.pop_front() {
            if batch.is_empty() {
                continue;
            }
            // Read per batch: an edit of integrations.toml applies from the next batch on.
            let Some(integration) = self.integrations.current().get(integration_id).cloned() else {
                for p in batch {
                    self.outlet.dead(p, DeadClass::InvalidEvent, "the integration is no longer configured").await;
                }
                continue;
            };
            match tenant.reserve_call() {
                Some(Block::Paused(left)) => {
                    self.park_paused(batch, left).await;
                    continue;
                }
                Some(Block::Quota(wait)) if wait > WAIT_IN_PROCESS => {
                    self.park_all(batch, wait).await;
                    continue;
                }
                Some(Block::Quota(wait)) => {
                    tokio::time::sleep(wait).await;
                    work.push_front(batch);
                    continue;
                }
                None => {}
            }
            if claimed_at.elapsed() > RENEW_AFTER {
                let in_hand = batch.iter().chain(work.iter().flatten());
                let ids: Vec<&str> = in_hand.map(|p| p.item.ext_id()).collect();
                self.outlet.ledger.renew(&ids).await;
                claimed_at = Instant::now();
            }
            let asking = batch.iter().any(|p| p.in_doubt);
            let outcome = {
                let Ok(_slot) = self.calls.acquire().await else { return delivered };
                // References, not copies: a batch of large dialogs is megabytes.
                let items: Vec<&Item> = batch.iter().map(|p| &p.item).collect();
                let (api, token) = (&integration.comagic_api, &integration.comagic_token);
                if asking {
                    self.client.uploaded(api, token, kind, &items).await.map(Step::Asked)
                } else {
                    self.call(api, token, kind, &items, &mut delays).await.map(Step::Sent)
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
                    delivered += asked - absent.len();
                    work.push_front(absent);
                }
                Err(failure) if asking && cannot_ask(&failure) => {
                    self.count_in_doubt(kind, "unverifiable", batch.len());
                    tracing::warn!(integration = %integration.id, kind = kind.as_str(), error = failure.label(), "CoMagic's report cannot say whether events in doubt are there; sending them (a copy is possible)");
                    batch.iter_mut().for_each(|p| p.in_doubt = false);
                    work.push_front(batch);
                }
                Ok(Step::Sent(success)) => {
                    tenant.succeeded(success.limits);
                    delays = short_retries(SHORT_RETRY_FOR);
                    self.trace_sent(&batch, &success).await;
                    delivered += batch.len();
                    self.outlet.delivered(batch, false).await;
                }
                Err(ref failure @ Failure::Transient { ref reason, .. }) => {
                    if failure.may_have_arrived() {
                        batch.iter_mut().for_each(|p| p.in_doubt = true);
                    }
                    match delays.next_delay() {
                        Some(delay) => {
                            tokio::time::sleep(delay).await;
                            work.push_front(batch);
                        }
                        None => {
                            join_all(batch.into_iter().map(|p| self.outlet.retry(p, reason))).await;
                        }
                    }
                }
                Err(Failure::Request { mnemonic, message }) => {
                    let error = format!("{mnemonic}: {message} (the request as a whole)");
                    join_all(batch.into_iter().map(|p| self.outlet.retry(p, &error))).await;
                }
                Err(Failure::Quota { window }) => {
                    let wait = tenant.quota_exceeded(window);
                    for p in &batch {
                        self.outlet
                            .trace(p, "waiting_for_quota", |t| {
                                t.with_error("limit_exceeded: the account's API points are spent")
                            })
                            .await;
                    }
                    tracing::info!(integration = %integration.id, wait_s = wait.as_secs(), "CoMagic quota spent; waiting for its reset");
                    work.push_front(batch);
                }
                Err(Failure::Tenant { mnemonic, message }) => {
                    let pause = tenant.pause(mnemonic);
                    for p in &batch {
                        self.outlet.trace(p, "paused", |t| t.with_error(&format!("{mnemonic}: {message}"))).await;
                    }
                    self.park_paused(batch, pause).await;
                }
                Err(Failure::Item { mnemonic, message, index, field }) => match index.filter(|i| *i < batch.len()) {
                    Some(i) => {
                        let bad = batch.remove(i);
                        let error = format!("{mnemonic}: {message} ({})", field.as_deref().unwrap_or("request"));
                        if let Some(retry) = self.reject(bad, &integration, field.as_deref(), &error).await {
                            batch.push(retry);
                        }
                        work.push_front(batch);
                    }
                    None if batch.len() > 1 => bisect(&mut work, batch),
                    None => {
                        let error = format!("{mnemonic}: {message} ({})", field.as_deref().unwrap_or("request"));
                        let bad = batch.pop().expect("one item");
                        if let Some(retry) = self.reject(bad, &integration, field.as_deref(), &error).await {
                            work.push_front(vec![retry]);
                        }
                    }
                },
                Err(Failure::Duplicate { index }) => match index.filter(|i| *i < batch.len()) {
                    Some(i) => {
                        delivered += 1;
                        self.outlet.delivered(vec![batch.remove(i)], true).await;
                        work.push_front(batch);
                    }
                    None if batch.len() > 1 => bisect(&mut work, batch),
                    None => {
                        delivered += batch.len();
                        self.outlet.delivered(batch, true).await;
                    }
                },
            }
        }
        delivered
    }

    /// The test chats of a batch CoMagic took, each with the id CoMagic gave it (`result.data`
    /// lists one `{id}` per item, in order).
    async fn trace_sent(&self, batch: &[Pending], success: &Success) {
        for (i, p) in batch.iter().enumerate().filter(|(_, p)| p.test) {
            let id = success.result.pointer(&format!("/data/{i}/id")).and_then(serde_json::Value::as_u64);
            self.outlet.trace(p, "delivered", |t| Trace { comagic_id: id, ..t }).await;
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

    /// Moves the batch to a retry queue, every message at once (each publish waits for its own
    /// confirm).
    async fn park_all(&self, batch: Vec<Pending>, wait: Duration) {
        join_all(batch.into_iter().map(|p| self.outlet.park(p, wait))).await;
    }

    async fn park_paused(&self, batch: Vec<Pending>, wait: Duration) {
        join_all(batch.into_iter().map(|p| self.outlet.park_paused(p, wait))).await;
    }

    /// One upload, tried again at once while the connection cannot even be made (nothing reached
    /// CoMagic). Any other transient failure goes back to [`Self::send`], which asks CoMagic
    /// before it uploads the batch again.
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

    /// Acks the events of `batch` that CoMagic's report lists (as duplicates: CoMagic has them)
    /// and returns the others, no longer in doubt, to be sent.
    async fn settle_found(
        &self,
        integration_id: &str,
        kind: EventKind,
        batch: Vec<Pending>,
        uploaded: &Uploaded,
    ) -> Vec<Pending> {
        let (found, mut absent): (Vec<Pending>, Vec<Pending>) =
            batch.into_iter().partition(|p| uploaded.ext_ids.contains(p.item.ext_id()));
        let asked_absent = absent.iter().filter(|p| p.in_doubt).count();
        self.count_in_doubt(kind, "found", found.len());
        self.count_in_doubt(kind, "absent", asked_absent);
        if !found.is_empty() {
            tracing::info!(integration = %integration_id, kind = kind.as_str(), found = found.len(), absent = asked_absent, "events in doubt found in CoMagic's report: acked, not sent again");
        }
        for p in &found {
            self.outlet.trace(p, "delivered", |t| t).await;
        }
        self.outlet.delivered(found, true).await;
        absent.iter_mut().for_each(|p| p.in_doubt = false);
        absent
    }

    fn count_in_doubt(&self, kind: EventKind, outcome: &str, n: usize) {
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
