//! An upload in doubt is not sent twice: when CoMagic stored a batch but no answer said so (the
//! answer lost on the way, or deliver killed while waiting for it), deliver asks CoMagic's report
//! before sending those events again. The sandbox stores a repeated `ext_id` as a second item here,
//! so a second upload would show.

use std::time::Duration;

use bridge_tests::fixtures::chat;
use bridge_tests::sandbox::{Fault, FaultKind};
use bridge_tests::wait_for;
use serde_json::json;

use crate::copies::{assert_each_stored_once_when_settled, pipeline_storing_repeats};
use crate::helpers::{post_from_clients, start_deliver_binary, terminate, Options};
use crate::journeys::assert_journeys_end_once;

fn lose_answers(calls: u64, held_ms: u64) -> Fault {
    Fault {
        account: Some("shop".into()),
        kind: FaultKind::AnswerLost,
        calls: Some(calls),
        latency_ms: held_ms,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_answer_was_lost_after_comagic_stored_it_is_not_sent_again() {
    let p = pipeline_storing_repeats("answer-lost", Options::default()).await;
    p.sandbox.add_fault(lose_answers(3, 0));
    let posted =
        post_from_clients(&p, 8, 0..200, |p, i| async move { p.post("shop", "chat", &chat(i, json!({}))).await }).await;
    assert_each_stored_once_when_settled(&p, &posted).await;
    let found = wait_for("the stored batches found in the report", Duration::from_secs(30), || async {
        let found = p.deliver_metric(r#"bridge_deliver_in_doubt_total{kind="chat",outcome="found"}"#).await;
        (found >= 1.0).then_some(found)
    })
    .await;
    let lost = p.sandbox.calls().iter().filter(|c| c.result == "answer_lost").count();
    println!("answer lost: {lost} answers lost, {found} events found in the report instead of sent again");
    assert_eq!(lost, 3, "the faults were used");
    assert_journeys_end_once(&p.config, posted).await;
    std::sync::Arc::into_inner(p).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_killed_while_comagic_holds_its_answer_sends_nothing_twice() {
    let options = Options { external_deliver: true, ..Default::default() };
    let p = pipeline_storing_repeats("killed-in-doubt", options).await;
    // The first upload is stored, and its answer held for a minute: deliver is killed meanwhile.
    p.sandbox.add_fault(lose_answers(1, 60_000));
    let posted =
        post_from_clients(&p, 4, 0..100, |p, i| async move { p.post("shop", "chat", &chat(i, json!({}))).await }).await;
    let mut first = start_deliver_binary(&p, 1);
    wait_for("an upload stored with its answer held", Duration::from_secs(30), || async {
        p.sandbox.calls().iter().any(|c| c.result == "answer_lost").then_some(())
    })
    .await;
    first.kill().unwrap(); // SIGKILL: CoMagic has the batch, the ledger does not
    first.wait().unwrap();
    let mut second = start_deliver_binary(&p, 2);
    assert_each_stored_once_when_settled(&p, &posted).await;
    // Read while the second deliver runs: the sled journey is read over its socket.
    assert_journeys_end_once(&p.config, posted).await;
    terminate(&mut second);
    let asked = p.sandbox.calls().iter().filter(|c| c.method == "get.chats_report" && c.result == "ok").count();
    assert!(asked >= 1, "the restarted deliver asked the report about the redelivered batch");
    std::sync::Arc::into_inner(p).unwrap().stop().await;
}

/// Posts 50 chats to `shop`; once CoMagic's report found the batch in doubt, requires each chat
/// stored exactly once when everything settled.
async fn fifty_chats_found_in_doubt_and_each_stored_once(p: &std::sync::Arc<crate::helpers::Pipeline>) {
    let posted =
        post_from_clients(p, 4, 0..50, |p, i| async move { p.post("shop", "chat", &chat(i, json!({}))).await }).await;
    wait_for("the batch in doubt found in the report", Duration::from_secs(60), || async {
        let found = p.deliver_metric(r#"bridge_deliver_in_doubt_total{kind="chat",outcome="found"}"#).await;
        (found >= 1.0).then_some(())
    })
    .await;
    assert_each_stored_once_when_settled(p, &posted).await;
    assert_journeys_end_once(&p.config, posted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_carried_out_after_deliver_gave_up_on_it_is_not_sent_again() {
    // CoMagic hangs 15 s, well past deliver's 2 s timeout (and past the first retry tier, 10 s),
    // then stores the batch anyway; the grace (2 s + 15 s) outlasts the hang.
    let options = Options { deliver_extra: "comagic_timeout = \"2s\"\ndoubt_margin = \"15s\"", ..Default::default() };
    let p = pipeline_storing_repeats("stored-late", options).await;
    p.sandbox.add_fault(Fault {
        account: Some("shop".into()),
        kind: FaultKind::StoredLate,
        calls: Some(1),
        latency_ms: 15_000,
        ..Default::default()
    });
    fifty_chats_found_in_doubt_and_each_stored_once(&p).await;
    assert_eq!(p.sandbox.calls().iter().filter(|c| c.result == "stored_late").count(), 1, "the fault was used");
    std::sync::Arc::into_inner(p).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_lists_uploads_late_is_asked_only_after_the_grace() {
    // The report lists an upload 12 s after it is stored, later than the first retry tier (10 s)
    // brings the batch back; the grace (2 s + 13 s) covers it.
    let options = Options { deliver_extra: "comagic_timeout = \"2s\"\ndoubt_margin = \"13s\"", ..Default::default() };
    let p = pipeline_storing_repeats("report-lag", options).await;
    p.sandbox.update_account("shop", |a| a.report_lag_ms = 12_000);
    p.sandbox.add_fault(lose_answers(1, 0));
    fifty_chats_found_in_doubt_and_each_stored_once(&p).await;
    std::sync::Arc::into_inner(p).unwrap().stop().await;
}
