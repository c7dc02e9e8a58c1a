//! The shared ledger's database goes silent under steady load (a proxy in front of PostgreSQL
//! stops carrying packets on the open connections and answers no new ones, as a network that
//! drops them does): deliver says so within `postgres_timeout` (`/readyz` 503 naming the ledger,
//! `bridge_postgres_up{role="ledger"}` 0, one warning), a replica stopped meanwhile still exits
//! within the orchestrator's 30 s, and once the database answers again every chat is delivered
//! exactly once (the sandbox stores a repeated `ext_id` as a second item, so a copy shows).

use std::collections::HashSet;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_tests::bench::free_addresses;
use bridge_tests::fixtures::chat;
use bridge_tests::proxy::TcpProxy;
use bridge_tests::sandbox::Upload;
use bridge_tests::wait_for;
use serde_json::json;

use crate::copies::{assert_each_stored_once_when_settled, pipeline_storing_repeats};
use crate::helpers::{start_deliver_binary_with, Options, Pipeline};

/// `postgres_timeout`'s default, which the replicas run with.
const DEADLINE: Duration = Duration::from_secs(5);
/// For the first statement after the silence to start, and for the HTTP round trips.
const MARGIN: Duration = Duration::from_secs(3);
/// What Kubernetes gives a pod between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(30);
/// After the outage: a claim's 90 s and the retry queues' delays, with room.
const SETTLE: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_ledger_silent_for_20s_under_load_is_reported_and_every_chat_delivered_once() {
    ledger_silent_under_load("ledger-silent-20s", Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute of outage and the settling after it: scripts/test.sh runs it by name"]
async fn the_shared_ledger_silent_for_60s_under_load_is_reported_and_every_chat_delivered_once() {
    ledger_silent_under_load("ledger-silent-60s", Duration::from_secs(60)).await;
}

/// A replica started from the test: its address, and the process.
struct Replica {
    address: String,
    child: Child,
}

impl Replica {
    fn start(p: &Pipeline, run: usize, listen: std::net::SocketAddr) -> Self {
        let child = start_deliver_binary_with(p, run, &[("BRIDGE__DELIVER__LISTEN", listen.to_string())]);
        Replica { address: format!("http://{listen}"), child }
    }

    async fn ready_status(&self, p: &Pipeline) -> Option<u16> {
        Some(p.http.get(format!("{}/readyz", self.address)).send().await.ok()?.status().as_u16())
    }

    /// `bridge_postgres_up{role="ledger"}`, if the page has it.
    async fn ledger_up(&self, p: &Pipeline) -> Option<i64> {
        let page = p.http.get(format!("{}/metrics", self.address)).send().await.ok()?.text().await.ok()?;
        page.lines().find_map(|l| l.strip_prefix(LEDGER_UP)?.trim().parse().ok())
    }

    /// SIGTERM; how long it took to exit.
    fn terminate(&mut self) -> Duration {
        let started = Instant::now();
        crate::helpers::terminate(&mut self.child);
        started.elapsed()
    }
}

/// Posts a chat every 50 ms, twice at the same moment (as Verbox re-sends), until `keep_posting`
/// is cleared; returns the accepted event ids. The copies are what claims keep apart: a ledger
/// that granted claims it could not take would let both out.
fn steady_load(p: &Arc<Pipeline>, keep_posting: &Arc<AtomicBool>) -> tokio::task::JoinHandle<HashSet<String>> {
    let (p, keep_posting) = (p.clone(), keep_posting.clone());
    tokio::spawn(async move {
        let mut ids = HashSet::new();
        for i in 1.. {
            if !keep_posting.load(Ordering::SeqCst) {
                break;
            }
            let body = chat(i, json!({}));
            let (first, second) = tokio::join!(p.post("shop", "chat", &body), p.post("shop", "chat", &body));
            assert_eq!(first, second, "a copy has the event id of the original");
            ids.insert(first);
            tokio::time::sleep(Duration::from_millis(50)).await; // a steady stream, not a burst
        }
        ids
    })
}

const LEDGER_UP: &str = r#"bridge_postgres_up{role="ledger"}"#;

async fn ledger_silent_under_load(test: &str, outage: Duration) {
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = bridge_tests::postgres_url().replace("127.0.0.1:5432", &proxy.address().to_string());
    let ledger: &'static str = Box::leak(format!("ledger_postgres = \"{url}\"").into_boxed_str());
    let options = Options { external_deliver: true, deliver_extra: ledger, linger_ms: 50, ..Default::default() };
    let p = pipeline_storing_repeats(test, options).await;
    let listen = free_addresses(2);
    let mut replicas = [Replica::start(&p, 1, listen[0]), Replica::start(&p, 2, listen[1])];
    let keep_posting = Arc::new(AtomicBool::new(true));
    let load = steady_load(&p, &keep_posting);
    wait_for("deliveries under way", Duration::from_secs(30), || async {
        (p.sandbox.stored("shop", Upload::Chats).len() >= 20).then_some(())
    })
    .await;

    proxy.silence();
    let silenced = Instant::now();
    let [first, second] = &mut replicas;
    wait_for("the replicas to report the silent ledger", DEADLINE + MARGIN, || async {
        let unready = first.ready_status(&p).await? == 503 && second.ready_status(&p).await? == 503;
        (unready && first.ledger_up(&p).await? == 0).then_some(())
    })
    .await;
    println!("{test}: unready {:.1} s after the silence", silenced.elapsed().as_secs_f64());
    let body = p.http.get(format!("{}/readyz", first.address)).send().await.unwrap().text().await.unwrap();
    assert!(body.contains("ledger database"), "readiness names the ledger: {body}");
    let before = p.sandbox.stored("shop", Upload::Chats).len();
    let took = second.terminate();
    println!("{test}: a replica stopped during the outage exited in {:.1} s", took.as_secs_f64());
    assert!(took < GRACE, "SIGTERM during the outage exits within {GRACE:?} ({took:?})");
    if let Some(rest) = outage.checked_sub(silenced.elapsed()) {
        tokio::time::sleep(rest).await; // the outage lasts its length
    }
    assert_eq!(first.ready_status(&p).await, Some(503), "still unready at the end of the outage");

    let during = p.sandbox.stored("shop", Upload::Chats).len() - before;
    println!("{test}: {during} chats stored during the outage (after the replicas noticed it)");
    proxy.restore();
    let restored = Instant::now();
    wait_for("the ledger to answer again", Duration::from_secs(10), || async {
        (first.ready_status(&p).await? == 200 && first.ledger_up(&p).await? == 1).then_some(())
    })
    .await;
    println!("{test}: ready again {:.1} s after the database", restored.elapsed().as_secs_f64());
    keep_posting.store(false, Ordering::SeqCst);
    let posted = load.await.unwrap();
    // Claims a timed-out statement took on the server lapse (90 s) before their copies go out.
    wait_for("every chat stored and nothing waiting", SETTLE, || async {
        let stored = p.sandbox.stored("shop", Upload::Chats).len() >= posted.len();
        (stored && p.broker.waiting().await == 0).then_some(())
    })
    .await;
    assert_each_stored_once_when_settled(&p, &posted).await;
    first.terminate();
    let log = std::fs::read_to_string(p.dir.path().join("deliver-1.log")).unwrap();
    // One of each per role: the ledger's connection and the journey's, both through the proxy.
    for role in ["ledger", "journey"] {
        let of_role = format!("\"database\":\"{role}\"");
        let lines = |text: &str| log.lines().filter(|l| l.contains(text) && l.contains(&of_role)).count();
        assert_eq!(lines("the database does not answer"), 1, "one warning for the outage ({role})");
        assert_eq!(lines("the database answers again"), 1, "one line when it ends ({role})");
    }
    Arc::into_inner(p).unwrap().stop().await;
}
