//! Every answer of the webhook API, and what reaches the queue.

use std::collections::HashSet;

use bridge_shared::event::{Envelope, EventKind};
use bridge_tests::fixtures::{chat, offline, OTHER_WEBHOOK_TOKEN, WEBHOOK_TOKEN};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Options, SECRET_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_webhooks_are_queued_with_their_routing_key_and_a_stable_event_id() {
    let app = spawn_app("valid", Options::default()).await;
    app.wait_connected().await;
    let chat_body = chat(4242, json!({}));
    let offline_body = offline("c-9", "How much is delivery?");
    let (status, first) = app.post_json("acme", "chat", &chat_body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["accepted"], true);
    let (status, again) = app.post_json("acme", "chat", &chat_body).await;
    assert_eq!(status, 200);
    assert_eq!(again["event_id"], first["event_id"], "the same webhook twice has the same event id");
    let (status, off) = app.post_json("acme", "offline", &offline_body).await;
    assert_eq!(status, 200, "{off}");

    let queued = app.broker.take_all(&app.broker.topology.deliver_queue()).await;
    assert_eq!(queued.len(), 3);
    let keys: Vec<_> = queued.iter().map(|m| m.routing_key.as_str()).collect();
    assert_eq!(keys, vec!["chat", "chat", "offline"]);
    assert!(queued.iter().all(|m| m.persistent), "messages are persistent");
    let envelope = Envelope::from_bytes(&queued[0].body).expect("the envelope parses");
    assert_eq!(envelope.event_id.as_str(), first["event_id"].as_str().unwrap());
    assert_eq!((envelope.integration.as_str(), envelope.kind), ("acme", EventKind::Chat));
    assert_eq!(
        serde_json::from_str::<Value>(envelope.payload.get()).unwrap(),
        chat_body,
        "the raw payload is kept whole"
    );
    let envelope = Envelope::from_bytes(&queued[2].body).unwrap();
    assert_eq!(envelope.payload.get(), offline_body.to_string(), "byte for byte");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_content_type_is_accepted() {
    let app = spawn_app("ctype", Options::default()).await;
    app.wait_connected().await;
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-8"] {
        let body = chat(7, json!({})).to_string();
        let response = app
            .http
            .post(app.webhook_url("acme", "chat", WEBHOOK_TOKEN))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{content_type}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_answer_and_publishes_nothing() {
    let app = spawn_app("refusals", Options { max_body_bytes: Some(4096), ..Default::default() }).await;
    app.wait_connected().await;
    let valid = chat(1, json!({})).to_string();
    let mut with_secret = chat(2, json!({}));
    with_secret["secretKey"] = json!("wrong");
    let mut right_secret = chat(3, json!({}));
    right_secret["secretKey"] = json!(SECRET_KEY);
    let mut not_final = chat(4, json!({}));
    not_final["eventId"] = json!("newMessageFromClient");
    let mut dialog_on_offline = offline("c-1", "q");
    dialog_on_offline["eventId"] = json!("dialogFinished");
    let huge = json!({"client": {"name": "x".repeat(5000)}}).to_string();
    let cases: Vec<(&str, &str, &str, String, u16, &str)> = vec![
        ("acme", "chat", WEBHOOK_TOKEN, "not json".into(), 400, "invalid_webhook"),
        ("acme", "chat", WEBHOOK_TOKEN, "[1, 2]".into(), 400, "invalid_webhook"),
        ("acme", "chat", WEBHOOK_TOKEN, r#"{"eventId": "x"}"#.into(), 400, "invalid_webhook"),
        ("acme", "chat", WEBHOOK_TOKEN, "".into(), 400, "invalid_webhook"),
        ("guarded", "chat", OTHER_WEBHOOK_TOKEN, with_secret.to_string(), 401, "unauthorized"),
        ("guarded", "chat", OTHER_WEBHOOK_TOKEN, valid.clone(), 401, "unauthorized"),
        ("nobody", "chat", WEBHOOK_TOKEN, valid.clone(), 404, "not_found"),
        ("acme", "chat", OTHER_WEBHOOK_TOKEN, valid.clone(), 404, "not_found"),
        ("acme", "chat", &WEBHOOK_TOKEN[..20], valid.clone(), 404, "not_found"),
        ("sleeping", "chat", WEBHOOK_TOKEN, valid.clone(), 404, "not_found"),
        ("guarded", "offline", OTHER_WEBHOOK_TOKEN, offline("c", "q").to_string(), 404, "not_found"),
        ("acme", "calls", WEBHOOK_TOKEN, valid.clone(), 404, "not_found"),
        ("acme", "chat", WEBHOOK_TOKEN, huge, 413, "too_large"),
    ];
    for (integration, kind, token, body, status, code) in cases {
        let (got, answer) = app.post(integration, kind, token, body).await;
        assert_eq!((got, answer["error"].as_str().unwrap_or("")), (status, code), "{integration}/{kind}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "a message for a person");
        let text = answer.to_string();
        assert!(
            !text.contains(WEBHOOK_TOKEN) && !text.contains(OTHER_WEBHOOK_TOKEN) && !text.contains(SECRET_KEY),
            "no secret in {text}"
        );
    }
    for (kind, body) in [("chat", not_final), ("offline", dialog_on_offline)] {
        let (status, answer) = app.post_json("acme", kind, &body).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted"], false);
        assert!(answer["ignored"].as_str().unwrap().contains("is not delivered"));
    }
    assert_eq!(app.broker.depth(&app.broker.topology.deliver_queue()).await, 0, "nothing published for a refusal");

    let (status, _) = app.post("guarded", "chat", OTHER_WEBHOOK_TOKEN, right_secret.to_string()).await;
    assert_eq!(status, 200, "the right secretKey is accepted");
    let metrics = app.metrics().await;
    for sample in [
        r#"bridge_ingest_requests_total{kind="chat",outcome="invalid"} 4"#,
        r#"bridge_ingest_requests_total{kind="chat",outcome="unauthorized"} 2"#,
        r#"bridge_ingest_requests_total{kind="chat",outcome="too_large"} 1"#,
        r#"bridge_ingest_requests_total{kind="chat",outcome="ignored"} 1"#,
        r#"bridge_ingest_requests_total{kind="unknown",outcome="not_found"} 1"#,
        r#"bridge_ingest_requests_total{kind="chat",outcome="accepted"} 1"#,
    ] {
        assert!(metrics.contains(sample), "{sample} in\n{metrics}");
    }
    assert!(!metrics.contains(WEBHOOK_TOKEN));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_unknown_paths_and_metrics_only_off_the_public_port() {
    let app = spawn_app("health", Options::default()).await;
    app.wait_connected().await;
    for address in [&app.address, &app.metrics_address] {
        let get = |path: &str| app.http.get(format!("{address}{path}")).send();
        assert_eq!(get("/healthz").await.unwrap().status(), 200, "{address}");
        let ready = get("/readyz").await.unwrap();
        assert_eq!(ready.status(), 200, "{address}");
        let nowhere = get("/nowhere").await.unwrap();
        assert_eq!(nowhere.status(), 404);
        assert_eq!(nowhere.json::<Value>().await.unwrap()["error"], "not_found");
    }
    // The page names the integrations and why they are paused or refused: not for the internet.
    let public = app.http.get(format!("{}/metrics", app.address)).send().await.unwrap();
    assert_eq!(public.status(), 404);
    let metrics = app.metrics().await;
    for name in ["bridge_amqp_connected 1", "bridge_ingest_spool_events 0", "bridge_config_integrations 3"] {
        assert!(metrics.contains(name), "{name}");
    }
    assert!(metrics.contains("bridge_integration_version{integration=\"acme\",version=\""), "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_broker_and_spool_the_answer_is_503() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("amqp://guest:guest@{}/%2f", closed.local_addr().unwrap());
    drop(closed);
    let app =
        spawn_app("unavailable", Options { amqp_url: Some(url), spool_max_bytes: Some(1), ..Default::default() }).await;
    let (status, answer) = app.post_json("acme", "chat", &chat(1, json!({}))).await;
    assert_eq!((status, answer["error"].as_str()), (503, Some("unavailable")), "{answer}");
    let ready = app.http.get(format!("{}/readyz", app.address)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.json::<Value>().await.unwrap()["reason"].as_str().unwrap().contains("broker"));
    assert!(app.metrics().await.contains(r#"bridge_ingest_requests_total{kind="chat",outcome="unavailable"} 1"#));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrations_are_reloaded_without_a_restart_and_a_broken_edit_keeps_the_last_good_set() {
    let app = spawn_app("reload", Options::default()).await;
    app.wait_connected().await;
    let path = app.dir.path().join("integrations.toml");
    let body = chat(1, json!({}));
    std::fs::write(&path, "this is not toml [").unwrap();
    bridge_tests::wait_for("the failed reload to be counted", std::time::Duration::from_secs(10), || async {
        (app.metric("bridge_config_reload_failures_total").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(app.post_json("acme", "chat", &body).await.0, 200, "the last good set stays in force");
    let without_acme = crate::helpers::integrations_toml().replacen("id = \"acme\"", "id = \"acme-renamed\"", 1);
    std::fs::write(&path, without_acme).unwrap();
    bridge_tests::wait_for("acme to disappear", std::time::Duration::from_secs(10), || async {
        (app.post_json("acme", "chat", &body).await.0 == 404).then_some(())
    })
    .await;
    let ids: HashSet<_> =
        app.broker.take_all(&app.broker.topology.deliver_queue()).await.into_iter().map(|m| m.routing_key).collect();
    assert_eq!(ids.len(), 1);
    app.stop().await;
}

/// An integration whose stored settings do not validate here (a variable this server lacks) and
/// that has no earlier good version: its webhooks are asked to retry (Verbox retries a 503, not a
/// 404) while the operator fixes it, and a wrong token still gets the unknown integration's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_integration_asks_its_webhooks_to_retry_and_a_wrong_token_still_gets_404() {
    let app = spawn_app("refused", Options::default()).await;
    app.wait_connected().await;
    let refused = r#"
[[integration]]
id = "fresh"
webhook_token = "fresh_0123456789abcdefghijkl"
comagic_api = "http://127.0.0.1:9/v2.0"
comagic_token_env = "BRIDGE_TEST_VARIABLE_NEVER_SET"
employee_id = 101
timezone = "Europe/Moscow"
default = { campaign_id = 5001 }
"#;
    std::fs::write(app.dir.path().join("integrations.toml"), crate::helpers::integrations_toml() + refused).unwrap();
    let body = chat(1, json!({})).to_string();
    let (status, answer) =
        bridge_tests::wait_for("the refusal to apply", std::time::Duration::from_secs(10), || async {
            let (status, answer) = app.post("fresh", "chat", "fresh_0123456789abcdefghijkl", body.clone()).await;
            (status != 404).then_some((status, answer))
        })
        .await;
    assert_eq!((status, answer["error"].as_str()), (503, Some("not_applied")), "{answer}");
    assert_eq!(app.post("fresh", "chat", WEBHOOK_TOKEN, body.clone()).await.0, 404, "a wrong token learns nothing");
    assert_eq!(app.post("fresh", "nonsense", "fresh_0123456789abcdefghijkl", body).await.0, 404);
    assert_eq!(app.post_json("acme", "chat", &chat(2, json!({}))).await.0, 200, "the others apply");
    assert_eq!(app.broker.take_all(&app.broker.topology.deliver_queue()).await.len(), 1, "only acme's was stored");
    app.stop().await;
}

/// A chat whose messages carry a broken clock still reaches the queue whole (CoMagic gets it dated
/// by its other messages or its receipt), and the answer names each time that was not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_with_times_out_of_range_is_accepted_and_the_answer_names_them() {
    let app = spawn_app("times", Options::default()).await;
    app.wait_connected().await;
    let mut broken = chat(31, json!({}));
    broken["data"]["dialog"]["messages"][0]["dateTimeUTC"] = json!("-262143-01-01 00:00:00");
    broken["data"]["dialog"]["messages"][1]["dateTime"] = json!(253_402_300_799_i64);
    let (status, answer) = app.post_json("acme", "chat", &broken).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], true);
    assert_eq!(
        answer["times_out_of_range"],
        json!([
            "`dialog.messages[0].dateTimeUTC` = -262143-01-01 00:00:00",
            "`dialog.messages[1].dateTime` = 9999-12-31 23:59:59"
        ]),
        "{answer}"
    );
    let (status, sound) = app.post_json("acme", "chat", &chat(32, json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(sound.get("times_out_of_range"), None, "a sound webhook's answer names nothing: {sound}");
    let queued = app.broker.take_all(&app.broker.topology.deliver_queue()).await;
    assert_eq!(queued.len(), 2);
    let envelope = Envelope::from_bytes(&queued[0].body).unwrap();
    assert_eq!(serde_json::from_str::<Value>(envelope.payload.get()).unwrap(), broken, "the payload is kept whole");
    app.stop().await;
}
