//! The shared journey against a real PostgreSQL (`bridge_tests::postgres_url`), written by the
//! ledger's delivered statement and by the writer's merges (here, beside the ledger it is part of).

use bridge_shared::postgres::{Database, Postgres, Role, DEFAULT_TIMEOUT};
use chrono::{Duration, Utc};

use crate::journey::query::{Outcome, Page, Query};
use crate::journey::{Entry, PgJourney};
use crate::ledger::Ledger;

fn database() -> Database {
    Postgres::new(DEFAULT_TIMEOUT).database(&bridge_tests::postgres_url(), Role::Ledger).unwrap()
}

fn scope(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("t.journey.{test}.{}.{nanos}", std::process::id())
}

fn ids(page: &Page) -> Vec<&str> {
    page.events.iter().map(|j| j.summary.event_id.as_str()).collect()
}

#[tokio::test]
async fn the_ledger_writes_a_delivered_journey_once_and_merges_keep_every_step_in_order() {
    let scope = scope("merge");
    let ledger = Ledger::connect(database(), &scope, "replica-a").await.expect("PostgreSQL answers");
    let journey = PgJourney::connect(database(), &scope).await.unwrap();
    let again = PgJourney::connect(database(), &scope).await.unwrap();
    let keys = &journey.contact_keys;
    assert_eq!(again.contact_keys.contact("79120000001"), keys.contact("79120000001"), "one key per scope");
    let entry = |id, minutes, dialog, phone, outcome| Entry::for_tests(keys, id, minutes, dialog, phone, outcome);

    journey.write(&[entry("a", 30, "1", "79120000001", "retrying")]).await.unwrap();
    // Two writers at once on one event: both steps are kept (the row's version makes one merge again).
    let (parked, waiting) =
        ([entry("a", 30, "1", "79120000001", "parked")], [entry("a", 30, "1", "79120000001", "waiting_for_quota")]);
    let (x, y) = tokio::join!(journey.write(&parked), again.write(&waiting));
    x.unwrap();
    y.unwrap();
    ledger
        .record(
            &["a", "b"],
            vec![entry("a", 30, "1", "79120000001", "delivered"), entry("b", 20, "2", "79120000002", "delivered")],
        )
        .await
        .unwrap();
    // A repeat of the delivered write (a copy the ledger recorded again) adds no second delivered.
    ledger.record(&["a"], vec![entry("a", 30, "1", "79120000001", "delivered")]).await.unwrap();
    journey.write(&[entry("a", 30, "1", "79120000001", "duplicate")]).await.unwrap();
    journey.write(&[entry("c", 10, "1", "79120000003", "retrying")]).await.unwrap();

    let a = journey.get("a").await.unwrap().unwrap();
    let outcomes: Vec<&str> = a.steps.iter().map(|s| s.outcome.as_str()).collect();
    assert_eq!(outcomes.len(), 5, "{outcomes:?}");
    assert_eq!((outcomes[0], &outcomes[3..]), ("retrying", &["delivered", "duplicate"][..]));
    assert_eq!((a.end.as_deref(), a.last.as_str()), (Some("delivered"), "duplicate"));

    let find = |q: Query| {
        let journey = &journey;
        let limit = if q.limit == 0 { 10 } else { q.limit };
        async move { journey.find(&Query { integration: "acme".into(), limit, ..q }).await.unwrap() }
    };
    assert_eq!(ids(&find(Query::default()).await), ["c", "b", "a"]);
    assert_eq!(ids(&find(Query { dialog: Some("1".into()), ..Query::default() }).await), ["c", "a"]);
    assert_eq!(ids(&find(Query { contact: Some("+7 912 000-00-02".into()), ..Query::default() }).await), ["b"]);
    assert_eq!(ids(&find(Query { outcome: Some(Outcome::OnItsWay), ..Query::default() }).await), ["c"]);
    let first = find(Query { limit: 2, ..Query::default() }).await;
    assert_eq!(ids(&first), ["c", "b"]);
    let rest = find(Query { before: first.next.clone(), ..Query::default() }).await;
    assert_eq!((ids(&rest), rest.next.is_none()), (vec!["a"], true));

    assert_eq!(journey.lost(Utc::now()).await.unwrap().get("acme"), Some(&1));
    assert!(journey.lost(Utc::now() - Duration::minutes(15)).await.unwrap().is_empty());
    assert_eq!(journey.prune_before(Utc::now() - Duration::minutes(15)).await.unwrap(), 2);
    assert_eq!(ids(&find(Query::default()).await), ["c"]);
}
