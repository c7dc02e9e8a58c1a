//! The CoMagic client against the sandbox: every documented violation is refused with its code and
//! mnemonic, and every outcome is classified into the class the delivery side acts on.

use std::time::Duration;

use bridge_shared::comagic::{ComagicClient, Failure, QuotaWindow};
use bridge_shared::secret::Secret;
use bridge_tests::sandbox::{Account, Fault, FaultKind, Sandbox, SandboxConfig, Upload};
use serde_json::{json, Map, Value};

use crate::helpers::comagic_client;

const TOKEN: &str = "sandbox-token-acme";

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig { account: vec![Account::sample("acme", TOKEN)] }).await.unwrap()
}

fn valid_chat(ext_id: &str) -> Value {
    json!({
        "ext_id": ext_id, "start_date_time": "2026-01-01 10:00:00", "phone": "79123456789", "status": "succeed",
        "campaign_id": 5001,
        "messages": [
            {"date_time": "2026-01-01 10:00:00", "source": "visitor", "message": "hi"},
            {"date_time": "2026-01-01 10:01:00", "source": "operator", "message": "hello", "employee_id": 101}
        ]
    })
}

fn valid_offline(ext_id: &str) -> Value {
    json!({"ext_id": ext_id, "date_time": "2026-01-01 10:00:00", "email": "a@b.ru", "message": "call me", "form_name": "Verbox", "campaign_id": 5001})
}

async fn call(
    client: &ComagicClient,
    sandbox: &Sandbox,
    method: &'static str,
    key: &str,
    items: Vec<Value>,
) -> Result<Value, Failure> {
    let mut params = Map::new();
    params.insert(key.into(), Value::Array(items));
    client.call(sandbox.url(), &Secret::new(TOKEN), method, params, Some(key)).await.map(|s| s.result)
}

/// Applies `change` to the second of three valid items, so the index in `field` is checked too.
fn batch_with(base: fn(&str) -> Value, change: impl FnOnce(&mut Map<String, Value>)) -> Vec<Value> {
    let mut items: Vec<Value> = (0..3).map(|i| base(&format!("x-{i}"))).collect();
    change(items[1].as_object_mut().unwrap());
    items
}

