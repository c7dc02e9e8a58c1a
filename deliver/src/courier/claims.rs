//! A batch's claims in the ledger ([`crate::ledger`]): taken before anything is sent, renewed
//! right before each call (after any wait for its slot), and released with what the batch learnt.
//!
//! What the ledger answers decides each event's doubt. A claim taken over from a holder that called
//! CoMagic with the event puts it in doubt from that call. A clean claim on the shared ledger, which
//! notes every call, settles a doubt that was only the broker's redelivery: had the holder that died
//! called, the claim would say so. A copy met in flight neither is nor becomes in doubt: it waits
//! and meets the ledger again, which by then knows whether its holder delivered it, or called and
//! let go without knowing.

use std::time::Duration;

use bridge_shared::event::EventKind;
use bridge_shared::trace::Trace;

use super::{Courier, Sending};
use crate::ledger::{Claim, Hold};
use crate::pending::Pending;

/// How long a copy of an event waits when another copy is being sent (or the ledger did not
/// answer): the first retry tier.
pub(super) const HELD_COPY_WAIT: Duration = Duration::from_secs(10);

impl Courier {
    /// The events of `batch` this process may send now, claimed for `hold`: a copy of a delivered
    /// event is acked as a duplicate; a copy of one being sent, or any when the ledger does not
    /// answer, waits in the first retry tier, then meets the ledger again.
    pub(super) async fn claimed(&self, hold: Hold, kind: EventKind, batch: Vec<Pending>) -> Vec<Pending> {
        let ids: Vec<&str> = batch.iter().map(|p| p.item.ext_id()).collect();
        let claims = self.outlet.ledger.claim(hold, &ids).await;
        let knows_every_call = self.outlet.ledger.knows_every_call();
        let (mut mine, mut waiting) = (Vec::with_capacity(batch.len()), Vec::new());
        for (mut p, claim) in batch.into_iter().zip(claims) {
            match claim {
                Claim::Mine | Claim::TakenOver { .. } => {
                    if knows_every_call {
                        p.settle_redelivery();
                    }
                    if let Claim::TakenOver { last_call } = claim {
                        p.called_before(last_call);
                    }
                    mine.push(p);
                }
                Claim::Delivered => {
                    let error = Some("a copy of one the ledger delivered: acked".to_owned());
                    self.outlet.trace(&p, "duplicate", |t| Trace { error, ..t }).await;
                    self.outlet.done(&p.message.ticket, kind.as_str(), "duplicate").await
                }
                Claim::Held | Claim::Unavailable => waiting.push(p),
            }
        }
        self.park_all(waiting, HELD_COPY_WAIT).await;
        mine
    }

    /// Renews the claims of everything in hand right before `batch`'s call, noting that call in
    /// the ledger. Returns what of `batch` is still claimed, and what of everything in hand is not
    /// (lapsed and taken by a copy, or the ledger did not answer): that must not be sent, and is to
    /// wait like a copy met in flight. Park it only once the call is under way: the call must start
    /// within the renewal's deadline of the noted time.
    pub(super) async fn still_claimed(&self, batch: Vec<Pending>, s: &mut Sending) -> (Vec<Pending>, Vec<Pending>) {
        s.work.push_front(batch);
        let calling: Vec<&str> = s.work[0].iter().map(|p| p.item.ext_id()).collect();
        let in_hand: Vec<&str> = s.work.iter().flatten().map(|p| p.item.ext_id()).collect();
        let renewed = self.outlet.ledger.renew(s.hold, &in_hand, &calling).await;
        let mut lost = Vec::new();
        for in_hand in s.work.iter_mut() {
            let (kept, gone): (Vec<Pending>, Vec<Pending>) =
                std::mem::take(in_hand).into_iter().partition(|p| renewed.contains(p.item.ext_id()));
            *in_hand = kept;
            lost.extend(gone);
        }
        let batch = s.work.pop_front().unwrap_or_default();
        s.work.retain(|rest| !rest.is_empty());
        if !lost.is_empty() {
            tracing::info!(events = lost.len(), "claims lapsed or not renewable before the call; those events wait");
        }
        (batch, lost)
    }
}
