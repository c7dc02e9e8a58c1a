//! Roles and issued tokens over HTTP: a tenant's token reaches its own integration and nothing
//! else (every route of `API_ROUTES` is tried, so a route added later is covered), a read-only
//! token only looks, an expired or revoked token is refused at once (on every replica with
//! PostgreSQL), the store holds no token, and failed sign-ins are limited per address.

use std::time::Duration;

use bridge_tests::wait_for;
use deliver::console::{Access, API_ROUTES, TOKENS_FILE};
use reqwest::Method;
use serde_json::{json, Value};

use super::{valid_form, ConsoleClient, RunningConsole};

fn in_a_day() -> String {
    (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339()
}

/// Issues a token as the admin; the token and the answer.
async fn issue(console: &ConsoleClient, request: Value) -> (String, Value) {
    let (status, body) = console.call(Method::POST, "/api/tokens", Some(request)).await;
    assert_eq!(status, 201, "{body}");
    (body["token"].as_str().unwrap().to_owned(), body)
}

async fn tenant_of(console: &ConsoleClient, id: &str) -> String {
    issue(console, json!({"role": "tenant", "integration": id, "expires_at": in_a_day()})).await.0
}

/// `acme` (checked against the sandbox) and `other` (inactive, so not checked).
async fn two_integrations(console: &RunningConsole) {
    let api = console.sandbox.url().to_owned();
    let (status, body) =
        console.call(Method::POST, "/api/integrations", Some(json!({"integration": valid_form(&api)}))).await;
    assert_eq!(status, 201, "{body}");
    let mut other = valid_form(&api);
    other["id"] = json!("other");
    other["active"] = json!(false);
    other["webhook_token"] = json!("whtok_other_0123456789abcdefgh");
    let (status, body) = console.call(Method::POST, "/api/integrations", Some(json!({"integration": other}))).await;
    assert_eq!(status, 201, "{body}");
}

/// Test chats are posted to an ingest that is not there: the console still remembers them.
pub(super) async fn start() -> RunningConsole {
    let console = RunningConsole::start_with(|s| s.ingest.public_url = "http://127.0.0.1:9".into()).await;
    two_integrations(&console).await;
    console
}

fn path_for(path: &str, id: &str) -> String {
    path.replace("{id}", id).replace("{event_id}", "no-such-event")
}

#[tokio::test]
async fn a_tenant_reaches_its_own_integration_and_nothing_else() {
    let console = start().await;
    let tenant = tenant_of(&console, "acme").await;
    let save = json!({"integration": valid_form("http://x"), "version": "x"});
    for route in API_ROUTES {
        let body = if route.path == "/account" { json!({"id": "other"}) } else { save.clone() };
        let method = Method::from_bytes(route.method.to_uppercase().as_bytes()).unwrap();
        let path = format!("/api{}", path_for(route.path, "other"));
        let (status, answer) = console.call_as(&tenant, method.clone(), &path, Some(body)).await;
        let expected = match (route.access, route.path) {
            (Access::Operator, _) => 403,
            (Access::Integration, _) => 404,
            (Access::Anyone, "/whoami") | (Access::Narrowed, "/integrations") => 200,
            (Access::Narrowed, "/account" | "/test-chats/{event_id}") => 404,
            // No deliver runs beside this console: its journeys cannot be read (503, and nothing
            // said of any integration); with one, an event not the tenant's is 404 (console::journey).
            (Access::Narrowed, "/events/{event_id}" | "/events/{event_id}/send-again") => 503,
            (access, path) => panic!("{access:?} {path}: say here what a tenant gets from it"),
        };
        assert_eq!(status, expected, "{method} {path}: {answer}");
        assert!(!answer.to_string().contains("\"other\"") || route.path == "/account", "{path}: {answer}");
    }
    let (_, list) = console.call_as(&tenant, Method::GET, "/api/integrations", None).await;
    let ids: Vec<&str> = list["integrations"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["acme"]);
    let (_, who) = console.call_as(&tenant, Method::GET, "/api/whoami", None).await;
    assert_eq!((who["role"].as_str(), who["integration"].as_str()), (Some("tenant"), Some("acme")), "{who}");
    assert!(who["expires_at"].is_string(), "{who}");

    // Its own: read without the operator's fields, saved without them, purge refused.
    let (status, own) = console.call_as(&tenant, Method::GET, "/api/integrations/acme", None).await;
    assert_eq!(status, 200);
    let form = own["integration"].as_object().unwrap();
    assert!(form.keys().all(|k| k != "comagic_api" && !k.ends_with("_env")), "{own}");
    let mut change = own["integration"].clone();
    change["comagic_api"] = json!("http://127.0.0.1:1");
    let save = |integration: Value| json!({"version": own["version"], "integration": integration});
    let (status, refused) =
        console.call_as(&tenant, Method::PUT, "/api/integrations/acme", Some(save(change.clone()))).await;
    assert_eq!((status, refused["field"].as_str()), (403, Some("comagic_api")), "{refused}");
    change.as_object_mut().unwrap().remove("comagic_api");
    change["webhook_token"] = json!("whtok_tenant_0123456789abcdef");
    change["comagic_token_env"] = json!("BRIDGE_SECRET_X");
    let (status, refused) =
        console.call_as(&tenant, Method::PUT, "/api/integrations/acme", Some(save(change.clone()))).await;
    assert_eq!((status, refused["field"].as_str()), (403, Some("comagic_token_env")), "{refused}");
    change.as_object_mut().unwrap().remove("comagic_token_env");
    change.as_object_mut().unwrap().remove("comagic_token");
    let (status, saved) = console.call_as(&tenant, Method::PUT, "/api/integrations/acme", Some(save(change))).await;
    assert_eq!(status, 200, "{saved}");
    let (_, seen) = console.call(Method::GET, "/api/integrations/acme", None).await;
    assert_eq!(seen["integration"]["comagic_api"].as_str(), Some(console.sandbox.url()), "the stored address is kept");
    assert_eq!(seen["integration"]["webhook_token"].as_str(), Some("…cdef"), "the tenant's change is saved");
    let purge = Some(json!({"confirm": "acme"}));
    assert_eq!(console.call_as(&tenant, Method::POST, "/api/integrations/acme/dead-letters/purge", purge).await.0, 403);
    let account = json!({"id": "acme", "comagic_api": "http://127.0.0.1:1"});
    assert_eq!(console.call_as(&tenant, Method::POST, "/api/account", Some(account)).await.0, 403);

    // A test chat of another integration is not found; its own is followed.
    let (_, sent) = console.call(Method::POST, "/api/integrations/other/test-chat", None).await;
    let theirs = format!("/api/test-chats/{}", sent["event_id"].as_str().unwrap());
    assert_eq!(console.call_as(&tenant, Method::GET, &theirs, None).await.0, 404);
    assert_eq!(console.call(Method::GET, &theirs, None).await.0, 200);
    let (_, sent) = console.call_as(&tenant, Method::POST, "/api/integrations/acme/test-chat", None).await;
    let own_chat = format!("/api/test-chats/{}", sent["event_id"].as_str().unwrap());
    assert_eq!(console.call_as(&tenant, Method::GET, &own_chat, None).await.0, 200);
    console.stop().await;
}

#[tokio::test]
async fn read_only_tokens_only_look() {
    let console = start().await;
    let (reader, _) = issue(&console, json!({"role": "operator", "read_only": true, "expires_at": in_a_day()})).await;
    let (tenant_reader, _) =
        issue(&console, json!({"role": "tenant", "integration": "acme", "read_only": true, "expires_at": in_a_day()}))
            .await;
    for route in API_ROUTES.iter().filter(|r| r.method != "get") {
        let method = Method::from_bytes(route.method.to_uppercase().as_bytes()).unwrap();
        let path = format!("/api{}", path_for(route.path, "acme"));
        for token in [&reader, &tenant_reader] {
            let (status, answer) = console.call_as(token, method.clone(), &path, Some(json!({}))).await;
            assert_eq!(status, 403, "{method} {path}: {answer}");
        }
    }
    let (status, list) = console.call_as(&reader, Method::GET, "/api/integrations", None).await;
    assert_eq!((status, list["integrations"].as_array().map(Vec::len)), (200, Some(2)));
    assert_eq!(console.call_as(&reader, Method::GET, "/api/tokens", None).await.0, 200);
    assert_eq!(console.call_as(&tenant_reader, Method::GET, "/api/integrations/acme", None).await.0, 200);
    // Issuing: a full operator token is not issued, nor a lifetime beyond the maximum.
    let full = json!({"role": "operator", "expires_at": in_a_day()});
    assert_eq!(console.call(Method::POST, "/api/tokens", Some(full)).await.1["field"], "read_only");
    let long = (chrono::Utc::now() + chrono::Duration::days(91)).to_rfc3339();
    let too_long = json!({"role": "tenant", "integration": "acme", "expires_at": long});
    assert_eq!(console.call(Method::POST, "/api/tokens", Some(too_long)).await.1["field"], "expires_at");
    let nowhere = json!({"role": "tenant", "integration": "nowhere", "expires_at": in_a_day()});
    assert_eq!(console.call(Method::POST, "/api/tokens", Some(nowhere)).await.1["field"], "integration");
    console.stop().await;
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_refused_at_once_and_the_file_holds_no_token() {
    let console = start().await;
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (short, _) = issue(&console, json!({"role": "tenant", "integration": "acme", "expires_at": soon})).await;
    assert_eq!(console.call_as(&short, Method::GET, "/api/whoami", None).await.0, 200);
    wait_for("the token to expire", Duration::from_secs(10), || async {
        (console.call_as(&short, Method::GET, "/api/whoami", None).await.0 == 401).then_some(())
    })
    .await;
    let (revoked, issued) = issue(
        &console,
        json!({"role": "tenant", "integration": "acme", "expires_at": in_a_day(), "name": "Acme's admin"}),
    )
    .await;
    assert_eq!(
        console.call_as(&revoked, Method::GET, "/api/whoami", None).await.1["name"]
            .as_str()
            .map(|n| n.starts_with("Acme's admin")),
        Some(true)
    );
    let id = issued["issued"]["id"].as_str().unwrap();
    let (status, _) = console.call(Method::POST, &format!("/api/tokens/{id}/revoke"), None).await;
    assert_eq!(status, 200);
    assert_eq!(console.call_as(&revoked, Method::GET, "/api/whoami", None).await.0, 401);

    let (_, list) = console.call(Method::GET, "/api/tokens", None).await;
    let statuses: Vec<&str> =
        list["tokens"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["revoked", "expired"], "{list}");
    let shown = list.to_string();
    assert!(!shown.contains(&short) && !shown.contains(&revoked) && !shown.contains("hash"), "{shown}");
    let file = console.dir.path().join(TOKENS_FILE);
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(!stored.contains(&short[4..]) && !stored.contains(&revoked[4..]), "{stored}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    console.stop().await;
}

#[tokio::test]
async fn refused_tokens_beyond_ten_from_one_address_are_answered_429_and_a_right_token_still_passes() {
    let console = RunningConsole::start().await;
    for _ in 0..10 {
        assert_eq!(console.call_as("vbc_guess", Method::GET, "/api/whoami", None).await.0, 401);
    }
    let guess = console.http.get(format!("{}/api/whoami", console.url)).bearer_auth("vbc_guess").send().await.unwrap();
    assert_eq!(guess.status(), 429, "the eleventh guess");
    assert!(guess.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    // Whoever holds a right token behind the same address is not locked out by the guesser.
    assert_eq!(console.call(Method::GET, "/api/whoami", None).await.0, 200);
    console.stop().await;
}

#[tokio::test]
async fn with_postgresql_a_revocation_holds_on_every_replica_at_once() {
    let scope = format!("t.roles.{}", chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
    let shared = |s: &mut bridge_shared::settings::Settings| {
        s.integrations_store = bridge_tests::postgres_url();
        s.amqp.topology_prefix = scope.clone();
    };
    let one = RunningConsole::start_with(shared).await;
    let other = RunningConsole::start_with(shared).await;
    two_integrations(&one).await;
    let (token, issued) = issue(&one, json!({"role": "tenant", "integration": "acme", "expires_at": in_a_day()})).await;
    assert_eq!(other.call_as(&token, Method::GET, "/api/integrations/acme", None).await.0, 200);
    let id = issued["issued"]["id"].as_str().unwrap();
    assert_eq!(other.call(Method::POST, &format!("/api/tokens/{id}/revoke"), None).await.0, 200);
    assert_eq!(one.call_as(&token, Method::GET, "/api/integrations/acme", None).await.0, 401);
    a_delete_revokes_the_tenants_and_a_re_created_id_is_not_theirs(&one).await;
    one.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn a_tenant_reads_its_history_but_cannot_restore_an_operators_field() {
    let console = start().await;
    let tenant = tenant_of(&console, "acme").await;
    let (_, first) = console.call(Method::GET, "/api/integrations/acme", None).await;
    // The operator moves acme to UIS (inactive, so no check call leaves the machine).
    let mut moved = valid_form(bridge_shared::comagic::UIS_URL);
    moved["active"] = json!(false);
    let (status, saved) = console
        .call(Method::PUT, "/api/integrations/acme", Some(json!({"version": first["version"], "integration": moved})))
        .await;
    assert_eq!(status, 200, "{saved}");
    let (status, history) = console.call_as(&tenant, Method::GET, "/api/integrations/acme/history", None).await;
    assert_eq!(status, 200, "{history}");
    assert!(history["entries"].as_array().is_some_and(|e| e.len() >= 2), "{history}");
    let restore = json!({"version": saved["version"], "restore": first["version"]});
    let (status, refused) =
        console.call_as(&tenant, Method::POST, "/api/integrations/acme/restore", Some(restore)).await;
    assert_eq!(status, 403, "the earlier version has another comagic_api: {refused}");
    assert!(refused["message"].as_str().unwrap_or_default().contains("comagic_api"), "{refused}");
    let (_, now) = console.call(Method::GET, "/api/integrations/acme", None).await;
    assert_eq!(now["version"], saved["version"], "nothing restored");
    console.stop().await;
}

/// `other` deleted and created again (restored from its history): the tokens of its former tenant
/// open nothing, while another integration's tenant keeps its access.
async fn a_delete_revokes_the_tenants_and_a_re_created_id_is_not_theirs(console: &ConsoleClient) {
    let former = tenant_of(console, "other").await;
    let bystander = tenant_of(console, "acme").await;
    let (_, current) = console.call(Method::GET, "/api/integrations/other", None).await;
    let stale = json!({"version": "not-the-version"});
    assert_eq!(console.call(Method::DELETE, "/api/integrations/other", Some(stale)).await.0, 409);
    assert_eq!(
        console.call_as(&former, Method::GET, "/api/integrations/other", None).await.0,
        200,
        "a stale delete revokes nothing"
    );
    let (status, deleted) =
        console.call(Method::DELETE, "/api/integrations/other", Some(json!({"version": current["version"]}))).await;
    assert_eq!((status, deleted["tenant_tokens_revoked"].as_u64()), (200, Some(1)), "{deleted}");
    let restore = json!({"restore": current["version"]});
    let (status, body) = console.call(Method::POST, "/api/integrations/other/restore", Some(restore)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(console.call_as(&former, Method::GET, "/api/integrations/other", None).await.0, 401);
    assert_eq!(console.call_as(&bystander, Method::GET, "/api/integrations/acme", None).await.0, 200);
    // Its new tenant reads the history from the re-creation on; the operator all of it.
    let successor = tenant_of(console, "other").await;
    let (status, theirs) = console.call_as(&successor, Method::GET, "/api/integrations/other/history", None).await;
    assert_eq!(status, 200, "{theirs}");
    let actions = |h: &Value| h["entries"].as_array().unwrap().iter().map(|e| e["action"].clone()).collect::<Vec<_>>();
    assert_eq!(actions(&theirs), [json!("restored")], "{theirs}");
    let (_, all) = console.call(Method::GET, "/api/integrations/other/history", None).await;
    assert_eq!(actions(&all)[..3], [json!("restored"), json!("deleted"), json!("created")], "{all}");
}

#[tokio::test]
async fn deleting_an_integration_revokes_its_tenants_tokens() {
    let console = start().await;
    a_delete_revokes_the_tenants_and_a_re_created_id_is_not_theirs(&console).await;
    console.stop().await;
}

/// The operator rotates acme's webhook token (and the tenant its session key); the tenant restores
/// the first version: its settings come back, the leaked token does not.
#[tokio::test]
async fn a_tenants_restore_brings_back_settings_but_not_a_rotated_secret() {
    let console = start().await;
    let tenant = tenant_of(&console, "acme").await;
    let (_, first) = console.call(Method::GET, "/api/integrations/acme", None).await;
    let mut rotated = valid_form(console.sandbox.url());
    rotated["webhook_token"] = json!("whtok_rotated_0123456789abcdefgh");
    rotated["session_key"] = json!("another_session_key");
    let update = json!({"version": first["version"], "integration": rotated});
    let (status, saved) = console.call(Method::PUT, "/api/integrations/acme", Some(update)).await;
    assert_eq!(status, 200, "{saved}");
    let restore = json!({"version": saved["version"], "restore": first["version"]});
    let (status, restored) =
        console.call_as(&tenant, Method::POST, "/api/integrations/acme/restore", Some(restore)).await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["integration"]["session_key"], first["integration"]["session_key"]);
    let (_, history) = console.call(Method::GET, "/api/integrations/acme/history", None).await;
    let newest = &history["entries"][0];
    assert_eq!(newest["action"], "restored", "{history}");
    assert_eq!(newest["changed"], json!(["session_key"]), "the token stays rotated: {newest}");
    console.stop().await;
}
