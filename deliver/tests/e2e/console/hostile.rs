//! Hostile strings reach the page as text, never as markup: names from the CoMagic account
//! (HTML, a script, 10 KB of it) in the pick-lists, CoMagic's error message in the dead letters,
//! and an operator's token name in the Access list. A page that parsed any of them as HTML would
//! run the script, which sets the document's title, or hold the element. (A form's free text,
//! `session_key`, is bounded to a plain name where it enters: integrations' tests.)

use std::time::Duration;

use bridge_tests::sandbox::{Fault, FaultKind};
use fantoccini::Locator;
use serde_json::json;

use super::browser::Browser;
use super::{ConsoleClient, ADMIN_TOKEN};
use crate::helpers::{Options, Pipeline, Tenant};

const TITLE: &str = "verbox-bridge · integrations";

fn script(tag: &str) -> String {
    format!("<img src=x onerror=\"document.title='pwned {tag}'\"><script>document.title='pwned {tag}'</script>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_errors_from_comagic_render_as_text() {
    let tenants = [Tenant { id: "acme", extra: "" }];
    let p = Pipeline::start("console-hostile", &tenants, Options::default()).await;
    let long = format!("{}{}", script("employee"), "E".repeat(10_000));
    p.sandbox.update_account("acme", |a| {
        a.employees[0].full_name = long.clone();
        a.campaigns[0].name = script("campaign");
        a.sources[0].name = script("source");
        a.sites[0].domain_name = script("site");
    });
    let console = ConsoleClient::beside(&p).await;
    let b = Browser::start().await;
    b.client.goto(&console.url).await.unwrap();
    b.fill("#admin-token", ADMIN_TOKEN).await;
    b.click("#sign-in-form button[type=submit]").await;
    b.text_with("#integrations", "acme", Duration::from_secs(10)).await;
    b.click("#integrations a").await;
    // The pick-lists hold the names as they are.
    let employees = b.text_with("#f-employee", "<img src=x", Duration::from_secs(10)).await;
    assert!(employees.contains(&"E".repeat(10_000)), "the whole 10 KB name is there");
    b.text_with("#t-default-campaign", "<script>document.title='pwned campaign'</script>", Duration::from_secs(1))
        .await;
    // Hidden until a messenger is mapped to a site: read as the document holds them.
    let hidden = b
        .client
        .execute("return ['t-whatsapp-site', 't-whatsapp-source'].map(id => document.getElementById(id).textContent).join(' ')", vec![])
        .await
        .unwrap();
    let hidden = hidden.as_str().unwrap_or_default();
    assert!(hidden.contains(&script("site")) && hidden.contains(&script("source")), "{hidden}");

    // CoMagic's own words in its refusal of the chat: the dead letter shows them as text.
    p.sandbox.add_fault(Fault {
        kind: FaultKind::Error,
        mnemonic: Some("invalid_parameter_value".into()),
        field: Some("chats.0.employee_id".into()),
        message: Some(script("error")),
        ..Fault::default()
    });
    b.click("#send-test").await;
    b.text_with("#test-result", "dead lettered", Duration::from_secs(30)).await;
    p.sandbox.clear_faults();
    b.click("#dead-refresh").await;
    b.text_with("#dead-letters", "pwned error", Duration::from_secs(10)).await;
    b.shot_at("hostile-strings", "#dead-section").await;

    // An operator's own text: a token's name, shown in the Access list (and in the history).
    let named = script("token");
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let request = json!({"role": "tenant", "integration": "acme", "expires_at": expires, "name": named});
    let (status, issued) = console.call(reqwest::Method::POST, "/api/tokens", Some(request)).await;
    assert_eq!(status, 201, "{issued}");
    b.click("#back").await;
    b.click("#open-access").await;
    b.text_with("#tokens", &named, Duration::from_secs(10)).await;

    let title = b.client.title().await.unwrap();
    assert_eq!(title, TITLE, "no string ran as a script");
    let images = b.client.find_all(Locator::Css("img, script:not([src])")).await.unwrap();
    assert!(images.is_empty(), "no string became an element: {} found", images.len());
    b.close().await;
    console.stop().await;
    p.stop().await;
}
