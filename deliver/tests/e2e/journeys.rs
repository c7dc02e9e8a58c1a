//! What the fault drills require of every event's journey once it is stored: it ends delivered,
//! with one `delivered` step, its steps in the order they were taken.

use std::path::Path;
use std::time::Duration;

use bridge_shared::postgres::Postgres;
use bridge_shared::settings::Settings;
use bridge_tests::wait_for;
use deliver::journey::reader::Reader;
use deliver::journey::Journey;

/// How long the journeys may take to end delivered after the drill saw every event stored: a copy
/// of one a killed replica delivered without recording it waits in doubt (a retry tier or two)
/// before CoMagic's report settles it, and only then does its journey end.
const JOURNEY_DEADLINE: Duration = Duration::from_secs(120);

/// Reads each of `event_ids`' journeys where the ledger of `config` keeps them (PostgreSQL, or the
/// running deliver's socket for sled: a deliver on that ledger must be running) and requires each
/// to end `delivered`, with exactly one `delivered` step and its steps' times in order.
pub async fn assert_journeys_end_once(config: &Path, event_ids: impl IntoIterator<Item = String>) {
    let settings = Settings::load(config).expect("the test's config loads");
    let postgres = Postgres::new(settings.postgres_timeout);
    let reader = Reader::open(&settings, &postgres).await.expect("the journeys can be read");
    let (mut checked, mut failures) = (0, Vec::new());
    let until = std::time::Instant::now() + JOURNEY_DEADLINE;
    for event_id in event_ids {
        let left = until.saturating_duration_since(std::time::Instant::now()).max(Duration::from_secs(1));
        let journey = wait_for(&format!("{event_id}'s journey to end"), left, || async {
            // A read that fails (deliver busy on its socket) is tried again until the deadline.
            reader.get(&event_id).await.ok().flatten().filter(|j| j.end.is_some())
        })
        .await;
        checked += 1;
        if let Some(failure) = what_is_wrong(&journey) {
            eprintln!("journeys: {event_id}'s journey {failure}");
            let shown = serde_json::to_string_pretty(&journey).unwrap_or_default();
            failures.push(format!("{event_id}'s journey {failure}: {shown}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} journeys do not end delivered once with their steps in order; the first: {}",
        failures.len(),
        failures[0]
    );
    println!("journeys: {checked} end delivered once, their steps in order");
}

/// Why `journey` does not end delivered once with its steps in order; none when it does.
fn what_is_wrong(journey: &Journey) -> Option<String> {
    if journey.end.as_deref() != Some("delivered") {
        return Some(format!("ends {:?}, not delivered", journey.end));
    }
    let delivered = journey.steps.iter().filter(|s| s.outcome == "delivered").count();
    if delivered != 1 {
        return Some(format!("has {delivered} delivered steps, not one"));
    }
    let later = journey.steps.windows(2).position(|w| w[1].at < w[0].at)?;
    Some(format!("has step {} taken before step {later} (steps out of order)", later + 1))
}
