//! The admin API: auth, validation of every field, write-only secrets, versions, check on save.

use reqwest::Method;
use serde_json::{json, Value};

use super::{valid_form, RunningConsole, ADMIN_TOKEN, COMAGIC_TOKEN};

const WEBHOOK_TOKEN: &str = "whtok_0123456789abcdefghijklmn";

#[tokio::test]
async fn without_a_valid_admin_token_every_call_is_401_and_the_token_is_never_echoed() {
    let console = RunningConsole::start().await;
    let wrong = "admin-0123456789abcdefghijklmnoX";
    // Every route of the API, and one that does not exist: the token is asked for before routing.
    // Each from an address of its own (all of 127/8 is this machine's): more than ten refusals
    // from one address are answered 429 (the `roles` tests show it).
    for (place, (method, path)) in [
        (Method::GET, "/api/integrations"),
        (Method::POST, "/api/integrations"),
        (Method::GET, "/api/integrations/acme"),
        (Method::PUT, "/api/integrations/acme"),
        (Method::POST, "/api/integrations/acme/deactivate"),
        (Method::DELETE, "/api/integrations/acme"),
        (Method::GET, "/api/integrations/acme/history"),
        (Method::POST, "/api/integrations/acme/restore"),
        (Method::GET, "/api/integrations/acme/setup"),
        (Method::GET, "/api/integrations/acme/account"),
        (Method::GET, "/api/integrations/acme/state"),
        (Method::POST, "/api/integrations/acme/test-chat"),
        (Method::GET, "/api/test-chats/some-event"),
        (Method::GET, "/api/integrations/acme/dead-letters"),
        (Method::POST, "/api/integrations/acme/dead-letters/replay"),
        (Method::POST, "/api/integrations/acme/dead-letters/purge"),
        (Method::POST, "/api/account"),
        (Method::GET, "/api/no-such-route"),
    ]
    .into_iter()
    .enumerate()
    {
        let from = std::net::Ipv4Addr::new(127, 0, 1, place as u8 + 1);
        let http = reqwest::Client::builder().local_address(std::net::IpAddr::V4(from)).build().unwrap();
        for token in [None, Some(wrong), Some(&ADMIN_TOKEN[..20])] {
            let mut request = http.request(method.clone(), format!("{}{path}", console.url));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.json(&json!({"integration": valid_form("http://x")})).send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            assert_eq!(response.headers()["cache-control"], "no-store", "{method} {path}");
            let body = response.text().await.unwrap();
            assert!(!body.contains(&wrong[..20]) && body.contains("unauthorized"), "{body}");
        }
    }
    assert!(console.call(Method::GET, "/api/integrations", None).await.0 == 200, "the right token is let in");
    console.stop().await;
}

#[tokio::test]
async fn every_field_is_validated_by_name_and_a_refused_form_changes_nothing() {
    let console = RunningConsole::start().await;
    let api = console.sandbox.url().to_owned();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("id", json!("Acme Shop"), "id"),
        ("webhook_token", json!("short"), "webhook_token"),
        ("webhook_token", json!("has spaces in it and is long enough"), "webhook_token"),
        ("comagic_api", json!("ftp://dataapi"), "comagic_api"),
        ("comagic_token", json!(""), "comagic_token"),
        ("employee_id", json!(0), "employee_id"),
        ("employee_id", json!("101"), "employee_id"),
        ("timezone", json!("Moscow"), "timezone"),
        ("session_key", json!(" "), "session_key"),
        ("default", json!({"campaign_id": 5001, "site_id": 77}), "default"),
        ("default", json!({"campaign_id": -1}), "default.campaign_id"),
        ("default", json!({"site_id": 77, "source_id": 0}), "default.source_id"),
        ("messengers", json!({"telegramm": {"campaign_id": 5002}}), "messengers.telegramm"),
        ("messengers", json!({"telegram": {"campaign_id": 0}}), "messengers.telegram.campaign_id"),
        ("chat_events", json!([]), "chat_events"),
        ("offline_events", json!([" "]), "offline_events"),
        ("active", json!("yes"), "active"),
        ("offline_enabled", json!(1), "offline_enabled"),
        ("comagic_token_env", json!("NO_SUCH_VARIABLE_FOR_THE_CONSOLE"), "comagic_token"),
        ("colour", json!("blue"), "colour"),
    ];
    for (field, value, named) in cases {
        let mut form = valid_form(&api);
        form[field] = value.clone();
        let (status, body) = console.call(Method::POST, "/api/integrations", Some(json!({"integration": form}))).await;
        assert_eq!(status, 422, "{field} = {value}: {body}");
        assert_eq!(body["error"], "invalid", "{body}");
        let reported = format!("{} {}", body["field"], body["message"]);
        assert!(reported.contains(named), "{field} = {value}: {body}");
        assert!(!body.to_string().contains(COMAGIC_TOKEN) && !body.to_string().contains(WEBHOOK_TOKEN), "{body}");
    }
    let (_, listed) = console.call(Method::GET, "/api/integrations", None).await;
    assert_eq!(listed["integrations"], json!([]), "nothing was created");
    let body = console.http.post(format!("{}/api/integrations", console.url)).bearer_auth(ADMIN_TOKEN);
    let response = body.header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(response.status(), 422, "a body that is not JSON is refused with a reason");
    console.stop().await;
}

