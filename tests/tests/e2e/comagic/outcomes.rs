//! Every kind of answer is classified into the class the delivery side acts on.

use std::time::Duration;

use bridge_shared::comagic::{Failure, QuotaWindow};
use bridge_shared::secret::Secret;
use bridge_tests::sandbox::{Account, Fault, FaultKind, Sandbox, SandboxConfig, Upload};
use serde_json::{json, Map, Value};

use super::*;

#[tokio::test]
async fn success_stores_items_and_reports_limits() {
    let sandbox = sandbox().await;
    let (client, registry) = comagic_client(Duration::from_secs(5));
    let mut params = Map::new();
    params.insert("chats".into(), json!([valid_chat("ok-1")]));
    let ok = client.call(sandbox.url(), &Secret::new(TOKEN), "upload.chats", params, Some("chats")).await.unwrap();
    let limits = ok.limits.expect("metadata.limits on every success");
    assert_eq!(limits.minute_remaining, limits.minute_limit - 1, "one point per request");
    let stored = sandbox.stored("acme", Upload::Chats);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["ext_id"], "ok-1");
    let metrics = bridge_shared::telemetry::render(&registry);
    assert!(metrics.contains(r#"bridge_comagic_requests_total{method="upload.chats",result="ok"} 1"#), "{metrics}");
    assert!(!metrics.contains(TOKEN));
}

#[tokio::test]
async fn duplicates_are_their_own_class() {
    let sandbox = sandbox().await;
    let (client, _) = comagic_client(Duration::from_secs(5));
    call(&client, &sandbox, "upload.chats", "chats", vec![valid_chat("dup-1")]).await.unwrap();
    let again = call(&client, &sandbox, "upload.chats", "chats", vec![valid_chat("new-1"), valid_chat("dup-1")]).await;
    assert_eq!(again, Err(Failure::Duplicate { index: Some(1) }));
    assert_eq!(sandbox.stored("acme", Upload::Chats).len(), 1, "all or nothing: new-1 was not stored");
}

#[tokio::test]
async fn tenant_level_failures() {
    let sandbox = Sandbox::start(SandboxConfig {
        account: vec![
            Account::sample("acme", TOKEN),
            Account { components: vec![], ..Account::sample("bare", "sandbox-token-bare") },
        ],
    })
    .await
    .unwrap();
    let (client, _) = comagic_client(Duration::from_secs(5));
    let upload = |token: &'static str| {
        let client = client.clone();
        let url = sandbox.url().to_owned();
        async move {
            let mut params = Map::new();
            params.insert("chats".into(), json!([valid_chat("t-1")]));
            client.call(&url, &Secret::new(token), "upload.chats", params, Some("chats")).await
        }
    };
    let tenant = |r: Result<_, Failure>| match r {
        Err(Failure::Tenant { mnemonic, .. }) => mnemonic,
        other => panic!("{other:?}"),
    };
    assert_eq!(tenant(upload("wrong-token").await), "access_token_invalid");
    assert_eq!(tenant(upload("sandbox-token-bare").await), "method_component_disabled");
    sandbox.update_account("acme", |a| a.ip_whitelisted = false);
    assert_eq!(tenant(upload(TOKEN).await), "ip_not_whitelisted");
    sandbox.update_account("acme", |a| {
        a.ip_whitelisted = true;
        a.active = false;
    });
    assert_eq!(tenant(upload(TOKEN).await), "account_inactive");
    sandbox.update_account("acme", |a| a.active = true);
    assert!(upload(TOKEN).await.is_ok(), "fixing the account is enough");
    for mnemonic in
        ["access_token_expired", "access_token_blocked", "auth_error", "forbidden", "parameter_component_disabled"]
    {
        sandbox.add_fault(Fault {
            kind: FaultKind::Error,
            mnemonic: Some(mnemonic.into()),
            calls: Some(1),
            ..Default::default()
        });
        assert_eq!(tenant(upload(TOKEN).await), mnemonic);
    }
}

#[tokio::test]
async fn quota_is_its_own_class_and_uncharged() {
    let sandbox =
        Sandbox::start(SandboxConfig { account: vec![Account { minute_limit: 2, ..Account::sample("acme", TOKEN) }] })
            .await
            .unwrap();
    let (client, _) = comagic_client(Duration::from_secs(5));
    let first = call(&client, &sandbox, "upload.chats", "chats", vec![valid_chat("q-1")]).await;
    assert!(first.is_ok());
    let mut params = Map::new();
    params.insert("chats".into(), json!([valid_chat("q-2")]));
    let second = client.call(sandbox.url(), &Secret::new(TOKEN), "upload.chats", params, Some("chats")).await.unwrap();
    assert_eq!(second.limits.unwrap().minute_remaining, 0);
    assert!(second.limits.unwrap().minute_reset >= 1);
    let third = call(&client, &sandbox, "upload.chats", "chats", vec![valid_chat("q-3")]).await;
    assert_eq!(third, Err(Failure::Quota { window: QuotaWindow::Minute }));
    assert_eq!(sandbox.stored("acme", Upload::Chats).len(), 2);
}

