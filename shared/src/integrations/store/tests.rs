//! One suite, both stores: what the admin API and the services rely on, whichever is configured.

use super::*;
use crate::integrations::TargetForm;
use crate::secret::Secret;

/// A form that validates (also used by the reload tests).
pub(crate) fn form(id: &str, campaign: i64) -> IntegrationForm {
    IntegrationForm {
        id: id.into(),
        active: true,
        webhook_token: Some(Secret::new("tok_0123456789abcdefghijkl")),
        webhook_token_env: None,
        verbox_secret_key: None,
        verbox_secret_key_env: None,
        offline_enabled: true,
        comagic_api: "http://127.0.0.1:9/v2.0".into(),
        comagic_token: Some(Secret::new("ct-secret-token-42")),
        comagic_token_env: None,
        employee_id: 101,
        timezone: "Europe/Moscow".into(),
        session_key: "comagic_session_id".into(),
        default: TargetForm { campaign_id: Some(campaign), site_id: None, source_id: None },
        messengers: [("telegram".to_owned(), TargetForm { campaign_id: Some(7), site_id: None, source_id: None })]
            .into(),
        chat_events: None,
        offline_events: None,
    }
}

async fn the_suite(store: Store) {
    let env = HashMap::new();
    assert!(store.list().await.unwrap().is_empty());
    let acme = store.create(form("acme", 1), &env).await.unwrap();
    store.create(form("beta", 2), &env).await.unwrap();
    assert!(matches!(store.create(form("acme", 3), &env).await, Err(StoreError::Exists(_))));
    let listed = store.list().await.unwrap();
    assert_eq!(listed.iter().map(|v| v.form.id.as_str()).collect::<Vec<_>>(), ["acme", "beta"]);
    assert_eq!(listed[0], acme, "secrets and every field stored as given");

    // Two admins read version 1; the first save wins, the second is refused and changes nothing.
    let first = store.update(form("acme", 10), &acme.version, &env).await.unwrap();
    assert_ne!(first.version, acme.version);
    let stale = store.update(form("acme", 20), &acme.version, &env).await;
    assert!(matches!(&stale, Err(StoreError::Stale { current, .. }) if *current == first.version), "{stale:?}");
    assert_eq!(store.get("acme").await.unwrap(), first);

    let mut broken = form("acme", 30);
    broken.employee_id = 0;
    let refused = store.update(broken, &first.version, &env).await.unwrap_err().to_string();
    assert!(refused.contains("employee_id"), "{refused}");
    assert_eq!(store.get("acme").await.unwrap(), first, "an invalid form is never written");
    assert!(matches!(store.update(form("gone", 1), &first.version, &env).await, Err(StoreError::NotFound(_))));

    let set = store.integrations(&env).await.unwrap();
    assert_eq!(set.len(), 2);
    let acme = set.get("acme").unwrap();
    assert_eq!(acme.default, crate::integrations::Target::Campaign { campaign_id: 10 });
    assert_eq!(acme.comagic_token.expose(), "ct-secret-token-42");
}

#[tokio::test]
async fn the_file_store_keeps_forms_versions_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("integrations.toml");
    the_suite(Store::open(&Location::File(path.clone())).await.unwrap()).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let reread = Integrations::from_toml(&text, &HashMap::new()).expect("the services read what the console wrote");
    assert_eq!(reread.len(), 2);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "it holds tokens");
}

#[tokio::test]
async fn the_postgres_store_keeps_forms_versions_and_secrets() {
    let url = std::env::var("BRIDGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://bridge:bridge@127.0.0.1:5432/bridge_test".into());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let scope = format!("t.store.{}.{nanos}", std::process::id());
    let location = Location::Postgres { url, scope };
    the_suite(Store::open(&location).await.expect("PostgreSQL answers")).await;
}

/// A read the disk holds up (here a FIFO nobody writes yet) must leave the async worker free: on
/// a runtime of one thread, a timer still fires while the read waits.
#[tokio::test(flavor = "current_thread")]
async fn a_file_read_held_up_leaves_the_async_worker_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("integrations.toml");
    let made = std::process::Command::new("mkfifo").arg(&path).status().expect("mkfifo runs");
    assert!(made.success());
    let (release, released) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn({
        let path = path.clone();
        // Lets the read finish once the timer fired, or after a deadline if it never could.
        move || {
            let _ = released.recv_timeout(std::time::Duration::from_secs(5));
            std::fs::write(path, "").unwrap();
        }
    });
    let store = Store::open(&Location::File(path)).await.unwrap();
    let reading = tokio::spawn(async move { store.list().await });
    let started = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let stalled = started.elapsed();
    let _ = release.send(());
    assert!(reading.await.unwrap().unwrap().is_empty());
    writer.join().unwrap();
    assert!(stalled < std::time::Duration::from_secs(2), "the worker was blocked for {stalled:?}");
}