#[tokio::test]
async fn secrets_are_write_only_and_an_update_without_them_keeps_them() {
    let console = RunningConsole::start().await;
    let api = console.sandbox.url().to_owned();
    let (status, created) =
        console.call(Method::POST, "/api/integrations", Some(json!({"integration": valid_form(&api)}))).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["integration"]["webhook_token"], "…klmn");
    assert_eq!(created["integration"]["comagic_token"], "…6789");
    assert_eq!(created["webhook_urls"]["chat"], "https://hooks.example/v1/verbox/acme/chat/…klmn");
    let full = format!("https://hooks.example/v1/verbox/acme/chat/{WEBHOOK_TOKEN}");
    assert_eq!(created["new_webhook_urls"]["chat"], full.as_str(), "shown once, to paste into Verbox");
    assert!(!created.to_string().contains(COMAGIC_TOKEN));

    let mut form = valid_form(&api);
    form.as_object_mut().unwrap().retain(|k, _| !k.ends_with("token"));
    form["default"] = json!({"campaign_id": 5002});
    let version = created["version"].clone();
    let (status, updated) = console
        .call(Method::PUT, "/api/integrations/acme", Some(json!({"version": version, "integration": form})))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert!(updated.get("new_webhook_urls").is_none(), "the token did not change: no URL in full");
    for path in ["/api/integrations", "/api/integrations/acme", "/api/integrations/acme/setup"] {
        let (status, body) = console.call(Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        let text = body.to_string();
        assert!(!text.contains(WEBHOOK_TOKEN) && !text.contains(COMAGIC_TOKEN), "{path}: {text}");
    }
    let file = std::fs::read_to_string(console.dir.path().join("integrations.toml")).unwrap();
    assert!(file.contains(WEBHOOK_TOKEN) && file.contains(COMAGIC_TOKEN), "kept in the store: {file}");
    assert!(file.contains("campaign_id = 5002"), "{file}");

    // Created without a token: one is generated and shown in this answer only.
    let mut form = valid_form(&api);
    form["id"] = json!("acme-2");
    form.as_object_mut().unwrap().remove("webhook_token");
    let (status, created) = console.call(Method::POST, "/api/integrations", Some(json!({"integration": form}))).await;
    assert_eq!(status, 201, "{created}");
    let url = created["new_webhook_urls"]["chat"].as_str().unwrap().to_owned();
    let token = url.rsplit('/').next().unwrap();
    assert_eq!(token.len(), 48, "{url}");
    let (_, again) = console.call(Method::GET, "/api/integrations/acme-2", None).await;
    assert!(!again.to_string().contains(token));
    console.stop().await;
}

/// The page sends only what it edits: a key an update leaves out keeps its stored value, `null`
/// clears it.
#[tokio::test]
async fn an_update_keeps_what_it_leaves_out_and_null_clears_it() {
    let console = RunningConsole::start().await;
    let mut form = valid_form(console.sandbox.url());
    form["chat_events"] = json!(["dialogFinished"]);
    let (status, saved) = console.call(Method::POST, "/api/integrations", Some(json!({"integration": form}))).await;
    assert_eq!(status, 201, "{saved}");
    let edited = json!({"id": "acme", "session_key": "visit_id"});
    let (status, saved) = console
        .call(Method::PUT, "/api/integrations/acme", Some(json!({"version": saved["version"], "integration": edited})))
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["integration"]["session_key"], "visit_id");
    assert_eq!(saved["integration"]["chat_events"], json!(["dialogFinished"]), "left out: kept");
    assert_eq!(saved["integration"]["default"], form["default"]);
    let cleared = json!({"id": "acme", "chat_events": null});
    let (status, saved) = console
        .call(Method::PUT, "/api/integrations/acme", Some(json!({"version": saved["version"], "integration": cleared})))
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["integration"]["chat_events"], Value::Null, "null: cleared");
    assert_eq!(saved["integration"]["session_key"], "visit_id");
    console.stop().await;
}

