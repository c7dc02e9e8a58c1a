//! The shared ledger against a real PostgreSQL (`bridge_tests::postgres_url`).

use std::sync::Arc;

use bridge_shared::postgres::{Postgres, Role, DEFAULT_TIMEOUT};
use chrono::Utc;

use super::*;

const LONG: Duration = Duration::from_secs(600);

fn database() -> Database {
    Postgres::new(DEFAULT_TIMEOUT).database(&bridge_tests::postgres_url(), Role::Ledger).unwrap()
}

fn scope(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("t.{test}.{}.{nanos}", std::process::id())
}

async fn replica(scope: &str, owner: &str) -> PgLedger {
    PgLedger::connect(database(), scope, owner).await.expect("PostgreSQL answers")
}

/// A hold of its own for each call, as each batch takes one.
fn hold() -> Hold {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Hold(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

impl PgLedger {
    async fn claim_one(&self, id: &str, claim_for: Duration) -> Claim {
        self.claim(hold(), &[id], claim_for).await.unwrap()[0]
    }

    /// As if the process was killed a lease ago: its lease ran out.
    async fn lease_runs_out(&self) {
        self.database
            .execute(
                "UPDATE bridge_ledger_holders SET alive_until = now() - interval '1 second'
                 WHERE scope = $1 AND owner = $2",
                &[&self.scope, &self.owner],
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn two_replicas_never_both_hold_a_claim_and_a_delivered_id_is_never_claimed() {
    let scope = scope("pg-claims");
    let (a, b) = (replica(&scope, "replica-a").await, replica(&scope, "replica-b").await);
    let (ha, hb) = (hold(), hold());
    assert_eq!(a.claim(ha, &["x", "x", "y"], LONG).await.unwrap(), vec![Claim::Mine, Claim::Held, Claim::Mine]);
    assert_eq!(b.claim(hb, &["x", "y", "z"], LONG).await.unwrap(), vec![Claim::Held, Claim::Held, Claim::Mine]);
    b.release(hb, &[], &["x"]).await.unwrap();
    assert_eq!(b.claim_one("x", LONG).await, Claim::Held, "releasing another's claim does nothing");
    a.release(ha, &[], &["x"]).await.unwrap();
    assert_eq!(b.claim_one("x", LONG).await, Claim::Mine, "released by its holder");
    b.record(&["x"], &[]).await.unwrap();
    assert_eq!(a.claim_one("x", LONG).await, Claim::Delivered);
    a.release(ha, &[], &["x"]).await.unwrap();
    assert_eq!(b.claim_one("x", LONG).await, Claim::Delivered, "a release never forgets a delivery");
    // A claim renewed by its holder holds; one that lapsed under its holder is taken over.
    let hv = hold();
    assert_eq!(a.claim(hv, &["v"], Duration::from_secs(30)).await.unwrap(), vec![Claim::Mine]);
    assert!(a.renew(hv, &["v"], &[], LONG).await.unwrap().contains("v"));
    assert_eq!(b.claim_one("v", LONG).await, Claim::Held, "renewed");
    assert!(b.renew(hb, &["v"], &[], Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(b.claim_one("v", LONG).await, Claim::Held, "only its holder renews it");
    assert_eq!(a.claim_one("w", Duration::ZERO).await, Claim::Mine);
    assert_eq!(b.claim_one("w", LONG).await, Claim::Mine, "lapsed under a holder that never called with it");
    let later = Utc::now() + chrono::Duration::seconds(1);
    assert!(a.prune_before(later).await.unwrap() >= 1, "the delivered x is pruned");
    assert_eq!(a.claim_one("x", LONG).await, Claim::Mine, "pruned: no longer known");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_replicas_claiming_at_once_exactly_one_wins_each_id() {
    let scope = scope("pg-race");
    let ids: Vec<String> = (0..200).map(|i| format!("vb-{i}")).collect();
    let mut replicas = Vec::new();
    for r in 0..4 {
        replicas.push(Arc::new(replica(&scope, &format!("r{r}")).await));
    }
    let tasks: Vec<_> = replicas
        .iter()
        .map(|ledger| {
            let (ledger, ids) = (ledger.clone(), ids.clone());
            tokio::spawn(async move {
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                ledger.claim(hold(), &refs, LONG).await.unwrap()
            })
        })
        .collect();
    let mut won = vec![0; ids.len()];
    for task in tasks {
        for (i, claim) in task.await.unwrap().into_iter().enumerate() {
            won[i] += usize::from(claim == Claim::Mine);
        }
    }
    assert!(won.iter().all(|n| *n == 1), "{won:?}");
}

#[tokio::test]
async fn a_renewal_names_only_the_claims_still_held_and_a_lapsed_one_is_not_renewed() {
    let scope = scope("pg-renew");
    let (a, b) = (replica(&scope, "replica-a").await, replica(&scope, "replica-b").await);
    let (held, lapsed) = (hold(), hold());
    assert_eq!(a.claim(held, &["held", "lapsing"], LONG).await.unwrap(), vec![Claim::Mine, Claim::Mine]);
    assert_eq!(a.claim(lapsed, &["lapsed"], Duration::ZERO).await.unwrap(), vec![Claim::Mine]);
    assert_eq!(b.claim_one("lapsed", LONG).await, Claim::Mine, "a copy took it meanwhile");
    let renewed = a.renew(held, &["held", "lapsed", "never"], &[], LONG).await.unwrap();
    assert_eq!(renewed, HashSet::from(["held".to_owned()]), "only what is still a's");
    assert!(a.renew(lapsed, &["lapsed"], &["lapsed"], LONG).await.unwrap().is_empty(), "taken: not renewed");
    assert_eq!(a.claim_one("lapsing", Duration::ZERO).await, Claim::Held);
}

#[tokio::test]
async fn a_batch_whose_claim_a_copy_of_the_same_process_took_neither_renews_nor_releases_it() {
    let scope = scope("pg-same-process");
    let (a, b) = (replica(&scope, "replica-a").await, replica(&scope, "replica-b").await);
    let (lost, copy) = (hold(), hold());
    assert_eq!(a.claim(lost, &["x"], Duration::ZERO).await.unwrap(), vec![Claim::Mine]);
    assert_eq!(a.claim(copy, &["x"], LONG).await.unwrap(), vec![Claim::Mine], "a copy in the same process");
    assert!(a.renew(lost, &["x"], &["x"], LONG).await.unwrap().is_empty(), "the batch that lost it");
    a.release(lost, &[], &["x"]).await.unwrap();
    assert_eq!(b.claim_one("x", LONG).await, Claim::Held, "the copy still holds it");
    assert!(a.renew(copy, &["x"], &["x"], LONG).await.unwrap().contains("x"));
}

#[tokio::test]
async fn a_claim_whose_holders_lease_lapsed_is_taken_over_before_it_lapses_a_live_holders_is_not() {
    let scope = scope("pg-lease");
    let (a, b) = (replica(&scope, "replica-a").await, replica(&scope, "replica-b").await);
    assert_eq!(a.claim(hold(), &["x", "y"], LONG).await.unwrap(), vec![Claim::Mine, Claim::Mine]);
    assert_eq!(b.claim_one("x", LONG).await, Claim::Held, "a live holder's claim holds");
    a.lease_runs_out().await;
    assert_eq!(b.claim_one("x", LONG).await, Claim::Mine, "its holder is gone, and never called with it");
    a.renew_lease().await.unwrap();
    assert_eq!(b.claim_one("y", LONG).await, Claim::Held, "a lease renewed again holds again");
    assert_eq!(a.claim_one("x", LONG).await, Claim::Held, "b's now");
}

#[tokio::test]
async fn a_takeover_says_whether_and_when_the_holder_last_called() {
    let scope = scope("pg-called");
    let (a, b) = (replica(&scope, "replica-a").await, replica(&scope, "replica-b").await);
    let h = hold();
    assert_eq!(a.claim(h, &["never", "called"], LONG).await.unwrap(), vec![Claim::Mine, Claim::Mine]);
    let before = Utc::now();
    assert_eq!(a.renew(h, &["never", "called"], &["called"], LONG).await.unwrap().len(), 2);
    let after = Utc::now();
    a.lease_runs_out().await;
    let claims = b.claim(hold(), &["never", "called"], LONG).await.unwrap();
    assert_eq!(claims[0], Claim::Mine, "never called with: no doubt");
    let Claim::TakenOver { last_call } = claims[1] else { panic!("called: {:?}", claims[1]) };
    // The database's clock is this machine's; the call may start until the renewal's deadline.
    let deadline = chrono::Duration::from_std(DEFAULT_TIMEOUT).unwrap();
    let slack = chrono::Duration::seconds(1);
    assert!(last_call >= before + deadline - slack && last_call <= after + deadline + slack, "{last_call}");
    b.lease_runs_out().await;
    assert_eq!(a.claim_one("called", LONG).await, Claim::TakenOver { last_call }, "a takeover keeps the call");
}

#[tokio::test]
async fn a_release_after_a_call_that_may_have_landed_leaves_a_row_a_copy_takes_over_in_doubt() {
    let scope = scope("pg-release");
    let (a, b) = (replica(&scope, "replica-a").await, replica(&scope, "replica-b").await);
    let h = hold();
    let ids = ["maybe", "refused", "never"];
    assert_eq!(a.claim(h, &ids, LONG).await.unwrap(), vec![Claim::Mine; 3]);
    assert_eq!(a.renew(h, &ids, &["maybe", "refused"], LONG).await.unwrap().len(), 3);
    a.release(h, &["maybe", "never"], &["refused"]).await.unwrap();
    let claims = b.claim(hold(), &ids, LONG).await.unwrap();
    assert!(matches!(claims[0], Claim::TakenOver { .. }), "its call may have landed: {:?}", claims[0]);
    assert_eq!(claims[1..], [Claim::Mine, Claim::Mine], "refused, or never called: forgotten");
}

#[tokio::test]
async fn a_graceful_stops_lapsed_lease_makes_its_claims_takeable_at_once() {
    let scope = scope("pg-stop");
    let (a, b) = (replica(&scope, "replica-a").await, replica(&scope, "replica-b").await);
    assert_eq!(a.claim_one("left", LONG).await, Claim::Mine);
    assert_eq!(b.claim_one("left", LONG).await, Claim::Held);
    a.let_lease_lapse().await.unwrap();
    assert_eq!(b.claim_one("left", LONG).await, Claim::Mine, "taken over at once");
}

#[tokio::test]
async fn a_claim_of_a_holder_without_a_lease_holds_until_it_lapses_and_is_then_in_doubt() {
    let scope = scope("pg-legacy");
    let b = replica(&scope, "replica-b").await;
    // As a release before leases claims: no lease row, no call noted.
    let claim = "INSERT INTO bridge_ledger (scope, ext_id, claimed_by, claimed_until)
                 VALUES ($1, 'old', 'an-earlier-release', now() + interval '1 hour')";
    b.database.execute(claim, &[&scope]).await.unwrap();
    assert_eq!(b.claim_one("old", LONG).await, Claim::Held, "no lease to lapse: it holds");
    let lapse =
        "UPDATE bridge_ledger SET claimed_until = now() - interval '1 second' WHERE scope = $1 RETURNING claimed_until";
    let lapsed: SystemTime = b.database.query(lapse, &[&scope]).await.unwrap()[0].get(0);
    let Claim::TakenOver { last_call } = b.claim_one("old", LONG).await else { panic!("it may have called") };
    assert_eq!(last_call, b.latest_call_start(lapsed), "as called when its claim lapsed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_claiming_overlapping_batches_in_opposite_orders_never_fail_and_one_wins_each() {
    let scope = scope("pg-order");
    let ids: Vec<String> = (0..300).map(|i| format!("vb-{i:03}")).collect();
    let mut tasks = Vec::new();
    for r in 0..4 {
        let ledger = Arc::new(replica(&scope, &format!("r{r}")).await);
        let mut mine = ids.clone();
        if r % 2 == 1 {
            mine.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let refs: Vec<&str> = mine.iter().map(String::as_str).collect();
            let claims = ledger.claim(hold(), &refs, LONG).await.expect("no deadlock, no error");
            ledger.record(&refs[..10], &[]).await.expect("recording in any order takes no deadlock either");
            mine.into_iter().zip(claims).filter(|(_, c)| *c == Claim::Mine).map(|(id, _)| id).collect::<Vec<_>>()
        }));
    }
    let mut won: Vec<String> = Vec::new();
    for task in tasks {
        won.extend(task.await.unwrap());
    }
    won.sort();
    assert_eq!(won, ids, "each id claimed by exactly one replica");
}

#[tokio::test]
async fn a_database_that_stops_answering_claims_nothing_and_renews_nothing() {
    let proxy = bridge_tests::proxy::TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = bridge_tests::postgres_url().replace("127.0.0.1:5432", &proxy.address().to_string());
    let database = Postgres::new(Duration::from_secs(1)).database(&url, Role::Ledger).unwrap();
    let ledger = crate::ledger::Ledger::connect(database, &scope("pg-silent"), "replica-a").await.unwrap();
    let hold = ledger.hold();
    assert_eq!(ledger.claim(hold, &["held"]).await, vec![Claim::Mine], "it answers at first");
    proxy.silence();
    let other = ledger.hold();
    assert_eq!(ledger.claim(other, &["a", "b"]).await, vec![Claim::Unavailable; 2], "an error claims nothing");
    assert!(ledger.renew(hold, &["held"], &[]).await.is_empty(), "nor renews what it held");
}