#[tokio::test]
async fn each_documented_chat_violation_is_refused_with_its_mnemonic_and_index() {
    let sandbox = sandbox().await;
    let (client, _) = comagic_client(Duration::from_secs(5));
    type Change = Box<dyn FnOnce(&mut Map<String, Value>)>;
    let cases: Vec<(&str, &str, Change)> = vec![
        (
            "required_parameter_missed",
            "start_date_time",
            Box::new(|i| {
                i.remove("start_date_time");
            }),
        ),
        (
            "invalid_date_time",
            "start_date_time",
            Box::new(|i| {
                i.insert("start_date_time".into(), json!("01.01.2026 10:00"));
            }),
        ),
        (
            "invalid_date_time",
            "start_date_time",
            Box::new(|i| {
                i.insert("start_date_time".into(), json!("2999-01-01 10:00:00"));
            }),
        ),
        (
            "required_parameter_missed",
            "status",
            Box::new(|i| {
                i.remove("status");
            }),
        ),
        (
            "invalid_parameter_value",
            "status",
            Box::new(|i| {
                i.insert("status".into(), json!("done"));
            }),
        ),
        (
            "invalid_parameter_value",
            "initiator",
            Box::new(|i| {
                i.insert("initiator".into(), json!("robot"));
            }),
        ),
        (
            "required_parameter_missed",
            "phone",
            Box::new(|i| {
                i.remove("phone");
            }),
        ),
        (
            "invalid_parameter_value",
            "phone",
            Box::new(|i| {
                i.insert("phone".into(), json!("+7 912 345"));
            }),
        ),
        (
            "required_parameter_missed",
            "visitor_session_id",
            Box::new(|i| {
                i.remove("campaign_id");
            }),
        ),
        (
            "invalid_parameter_value",
            "campaign_id",
            Box::new(|i| {
                i.insert("campaign_id".into(), json!(-1));
            }),
        ),
        (
            "entity_not_found",
            "campaign_id",
            Box::new(|i| {
                i.insert("campaign_id".into(), json!(999));
            }),
        ),
        (
            "entity_not_found",
            "visitor_session_id",
            Box::new(|i| {
                i.remove("campaign_id");
                i.insert("visitor_session_id".into(), json!(12345));
            }),
        ),
        (
            "entity_not_found",
            "site_id",
            Box::new(|i| {
                i.remove("campaign_id");
                i.insert("site_id".into(), json!(4));
            }),
        ),
        (
            "entity_not_found",
            "source_id",
            Box::new(|i| {
                i.insert("source_id".into(), json!(4));
            }),
        ),
        (
            "invalid_parameters_combination",
            "site_id",
            Box::new(|i| {
                i.insert("site_id".into(), json!(78));
            }),
        ),
        (
            "unexpected_parameters",
            "colour",
            Box::new(|i| {
                i.insert("colour".into(), json!("red"));
            }),
        ),
        (
            "required_parameter_missed",
            "messages",
            Box::new(|i| {
                i.remove("messages");
            }),
        ),
        (
            "required_parameter_missed",
            "messages.1.employee_id",
            Box::new(|i| {
                i["messages"][1].as_object_mut().unwrap().remove("employee_id");
            }),
        ),
        (
            "entity_not_found",
            "messages.1.employee_id",
            Box::new(|i| {
                i["messages"][1]["employee_id"] = json!(7);
            }),
        ),
        (
            "invalid_parameter_value",
            "messages.0.source",
            Box::new(|i| {
                i["messages"][0]["source"] = json!("bot");
            }),
        ),
        (
            "data_type_error",
            "ext_id",
            Box::new(|i| {
                i.insert("ext_id".into(), json!(5));
            }),
        ),
    ];
    for (mnemonic, field, change) in cases {
        let got = call(&client, &sandbox, "upload.chats", "chats", batch_with(valid_chat, change)).await;
        match got {
            Err(Failure::Item { mnemonic: m, index, field: f, .. }) => {
                assert_eq!((m, index), (mnemonic, Some(1)), "{field}");
                assert_eq!(f.as_deref(), Some(format!("chats.1.{field}").as_str()));
            }
            other => panic!("{mnemonic} {field}: {other:?}"),
        }
    }
    assert!(sandbox.stored("acme", Upload::Chats).is_empty(), "a refused request stores nothing");
}

#[tokio::test]
async fn offline_rules_and_request_level_rules() {
    let sandbox = sandbox().await;
    let (client, _) = comagic_client(Duration::from_secs(5));
    let minus_one_without_site = batch_with(valid_offline, |i| {
        i.insert("campaign_id".into(), json!(-1));
    });
    let got = call(&client, &sandbox, "upload.offline_messages", "offline_messages", minus_one_without_site).await;
    assert!(matches!(got, Err(Failure::Item { mnemonic: "required_parameter_missed", index: Some(1), .. })), "{got:?}");
    let minus_one_with_site = batch_with(valid_offline, |i| {
        i.insert("campaign_id".into(), json!(-1));
        i.insert("site_id".into(), json!(77));
    });
    assert!(call(&client, &sandbox, "upload.offline_messages", "offline_messages", minus_one_with_site).await.is_ok());

    let too_many: Vec<Value> = (0..51).map(|i| valid_chat(&format!("many-{i}"))).collect();
    let got = call(&client, &sandbox, "upload.chats", "chats", too_many).await;
    assert!(matches!(got, Err(Failure::Item { mnemonic: "data_limit_exceeded", index: None, .. })), "{got:?}");
    let fifty: Vec<Value> = (0..50).map(|i| valid_chat(&format!("fifty-{i}"))).collect();
    let ok = call(&client, &sandbox, "upload.chats", "chats", fifty).await.unwrap();
    assert_eq!(ok["data"].as_array().unwrap().len(), 50, "one id per item, in order");

    let got = client.call(sandbox.url(), &Secret::new(TOKEN), "get.nothing", Map::new(), None).await;
    assert!(matches!(got, Err(Failure::Request { mnemonic: "method_not_found", .. })), "{got:?}");
}

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
    assert_eq!(transient(refused.map(|s| s.result)), "transport");
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
