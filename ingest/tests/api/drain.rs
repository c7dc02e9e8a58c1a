//! Scaling ingest down: a replica stopped for good must not strand what it spooled. On SIGTERM it
//! drains its spool to the broker before it exits; a spool left behind anyway (the broker was
//! down all along) is drained by `ingest drain-spool` from another machine.

use std::collections::HashSet;
use std::time::Duration;

use bridge_tests::fixtures::chat;
use bridge_tests::proxy::{broker_address, TcpProxy};
use bridge_tests::wait_for;
use serde_json::json;

use crate::helpers::{spawn_app, write_config, Options, TestApp};

/// Cuts the broker off, posts `n` chats (all spooled) and returns their event ids.
async fn spool_chats(app: &TestApp, proxy: &TcpProxy, n: u64) -> HashSet<String> {
    app.wait_connected().await;
    proxy.cut();
    wait_for("ingest to see the broker gone", Duration::from_secs(20), || async {
        (app.metric("bridge_amqp_connected").await == 0.0).then_some(())
    })
    .await;
    let mut ids = HashSet::new();
    for i in 0..n {
        let (status, answer) = app.post_json("acme", "chat", &chat(i, json!({}))).await;
        assert_eq!(status, 200, "{answer}");
        ids.insert(answer["event_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(app.metric("bridge_ingest_spool_events").await, n as f64, "all of them spooled");
    ids
}

fn event_ids(messages: &[bridge_tests::broker::Received]) -> HashSet<String> {
    messages
        .iter()
        .map(|m| serde_json::from_slice::<serde_json::Value>(&m.body).unwrap()["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The broker comes back and the replica is stopped a moment later, before its drain loop has
/// caught up: it publishes its whole spool before exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_right_after_its_broker_returns_it_drains_the_spool_before_exiting() {
    let proxy = TcpProxy::start(broker_address(&bridge_tests::broker::amqp_url())).await;
    let app = spawn_app("drain-on-stop", Options { amqp_url: Some(proxy.amqp_url()), ..Default::default() }).await;
    let spooled = spool_chats(&app, &proxy, 300).await;
    proxy.restore();
    let (broker, _dir) = app.shut_down().await;
    let queued = broker.take_all(&broker.topology.deliver_queue()).await;
    assert_eq!(event_ids(&queued), spooled, "every spooled event reached the broker before ingest exited");
    broker.cleanup().await;
}

/// The broker stays unreachable until the replica is gone: its spool stays on disk, and the
/// command publishes it from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_left_behind_is_drained_by_the_command() {
    let proxy = TcpProxy::start(broker_address(&bridge_tests::broker::amqp_url())).await;
    let options =
        Options { amqp_url: Some(proxy.amqp_url()), drain_on_stop: Some(Duration::from_secs(0)), ..Default::default() };
    let app = spawn_app("drain-command", options).await;
    let spooled = spool_chats(&app, &proxy, 40).await;
    let (broker, dir) = app.shut_down().await;
    assert_eq!(broker.depth(&broker.topology.deliver_queue()).await, 0, "nothing reached the broker");

    // Another machine, with the real broker's address and the left-behind directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let config = write_config(elsewhere.path(), &broker.url, &broker.prefix, "");
    let spool_dir = dir.path().join("spool");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("ingest runs")
    };
    let out = run(&["drain-spool", "--spool-dir", spool_dir.to_str().unwrap(), "--timeout", "30s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("published 40 events; 0 left"), "{stdout}");
    let queued = broker.take_all(&broker.topology.deliver_queue()).await;
    assert_eq!(event_ids(&queued), spooled);
    let again = run(&["drain-spool", "--spool-dir", spool_dir.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("published 0 events; 0 left"));
    broker.cleanup().await;
}

/// A mistyped `--spool-dir` (a path that does not exist, or a directory with no spool in it) is
/// refused with a message naming the cause and a failing exit, and nothing is created there: it
/// used to be opened as a new, empty spool, "published 0 events" and exit 0.
#[test]
fn a_directory_without_a_spool_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &bridge_tests::broker::amqp_url(), "drain-nospool", "");
    let missing = dir.path().join("spol");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for (path, cause) in [(&missing, "the directory does not exist"), (&empty, "holds no spool")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
            .arg("--config")
            .arg(&config)
            .args(["drain-spool", "--spool-dir", path.to_str().unwrap(), "--timeout", "5s"])
            .output()
            .expect("ingest runs");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{stdout}{stderr}");
        assert!(stderr.contains("no spool here") && stderr.contains(cause), "{stderr}");
        assert!(!stdout.contains("published"), "{stdout}");
    }
    assert!(!missing.exists(), "the mistyped path was not created");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "nothing was written into the empty directory");
}
