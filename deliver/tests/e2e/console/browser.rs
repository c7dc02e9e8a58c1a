//! The console in headless Chromium (Debian's `chromium` and `chromium-driver`, driven over
//! WebDriver) against the running pipeline and the sandbox: create an integration from the
//! account's pick-lists, send test chats, change the default campaign, break and repair the
//! account, replay a dead letter. Each page is saved as a screenshot in
//! `target/console-screenshots/` (the README shows the main ones, copied to `docs/screenshots/`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bridge_tests::sandbox::Upload;
use bridge_tests::wait_for;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::{ConsoleClient, ADMIN_TOKEN};
use crate::helpers::{comagic_token, Options, Pipeline, Tenant};

/// Headless Chromium over WebDriver, saving screenshots.
pub struct Browser {
    pub client: Client,
    driver: Child,
    shots: std::path::PathBuf,
}

impl Browser {
    pub async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (scripts/test.sh installs chromium-driver)");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1400"]}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = wait_for("chromedriver to answer", Duration::from_secs(20), || async {
            ClientBuilder::rustls().unwrap().capabilities(caps.clone()).connect(&url).await.ok()
        })
        .await;
        let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser { client, driver, shots }
    }

    /// A screenshot with `css` scrolled to the top of the window.
    pub async fn shot_at(&self, name: &str, css: &str) {
        let element = self.client.find(Locator::Css(css)).await.unwrap();
        let element = serde_json::to_value(element).unwrap();
        self.client.execute("arguments[0].scrollIntoView(true)", vec![element]).await.unwrap();
        self.shot(name).await;
    }

    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let input = self.client.find(Locator::Css(css)).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
    }

    pub async fn select(&self, css: &str, value: &str) {
        self.client.find(Locator::Css(css)).await.unwrap().select_by_value(value).await.unwrap();
    }

    /// Signs in at `url` with the admin token, as the sign-in form does, and waits for the list.
    pub async fn sign_in_as_admin(&self, url: &str) {
        self.client.goto(url).await.unwrap();
        self.fill("#admin-token", ADMIN_TOKEN).await;
        self.click("#sign-in-form button[type=submit]").await;
        self.text_with("#who", "operator token 1 · operator", Duration::from_secs(10)).await;
    }

    /// The text of `css` now ("" while there is none).
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The text of `css` once it contains `wanted`.
    pub async fn text_with(&self, css: &str, wanted: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            last = self.text(css).await;
            if last.contains(wanted) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.shot("failed").await;
        let error = self.client.find(Locator::Css("#save-error")).await.unwrap().text().await.unwrap_or_default();
        panic!("{css} never said `{wanted}`; it said: {last} (save-error: {error}; see failed.png)");
    }

    pub async fn shown(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.unwrap().is_displayed().await.unwrap()
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sets_up_tests_breaks_repairs_and_replays_from_the_console() {
    let tenants = [Tenant { id: "shop", extra: "" }, Tenant { id: "acme", extra: "" }];
    let p = Pipeline::start("console-browser", &tenants, Options::default()).await;
    let console = ConsoleClient::beside(&p).await;
    let b = Browser::start().await;

    b.client.goto(&console.url).await.unwrap();
    b.shot("01-sign-in").await;
    b.fill("#admin-token", ADMIN_TOKEN).await;
    b.client.find(Locator::Css("#admin-token")).await.unwrap().send_keys("\u{E007}").await.unwrap(); // Enter
    b.text_with("#integrations", "shop", Duration::from_secs(10)).await;
    b.shot("02-integrations").await;

    // A new integration, its choices read from the account.
    b.click("#new-integration").await;
    b.fill("#f-id", "new-shop").await;
    b.fill("#f-api", p.sandbox.url()).await;
    b.fill("#f-comagic-token", &comagic_token("acme")).await;
    b.click("#load-choices").await;
    b.text_with("#choices-status", "Loaded 1 employees, 2 active campaigns", Duration::from_secs(10)).await;
    b.text_with("#f-employee", "Olga Operator", Duration::from_secs(1)).await;
    b.select("#f-employee", "101").await;
    b.select("#t-default-campaign", "5001").await;
    b.select("#t-telegram-mode", "campaign").await;
    b.select("#t-telegram-campaign", "5002").await;
    b.shot("03-new-integration-form").await;
    b.click("#save").await;
    b.text_with("#saved", "Saved", Duration::from_secs(10)).await;
    assert!(b.shown("#full-urls").await, "the new webhook URLs are shown once");
    b.shot_at("04-created", "#setup-section").await;

    // A test chat, delivered with its rule and CoMagic id.
    let stored_before = p.sandbox.stored("acme", Upload::Chats).len();
    b.click("#send-test").await;
    let result = b.text_with("#test-result", "delivered to CoMagic", Duration::from_secs(30)).await;
    let stored = p.sandbox.stored("acme", Upload::Chats);
    assert_eq!(stored.len(), stored_before + 1);
    let id = stored.last().unwrap()["id"].to_string();
    assert!(result.contains("rule default") && result.contains(&format!("CoMagic id {id}")), "{result}");
    b.shot_at("05-test-chat-delivered", "#setup-section").await;

    // The default campaign changed: the next test chat uses it (once every process reloaded).
    b.select("#t-default-campaign", "5002").await;
    b.click("#save").await;
    let saved = b.text_with("#saved", "Saved", Duration::from_secs(10)).await;
    let version = saved.trim_start_matches("Saved (version ").trim_end_matches(").");
    // The page says when every process runs the save; then one test chat shows it.
    let applied = format!("Applied: all 2 running processes run version {version}");
    b.text_with("#applied", &applied, Duration::from_secs(20)).await;
    b.shot_at("05b-applied", "#settings .actions").await;
    let before = p.sandbox.stored("acme", Upload::Chats).len();
    b.click("#send-test").await;
    b.text_with("#test-result", "delivered to CoMagic", Duration::from_secs(30)).await;
    let stored = p.sandbox.stored("acme", Upload::Chats);
    assert_eq!(stored.len(), before + 1);
    assert_eq!(stored.last().unwrap()["campaign_id"], 5002);

    // The account refuses this server: paused, with the fix; repaired, it resumes.
    p.sandbox.update_account("acme", |a| a.ip_whitelisted = false);
    b.click("#send-test").await;
    let paused = b.text_with("#test-result", "ip_not_whitelisted", Duration::from_secs(30)).await;
    assert!(paused.contains("paused") && paused.contains("Fix: this server's IP address"), "{paused}");
    b.text_with("#paused-banner", "API IP list", Duration::from_secs(15)).await;
    b.shot_at("06-paused-with-fix", "#detail").await;
    p.sandbox.update_account("acme", |a| a.ip_whitelisted = true);
    b.text_with("#test-result", "delivered to CoMagic", Duration::from_secs(30)).await;
    wait_for("the paused banner to go", Duration::from_secs(15), || async {
        (!b.shown("#paused-banner").await).then_some(())
    })
    .await;
    b.shot_at("07-resumed", "#test-section").await;

    // A campaign deactivated in CoMagic: the test chat is dead-lettered; reactivated, replayed.
    p.sandbox.update_account("acme", |a| a.campaigns[1].status = "inactive".into());
    b.click("#send-test").await;
    let dead = b.text_with("#test-result", "dead lettered", Duration::from_secs(30)).await;
    assert!(dead.contains("campaign_is_inactive"), "{dead}");
    p.sandbox.update_account("acme", |a| a.campaigns[1].status = "active".into());
    b.click("#dead-refresh").await;
    b.text_with("#dead-summary", "1 dead letters", Duration::from_secs(10)).await;
    // The list is fetched after the summary: it may come a moment later.
    b.text_with("#dead-letters", "comagic_rejected", Duration::from_secs(10)).await;
    b.shot_at("08-dead-letter", "#test-section").await;
    let before = p.sandbox.stored("acme", Upload::Chats).len();
    b.click("#dead-replay").await;
    let asked = b.client.get_alert_text().await.unwrap();
    assert!(asked.contains("Replay all 1 dead letters"), "the replay says how many first: {asked}");
    b.client.accept_alert().await.unwrap();
    b.text_with("#dead-result", "replayed 1", Duration::from_secs(15)).await;
    p.wait_stored("acme", Upload::Chats, before + 1, Duration::from_secs(30)).await;
    b.text_with("#dead-summary", "None", Duration::from_secs(10)).await;
    b.shot_at("09-replayed", "#dead-section").await;

    // The campaign change is in the history, by whom; its earlier version restored, the form is back.
    let history = b.text_with("#history", "default", Duration::from_secs(10)).await;
    assert!(history.contains("operator token 1") && history.contains("updated"), "{history}");
    b.shot_at("10-history", "#history-section").await;
    b.click("#history button").await;
    wait_for("the form restored to campaign 5001", Duration::from_secs(15), || async {
        let select = b.client.find(Locator::Css("#t-default-campaign")).await.ok()?;
        (select.prop("value").await.ok()?.as_deref() == Some("5001")).then_some(())
    })
    .await;
    b.text_with("#history", "restored from version", Duration::from_secs(10)).await;

    b.click("#back").await;
    b.text_with("#integrations", "new-shop", Duration::from_secs(10)).await;
    b.shot("11-integrations-after").await;
    b.close().await;
    console.stop().await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_issues_a_tenant_link_and_the_tenant_sees_its_own_integration_only() {
    let console = super::roles::start().await;
    let operator = Browser::start().await;
    operator.client.goto(&console.url).await.unwrap();
    operator.fill("#admin-token", ADMIN_TOKEN).await;
    operator.click("#sign-in-form button[type=submit]").await;
    operator.text_with("#who", "operator token 1 · operator", Duration::from_secs(10)).await;
    operator.click("#open-access").await;
    operator.text_with("#issue-integration", "other", Duration::from_secs(10)).await;
    operator.select("#issue-integration", "acme").await;
    operator.fill("#issue-name", "Acme's manager").await;
    operator.click("#issue").await;
    operator.text_with("#tokens", "Acme's manager", Duration::from_secs(10)).await;
    operator.shot("10-access").await;
    let link_input = operator.client.find(Locator::Css("#issued-link")).await.unwrap();
    let link = link_input.prop("value").await.unwrap().unwrap();
    assert!(link.contains("#token=vbc_"), "{link}");
    // The link opened where the operator is signed in switches only if they say so.
    for (switch, who) in [(false, "operator token 1"), (true, "Acme's manager")] {
        operator.client.goto("about:blank").await.unwrap();
        let _ = operator.client.goto(&link).await; // may report the prompt it opened
        wait_for("the switch to be asked", Duration::from_secs(10), || async {
            operator.client.get_alert_text().await.ok().filter(|t| t.contains("another access"))
        })
        .await;
        if switch {
            operator.client.accept_alert().await.unwrap();
        } else {
            operator.client.dismiss_alert().await.unwrap();
        }
        operator.text_with("#who", who, Duration::from_secs(10)).await;
    }
    operator.close().await;

    // In a tab of its own, too, the link says as whom it signs in before it does.
    let tenant = Browser::start().await;
    let _ = tenant.client.goto(&link).await; // may report the prompt it opened
    let asked = wait_for("the sign-in to be asked", Duration::from_secs(10), || async {
        tenant.client.get_alert_text().await.ok().filter(|t| t.contains("Sign in?"))
    })
    .await;
    assert!(asked.contains("Acme's manager") && asked.contains("· tenant of acme"), "{asked}");
    tenant.client.accept_alert().await.unwrap();
    tenant.text_with("#who", "Acme's manager", Duration::from_secs(10)).await;
    let who = tenant.text_with("#who", "tenant of acme", Duration::from_secs(1)).await;
    assert!(who.contains("until"), "the expiry is shown: {who}");
    let id = tenant.client.find(Locator::Css("#f-id")).await.unwrap().prop("value").await.unwrap();
    assert_eq!(id.as_deref(), Some("acme"), "its integration opens directly");
    for absent in ["#f-api", "#back", "#new-integration", "#open-access"] {
        assert!(tenant.client.find(Locator::Css(absent)).await.is_err(), "{absent} is not on a tenant's page");
    }
    assert!(!tenant.shown("#list").await && !tenant.shown("#access").await);
    let address = tenant.client.current_url().await.unwrap();
    assert!(!address.as_str().contains("token"), "the token left the address bar: {address}");
    tenant.shot("11-tenant").await;
    tenant.close().await;
    console.stop().await;
}
