//! Nothing leaves the console for an address an admin names: a form's `*_env` names only
//! variables of the allowed prefix, a CoMagic address is CoMagic's, UIS's or one the operator
//! listed, a stored token goes only where it was saved for, and a failed connection is described
//! without the network's words. Test chats, each a real chat in the tenant's account, are
//! rationed per integration.

use futures_util::FutureExt;
use reqwest::Method;
use serde_json::json;
use tokio::net::TcpListener;

use super::{valid_form, RunningConsole, COMAGIC_TOKEN};

/// A listener an admin might name as `comagic_api`: its address, and whether anything connected.
struct Trap {
    listener: TcpListener,
    url: String,
}

impl Trap {
    async fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v2.0", listener.local_addr().unwrap());
        Trap { listener, url }
    }

    /// Whether a connection is waiting (the console answers only after its calls, so one made
    /// for the request just answered is in the backlog by now).
    fn was_called(&self) -> bool {
        self.listener.accept().now_or_never().is_some()
    }
}

#[tokio::test]
async fn a_form_cannot_name_the_consoles_environment_or_an_address_of_its_choosing() {
    let trap = Trap::new().await;
    let console = RunningConsole::start().await;
    let api = console.sandbox.url().to_owned();
    for (field, value) in [
        ("comagic_token_env", json!("BRIDGE_ADMIN_TOKENS")),
        ("comagic_token_env", json!("PATH")),
        ("webhook_token_env", json!("BRIDGE__INTEGRATIONS_STORE")),
        ("verbox_secret_key_env", json!("BRIDGE_SECRET_")),
    ] {
        let mut form = valid_form(&trap.url);
        form.as_object_mut().unwrap().remove(field.trim_end_matches("_env"));
        form[field] = value.clone();
        let (status, body) = console.call(Method::POST, "/api/integrations", Some(json!({"integration": form}))).await;
        assert_eq!((status, body["field"].as_str()), (422, Some(field)), "{value}: {body}");
        assert!(body["message"].as_str().unwrap().contains("BRIDGE_SECRET_"), "{body}");
    }
    let mut form = valid_form(&api);
    form.as_object_mut().unwrap().remove("comagic_token");
    form["comagic_token_env"] = json!("BRIDGE_SECRET_NOT_SET_HERE");
    let (status, body) = console.call(Method::POST, "/api/integrations", Some(json!({"integration": form}))).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("is not set"), "a name of the prefix is looked up: {body}");

    for address in [trap.url.clone(), format!("{api}.evil"), "https://dataapi.comagic.ru.evil/v2.0".to_owned()] {
        let (status, body) =
            console.call(Method::POST, "/api/integrations", Some(json!({"integration": valid_form(&address)}))).await;
        assert_eq!((status, body["field"].as_str()), (422, Some("comagic_api")), "{address}: {body}");
        let (status, body) = console
            .call(Method::POST, "/api/account", Some(json!({"comagic_api": address, "comagic_token": "tok"})))
            .await;
        assert_eq!((status, body["field"].as_str()), (422, Some("comagic_api")), "{address}: {body}");
    }
    assert!(!trap.was_called(), "nothing was sent to the address the form named");
    console.stop().await;
}

#[tokio::test]
async fn a_stored_token_goes_only_to_the_address_it_was_saved_with() {
    let trap = Trap::new().await;
    let other = trap.url.clone();
    let console = RunningConsole::start_with(|s| s.console.comagic_endpoints.push(other)).await;
    let api = console.sandbox.url().to_owned();
    let (status, created) =
        console.call(Method::POST, "/api/integrations", Some(json!({"integration": valid_form(&api)}))).await;
    assert_eq!(status, 201, "{created}");

    // A look-up by id at another (even an allowed) address, without the token: refused.
    let (status, body) =
        console.call(Method::POST, "/api/account", Some(json!({"id": "acme", "comagic_api": trap.url}))).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("comagic_token")), "{body}");
    // A save that moves the integration and leaves the token out: refused, nothing saved.
    let mut moved = valid_form(&trap.url);
    moved.as_object_mut().unwrap().remove("comagic_token");
    let version = created["version"].clone();
    let path = "/api/integrations/acme";
    let (status, body) = console.call(Method::PUT, path, Some(json!({"version": version, "integration": moved}))).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("comagic_token")), "{body}");
    assert!(!trap.was_called(), "the stored token was not sent to the new address");
    let (_, stored) = console.call(Method::GET, path, None).await;
    assert_eq!(stored["integration"]["comagic_api"], json!(api), "nothing saved");
    // At its own address, the stored token still reads the account.
    let (status, lists) = console.call(Method::POST, "/api/account", Some(json!({"id": "acme"}))).await;
    assert_eq!(status, 200, "{lists}");
    console.stop().await;
}

#[tokio::test]
async fn an_address_that_does_not_answer_is_described_without_the_networks_words() {
    // A port that refuses: bound, then closed.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v2.0", listener.local_addr().unwrap())
    };
    let allowed = closed.clone();
    let console = RunningConsole::start_with(|s| s.console.comagic_endpoints.push(allowed)).await;
    let (status, body) = console
        .call(Method::POST, "/api/account", Some(json!({"comagic_api": closed, "comagic_token": COMAGIC_TOKEN})))
        .await;
    assert_eq!(status, 422, "{body}");
    let problem = body["problems"][0].as_str().unwrap().to_lowercase();
    assert!(problem.contains("did not answer"), "{problem}");
    for word in ["refused", "connection", "tcp", "os error", "dns", "error sending", "127.0.0.1"] {
        assert!(!problem.contains(word), "{word} in {problem}");
    }
    console.stop().await;
}

#[tokio::test]
async fn test_chats_beyond_the_burst_are_refused_with_when_to_ask_again_per_integration() {
    // Nothing listens at ingest's address: each test chat is refused fast, and still counts.
    let console = RunningConsole::start_with(|s| s.ingest.public_url = "http://127.0.0.1:1".into()).await;
    let api = console.sandbox.url().to_owned();
    for id in ["acme", "beta"] {
        let mut form = valid_form(&api);
        form["id"] = json!(id);
        let (status, _) = console.call(Method::POST, "/api/integrations", Some(json!({"integration": form}))).await;
        assert_eq!(status, 201);
    }
    let burst = deliver::console::TEST_CHAT_BURST;
    for n in 0..burst {
        let (status, body) = console.call(Method::POST, "/api/integrations/acme/test-chat", None).await;
        assert_eq!((status, &body["accepted"]), (200, &json!(false)), "test chat {n}: {body}");
    }
    let refused = console
        .http
        .post(format!("{}/api/integrations/acme/test-chat", console.url))
        .bearer_auth(super::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (status, _) = console.call(Method::POST, "/api/integrations/beta/test-chat", None).await;
    assert_eq!(status, 200, "another integration has its own allowance");
    console.stop().await;
}
