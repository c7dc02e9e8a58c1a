//! The run-local scenario of #24: only the console has a `BRIDGE_SECRET_…` variable. A save naming
//! it must not freeze every later change in the services: another integration deactivated in the
//! console is refused by ingest within moments, the one naming the variable stays at its last good
//! version and is reported, and the console shows that save as not applied, and why.

use std::time::Duration;

use bridge_tests::config::webhook_url;
use bridge_tests::fixtures::{chat, WEBHOOK_TOKEN};
use bridge_tests::wait_for;
use reqwest::Method;
use serde_json::{json, Value};

use super::ConsoleClient;
use crate::helpers::{comagic_token, Options, Pipeline, Tenant};

const VARIABLE: &str = "BRIDGE_SECRET_SHOP_COMAGIC_TOKEN";

/// The sample line of `name` on `page` whose labels include every one of `labels`.
fn has_series(page: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .any(|l| l.ends_with(" 1") && labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
}

async fn page(p: &Pipeline, address: &str) -> String {
    p.http.get(format!("{address}/metrics")).send().await.unwrap().text().await.unwrap()
}

async fn status_of_webhook(p: &Pipeline, integration: &str) -> u16 {
    let url = webhook_url(p.ingest_address(), integration, "chat", WEBHOOK_TOKEN);
    static DIALOG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(2400);
    let dialog = DIALOG.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = chat(dialog, json!({})).to_string();
    p.http.post(url).body(body).send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variable_only_the_console_has_freezes_nothing_and_shows_as_not_applied() {
    let tenants = [Tenant { id: "shop", extra: "" }, Tenant { id: "other", extra: "" }];
    let p = Pipeline::start("console-applied", &tenants, Options::default()).await;
    let env = vec![(VARIABLE.to_owned(), comagic_token("shop"))];
    let console = ConsoleClient::beside_with_env(&p, env).await;
    let (_, shop) = console.call(Method::GET, "/api/integrations/shop", None).await;
    let good = shop["version"].as_str().unwrap().to_owned();
    wait_for("the console to see every process run `shop`", Duration::from_secs(10), || async {
        let (_, view) = console.call(Method::GET, "/api/integrations/shop", None).await;
        (view["applied"]["applied"] == true && view["applied"]["processes"] == 2).then_some(())
    })
    .await;

    // Saved, forced, naming the variable the services lack.
    let mut form = shop["integration"].clone();
    for secret in ["webhook_token", "verbox_secret_key", "comagic_token"] {
        form[secret] = Value::Null;
    }
    form["comagic_token_env"] = json!(VARIABLE);
    let save = json!({"version": good, "force": true, "integration": form});
    let (status, saved) = console.call(Method::PUT, "/api/integrations/shop", Some(save)).await;
    assert_eq!(status, 200, "{saved}");
    let refused = saved["version"].as_str().unwrap().to_owned();

    // Then another integration is deactivated: ingest refuses its webhooks within moments.
    assert_eq!(status_of_webhook(&p, "other").await, 200);
    let (_, other) = console.call(Method::GET, "/api/integrations/other", None).await;
    let (status, off) = console
        .call(Method::POST, "/api/integrations/other/deactivate", Some(json!({"version": other["version"]})))
        .await;
    assert_eq!(status, 200, "{off}");
    wait_for("ingest to refuse the deactivated integration", Duration::from_secs(10), || async {
        (status_of_webhook(&p, "other").await == 404).then_some(())
    })
    .await;

    // The bad save is reported by both services; both stay on `shop`'s last good version.
    for address in [p.ingest_metrics_address(), p.deliver_address()] {
        let metrics = wait_for("the refusal on the metrics page", Duration::from_secs(10), || async {
            let metrics = page(&p, address).await;
            has_series(&metrics, "bridge_integration_invalid", &[("integration", "shop"), ("version", &refused)])
                .then_some(metrics)
        })
        .await;
        let reason = format!("comagic_token_env: environment variable {VARIABLE} is not set");
        assert!(has_series(&metrics, "bridge_integration_invalid", &[("reason", &reason)]), "{metrics}");
        assert!(has_series(&metrics, "bridge_integration_version", &[("integration", "shop"), ("version", &good)]));
        assert!(!metrics.contains(&comagic_token("shop")), "no secret on the page");
    }
    assert_eq!(status_of_webhook(&p, "shop").await, 200, "`shop` is served at its last good version");

    // The console shows the save not applied, with the reason; the deactivation applied.
    let view = wait_for("the console to show `shop` behind", Duration::from_secs(10), || async {
        let (_, view) = console.call(Method::GET, "/api/integrations/shop", None).await;
        (view["applied"]["behind"].as_array().is_some_and(|b| b.len() == 2 && b.iter().all(|b| !b["reason"].is_null())))
            .then_some(view)
    })
    .await;
    let applied = &view["applied"];
    assert_eq!((applied["applied"].clone(), applied["have_it"].clone()), (json!(false), json!(0)), "{applied}");
    for behind in applied["behind"].as_array().unwrap() {
        assert_eq!(behind["version"], json!(good), "{behind}");
        assert!(behind["reason"].as_str().unwrap().contains(&format!("{VARIABLE} is not set")), "{behind}");
    }
    let (_, state) = console.call(Method::GET, "/api/integrations/shop/state", None).await;
    assert_eq!(state["applied"]["applied"], false, "the page's poll says so too");
    wait_for("the console to show the deactivation applied", Duration::from_secs(10), || async {
        let (_, view) = console.call(Method::GET, "/api/integrations/other", None).await;
        (view["applied"]["applied"] == true).then_some(())
    })
    .await;
    console.stop().await;
}