#[tokio::test]
async fn a_save_based_on_a_stale_read_is_refused_with_409_and_loses_nothing() {
    let console = RunningConsole::start().await;
    let api = console.sandbox.url().to_owned();
    let (_, created) =
        console.call(Method::POST, "/api/integrations", Some(json!({"integration": valid_form(&api)}))).await;
    let read = created["version"].clone();
    let mut first = valid_form(&api);
    first["default"] = json!({"campaign_id": 5002});
    let (status, saved) =
        console.call(Method::PUT, "/api/integrations/acme", Some(json!({"version": read, "integration": first}))).await;
    assert_eq!(status, 200, "{saved}");
    let mut second = valid_form(&api);
    second["employee_id"] = json!(101);
    second["offline_enabled"] = json!(false);
    let (status, refused) = console
        .call(Method::PUT, "/api/integrations/acme", Some(json!({"version": read, "integration": second})))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"], "stale");
    assert_eq!(refused["current_version"], saved["version"]);
    let (_, now) = console.call(Method::GET, "/api/integrations/acme", None).await;
    assert_eq!(now["integration"]["default"], json!({"campaign_id": 5002}), "the first save stands");
    assert_eq!(now["integration"]["offline_enabled"], true, "the stale one changed nothing");
    let (status, _) =
        console.call(Method::POST, "/api/integrations", Some(json!({"integration": valid_form(&api)}))).await;
    assert_eq!(status, 409, "an id is created once");
    let (status, _) =
        console.call(Method::POST, "/api/integrations/acme/deactivate", Some(json!({"version": read}))).await;
    assert_eq!(status, 409, "deactivating needs the current version too");
    let (status, off) =
        console.call(Method::POST, "/api/integrations/acme/deactivate", Some(json!({"version": now["version"]}))).await;
    assert_eq!((status, &off["active"]), (200, &json!(false)), "{off}");
    console.stop().await;
}

#[tokio::test]
async fn a_save_check_would_flag_is_refused_with_the_fix_unless_forced_and_pick_lists_are_live() {
    let console = RunningConsole::start().await;
    let api = console.sandbox.url().to_owned();
    let (status, lists) = console
        .call(Method::POST, "/api/account", Some(json!({"comagic_api": api, "comagic_token": COMAGIC_TOKEN})))
        .await;
    assert_eq!(status, 200, "{lists}");
    assert_eq!(lists["employees"], json!([{"id": 101, "name": "Olga Operator"}]));
    assert_eq!(lists["campaigns"].as_array().unwrap().len(), 2);
    assert_eq!(lists["sites"][0], json!({"id": 77, "name": "shop.example"}));
    let (status, refused) = console
        .call(Method::POST, "/api/account", Some(json!({"comagic_api": api, "comagic_token": "wrong-token"})))
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused["problems"][0].as_str().unwrap().contains("comagic_token"), "{refused}");

    let mut form = valid_form(&api);
    form["default"] = json!({"campaign_id": 9999});
    let (status, refused) = console.call(Method::POST, "/api/integrations", Some(json!({"integration": form}))).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"], "check_failed");
    let problem = refused["problems"][0].as_str().unwrap();
    assert!(problem.contains("9999") && problem.contains("5001 (Site chats)"), "the fix names real choices: {problem}");
    let (status, _) =
        console.call(Method::POST, "/api/integrations", Some(json!({"integration": form, "force": true}))).await;
    assert_eq!(status, 201, "forced");
    let (status, lists) = console.call(Method::GET, "/api/integrations/acme/account", None).await;
    assert_eq!((status, lists["sources"].as_array().map(Vec::len)), (200, Some(2)), "{lists}");
    console.stop().await;
}

#[tokio::test]
async fn the_page_loads_only_its_own_assets_is_never_framed_and_answers_are_not_cached() {
    let console = RunningConsole::start().await;
    for path in ["/", "/main.js", "/console.css", "/api/integrations"] {
        let response =
            console.http.get(format!("{}{path}", console.url)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers.get("cache-control").is_some_and(|v| v == "no-store"), path.starts_with("/api"), "{path}");
    }
    console.stop().await;
}
