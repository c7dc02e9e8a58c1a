//! `bridge_shared::postgres::Database` against a database whose line goes silent (a proxy that
//! stops carrying packets on the connections already open and answers no new ones): every
//! operation ends within the deadline, the outage is reported (state and gauge), the half-dead
//! connection is not reused, and the database is back by itself once it answers again.

use std::time::{Duration, Instant};

use bridge_shared::postgres::{DbError, Postgres, Role};
use bridge_tests::proxy::TcpProxy;
use bridge_tests::wait_for;
use prometheus::Registry;

const DEADLINE: Duration = Duration::from_secs(1);
/// Scheduling slack on a loaded two-core machine.
const MARGIN: Duration = Duration::from_millis(700);

fn gauge(registry: &Registry) -> Option<f64> {
    let page = bridge_shared::telemetry::render(registry);
    page.lines().find_map(|l| l.strip_prefix(r#"bridge_postgres_up{role="ledger"} "#)).map(|v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_times_out_within_the_deadline_and_is_reported_until_it_answers() {
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = bridge_tests::postgres_url().replace("127.0.0.1:5432", &proxy.address().to_string());
    let registry = Registry::new();
    let postgres = Postgres::reporting(DEADLINE, bridge_shared::telemetry::postgres_up(&registry));
    let database = postgres.database(&url, Role::Ledger).unwrap();
    database.execute("SELECT 1", &[]).await.expect("PostgreSQL answers through the proxy");
    assert_eq!(gauge(&registry), Some(1.0));

    proxy.silence();
    let started = Instant::now();
    let error = database.execute("SELECT 1", &[]).await.unwrap_err();
    assert!(matches!(error, DbError::TimedOut(_)), "{error}");
    assert!(started.elapsed() < DEADLINE + MARGIN, "{:?}", started.elapsed());
    assert_eq!(postgres.down(), vec![Role::Ledger]);
    assert_eq!(gauge(&registry), Some(0.0));

    // Many callers at once: none waits longer than the deadline behind a connect that hangs.
    let started = Instant::now();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let database = database.clone();
            tokio::spawn(async move { database.query("SELECT 1", &[]).await.map(drop) })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap().is_err(), "nothing answers");
    }
    assert!(started.elapsed() < DEADLINE + MARGIN, "{:?}", started.elapsed());

    proxy.restore();
    // Nobody asks: the probe notices by itself, on a new connection (the old one stays silent).
    wait_for("the database to count as up again", Duration::from_secs(5), || async {
        postgres.down().is_empty().then_some(())
    })
    .await;
    assert_eq!(gauge(&registry), Some(1.0));
    let rows = database.query("SELECT 41 + 1", &[]).await.expect("answers again");
    assert_eq!(rows[0].get::<_, i32>(0), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_on_a_silent_line_ends_within_its_ping_and_deadline() {
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = bridge_tests::postgres_url().replace("127.0.0.1:5432", &proxy.address().to_string());
    let postgres = Postgres::new(DEADLINE);
    let database = postgres.database(&url, Role::Integrations).unwrap();
    let mut listener = database.listen("bridge_test_silence").await.expect("LISTEN through the proxy");
    proxy.silence();
    let ended = tokio::time::timeout(Duration::from_secs(20), listener.next()).await;
    assert_eq!(ended, Ok(None), "a silent listening connection ends instead of waiting for ever");
    let started = Instant::now();
    assert!(database.listen("bridge_test_silence").await.is_err(), "no new LISTEN either");
    assert!(started.elapsed() < DEADLINE + MARGIN, "{:?}", started.elapsed());
    assert_eq!(postgres.down(), vec![Role::Integrations]);
}
