//! The spool at its limits: a cap in bytes, and a file system that fills up. Either way a webhook
//! that could not be made durable gets 503, never 200, and every 200 is in the spool.

use std::path::Path;
use std::process::Command;

use bridge_tests::fixtures::chat;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Options, TestApp};

/// An AMQP URL where nothing listens: every event goes to the spool.
fn no_broker() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("amqp://guest:guest@{}/%2f", closed.local_addr().unwrap());
    drop(closed);
    url
}

/// Posts chats (~1.3 KB each) until one is refused; returns the 200s and the first refusal.
async fn post_until_refused(app: &TestApp, most: u64) -> (u64, Option<(u16, Value)>) {
    let padding = "x".repeat(1_000);
    for i in 0..most {
        let (status, answer) = app.post_json("acme", "chat", &chat(i, json!({"name": padding}))).await;
        if status != 200 {
            return (i, Some((status, answer)));
        }
    }
    (most, None)
}

async fn assert_refused(app: &TestApp, accepted: u64, refusal: Option<(u16, Value)>) {
    let (status, answer) = refusal.expect("the spool fills up");
    assert_eq!((status, answer["error"].as_str()), (503, Some("unavailable")), "{answer}");
    assert_eq!(app.metric("bridge_ingest_spool_events").await, accepted as f64, "every 200 is in the spool");
    let (again, _) = app.post_json("acme", "chat", &chat(99_999, json!({"name": "x".repeat(1_000)}))).await;
    assert_eq!(again, 503, "still no room: still no 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_at_its_byte_cap_answers_503() {
    let options = Options { amqp_url: Some(no_broker()), spool_max_bytes: Some(64 << 10), ..Default::default() };
    let app = spawn_app("spool-cap", options).await;
    let (accepted, refusal) = post_until_refused(&app, 1_000).await;
    assert!((30..=60).contains(&accepted), "{accepted} events of ~1.3 KB in 64 KiB");
    assert_refused(&app, accepted, refusal).await;
    app.stop().await;
}

/// A tmpfs of 3 MiB: mounting needs root (as CI runs); elsewhere the test says so and passes.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn mount() -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallFs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_system_that_fills_up_answers_503_never_200() {
    let Some(fs) = SmallFs::mount() else {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    };
    let options = Options {
        amqp_url: Some(no_broker()),
        spool_max_bytes: Some(1 << 30),
        spool_dir: Some(fs.path().join("spool")),
        ..Default::default()
    };
    let app = spawn_app("spool-disk-full", options).await;
    let (accepted, refusal) = post_until_refused(&app, 20_000).await;
    assert!(accepted > 100, "only {accepted} events before the 3 MiB file system was full");
    assert_refused(&app, accepted, refusal).await;
    let ready = app.http.get(format!("{}/readyz", app.address)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "no broker and a spool that cannot write");
    app.stop().await;
}
