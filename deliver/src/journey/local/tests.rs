use chrono::{Duration, Utc};

use super::*;
use crate::journey::query::Outcome;

fn entry(j: &LocalJourney, id: &str, minutes_ago: i64, dialog: &str, phone: &str, outcome: &str) -> Entry {
    Entry::for_tests(&j.contact_keys, id, minutes_ago, dialog, phone, outcome)
}

fn ids(page: &Page) -> Vec<&str> {
    page.events.iter().map(|j| j.summary.event_id.as_str()).collect()
}

#[test]
fn journeys_are_found_newest_first_by_dialog_and_contact_a_page_at_a_time_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let j = LocalJourney::open(&db).unwrap();
    j.write(
        &[entry(&j, "a", 30, "1", "79120000001", "retrying"), entry(&j, "b", 20, "2", "79120000002", "parked")],
        false,
    )
    .unwrap();
    // b delivered: its journey moves into its ledger entry, after the 8 bytes of its time.
    let delivered = j.delivered(&[entry(&j, "b", 20, "2", "79120000002", "delivered")], 7u64.to_be_bytes()).unwrap();
    assert_eq!(delivered.len(), 1);
    db.insert("b", delivered[0].1.clone()).unwrap();
    assert_eq!(&db.get("b").unwrap().unwrap()[..8], &7u64.to_be_bytes());
    j.write(
        &[entry(&j, "c", 10, "1", "79120000001", "dead_lettered"), entry(&j, "a", 30, "1", "79120000001", "paused")],
        false,
    )
    .unwrap();
    let all = |q: Query| j.find(&Query { integration: "acme".into(), limit: 10, ..q }).unwrap();
    assert_eq!(ids(&all(Query::default())), ["c", "b", "a"]);
    let b = j.get("b").unwrap().unwrap();
    assert_eq!((b.end.as_deref(), b.steps.len()), (Some("delivered"), 2), "{b:?}");
    assert_eq!(ids(&all(Query { dialog: Some("1".into()), ..Query::default() })), ["c", "a"]);
    assert_eq!(ids(&all(Query { contact: Some("+7 912 000-00-02".into()), ..Query::default() })), ["b"]);
    assert_eq!(ids(&all(Query { outcome: Some(Outcome::OnItsWay), ..Query::default() })), ["a"]);
    assert_eq!(j.get("a").unwrap().unwrap().steps.len(), 2, "a second write adds to the journey");
    let first = j.find(&Query { integration: "acme".into(), limit: 2, ..Query::default() }).unwrap();
    assert_eq!(ids(&first), ["c", "b"]);
    let rest = all(Query { before: first.next.clone(), ..Query::default() });
    assert_eq!((ids(&rest), &rest.next), (vec!["a"], &None));
    let other = j.find(&Query { integration: "other".into(), limit: 10, ..Query::default() }).unwrap();
    assert!(other.events.is_empty());
    // "a" waits (paused): not lost; once it retries again, it is.
    assert!(j.lost(Utc::now()).unwrap().is_empty());
    j.write(&[entry(&j, "a", 30, "1", "79120000001", "retrying")], false).unwrap();
    assert_eq!(j.lost(Utc::now()).unwrap().get("acme"), Some(&1));
    assert_eq!(j.prune_before(Utc::now() - Duration::minutes(15)).unwrap(), 2);
    assert_eq!(ids(&all(Query::default())), ["c"]);
    assert_eq!(db.get("b").unwrap().unwrap().len(), 8, "the ledger's entry stays, without its journey");
    assert!(j.lost(Utc::now()).unwrap().is_empty());
}

#[test]
fn a_skipped_journey_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let j = LocalJourney::open(&db).unwrap();
    j.write(&[entry(&j, "s", 90, "9", "79120000009", "skipped")], false).unwrap();
    assert!(j.lost(Utc::now()).unwrap().is_empty());
}

#[test]
fn a_fresh_delivery_is_a_brief_in_its_ledger_entry_found_like_any_journey() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let j = LocalJourney::open(&db).unwrap();
    let fresh = Entry { fresh: true, ..entry(&j, "f", 5, "77", "79120000007", "delivered") };
    for (id, value) in j.delivered(&[fresh], 9u64.to_be_bytes()).unwrap() {
        assert_eq!(value[8], super::brief::MARK);
        db.insert(id, value).unwrap();
    }
    let all = |q: Query| j.find(&Query { integration: "acme".into(), limit: 10, ..q }).unwrap();
    assert_eq!(ids(&all(Query { contact: Some("79120000007".into()), ..Query::default() })), ["f"]);
    assert_eq!(ids(&all(Query { outcome: Some(Outcome::Delivered), ..Query::default() })), ["f"]);
    // A copy's step afterwards (the writer's) turns the brief into the whole journey.
    j.write(&[entry(&j, "f", 5, "77", "79120000007", "duplicate")], false).unwrap();
    let f = j.get("f").unwrap().unwrap();
    let outcomes: Vec<&str> = f.steps.iter().map(|s| s.outcome.as_str()).collect();
    assert_eq!((outcomes, f.end.as_deref()), (vec!["delivered", "duplicate"], Some("delivered")));
    assert_eq!(&db.get("f").unwrap().unwrap()[..8], &9u64.to_be_bytes(), "its delivered time is kept");
}