#[tokio::test]
async fn transient_failures() {
    let sandbox = sandbox().await;
    let (client, _) = comagic_client(Duration::from_millis(500));
    let transient = |r: Result<Value, Failure>| match r {
        Err(Failure::Transient { label, .. }) => label,
        other => panic!("{other:?}"),
    };
    sandbox.add_fault(Fault { kind: FaultKind::Http500, calls: Some(1), ..Default::default() });
    assert_eq!(transient(call(&client, &sandbox, "upload.chats", "chats", vec![valid_chat("tr-1")]).await), "http_5xx");
    sandbox.add_fault(Fault {
        kind: FaultKind::Error,
        mnemonic: Some("internal_error".into()),
        calls: Some(1),
        ..Default::default()
    });
    assert_eq!(
        transient(call(&client, &sandbox, "upload.chats", "chats", vec![valid_chat("tr-1")]).await),
        "internal_error"
    );
    sandbox.add_fault(Fault { kind: FaultKind::Hang, calls: Some(1), ..Default::default() });
    assert_eq!(
        transient(call(&client, &sandbox, "upload.chats", "chats", vec![valid_chat("tr-1")]).await),
        "transport",
        "a hang times out"
    );
    assert!(
        call(&client, &sandbox, "upload.chats", "chats", vec![valid_chat("tr-1")]).await.is_ok(),
        "faults were for one call each"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v2.0", closed.local_addr().unwrap());
    drop(closed);
    let refused = client.call(&url, &Secret::new(TOKEN), "get.account", Map::new(), None).await;
    assert!(!refused.as_ref().unwrap_err().may_have_arrived(), "nothing reached CoMagic");
    assert_eq!(transient(refused.map(|s| s.result)), "connect");
}

#[tokio::test]
async fn latency_faults_delay_and_are_scoped_to_an_account() {
    let sandbox = sandbox().await;
    let (client, _) = comagic_client(Duration::from_secs(5));
    sandbox.add_fault(Fault { account: Some("other".into()), kind: FaultKind::Http500, ..Default::default() });
    sandbox.add_fault(Fault { kind: FaultKind::Latency, latency_ms: 200, calls: Some(1), ..Default::default() });
    let started = std::time::Instant::now();
    assert!(
        call(&client, &sandbox, "upload.chats", "chats", vec![valid_chat("l-1")]).await.is_ok(),
        "the other account's fault does not apply"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn the_sandbox_serves_its_records_over_http() {
    let sandbox = sandbox().await;
    let (client, _) = comagic_client(Duration::from_secs(5));
    call(&client, &sandbox, "upload.offline_messages", "offline_messages", vec![valid_offline("h-1")]).await.unwrap();
    let base = sandbox.url().trim_end_matches("/v2.0").to_owned();
    let http = reqwest::Client::new();
    let items: Vec<Value> = http
        .get(format!("{base}/__sandbox/accounts/acme/offline_messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["message"], "call me");
    let calls: Vec<Value> = http.get(format!("{base}/__sandbox/calls")).send().await.unwrap().json().await.unwrap();
    assert_eq!(calls[0]["method"], "upload.offline_messages");
    assert_eq!(calls[0]["account"], "acme");
    let patched = http
        .patch(format!("{base}/__sandbox/accounts/acme"))
        .json(&json!({"ip_whitelisted": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 204);
    let blocked =
        call(&client, &sandbox, "upload.offline_messages", "offline_messages", vec![valid_offline("h-2")]).await;
    assert!(matches!(blocked, Err(Failure::Tenant { mnemonic: "ip_not_whitelisted", .. })));
}

#[tokio::test]
async fn protocol_errors() {
    let sandbox = sandbox().await;
    let http = reqwest::Client::new();
    let post = |body: &'static str| http.post(sandbox.url()).body(body).send();
    let mnemonic = |v: Value| v["error"]["data"]["mnemonic"].as_str().unwrap().to_owned();
    assert_eq!(mnemonic(post("{").await.unwrap().json().await.unwrap()), "parse_error");
    assert_eq!(mnemonic(post("[]").await.unwrap().json().await.unwrap()), "notifications_not_supported");
    assert_eq!(
        mnemonic(post(r#"{"jsonrpc":"2.0","method":"get.account","params":{}}"#).await.unwrap().json().await.unwrap()),
        "notifications_not_supported"
    );
    assert_eq!(
        mnemonic(
            post(r#"{"jsonrpc":"1.0","id":1,"method":"get.account","params":{}}"#).await.unwrap().json().await.unwrap()
        ),
        "invalid_request"
    );
}

/// An endpoint that answers 200 and then streams a body without end (or announces one of 1 GiB).
async fn endless_answerer(content_length: Option<u64>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = match content_length {
                    Some(n) => format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n"),
                    None => "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_owned(),
                };
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 << 10];
                while socket.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    address
}

#[tokio::test]
async fn an_answer_longer_than_any_comagic_gives_is_refused_not_read_into_memory() {
    // A minute of timeout: the refusal must come from the size, not the deadline.
    let (client, _registry) = comagic_client(Duration::from_secs(60));
    for content_length in [None, Some(1 << 30)] {
        let endpoint = endless_answerer(content_length).await;
        let answer = client.call(&endpoint, &Secret::new(TOKEN), "upload.chats", Map::new(), Some("chats")).await;
        match answer {
            Err(Failure::Transient { label: "bad_response", reason }) => {
                assert!(reason.contains("more than"), "{reason}")
            }
            other => panic!("{content_length:?}: {other:?}"),
        }
    }
}
