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

/// Who a test's save is recorded as.
pub(crate) fn by_test() -> Edit {
    Edit::new("test", Action::Created)
}

async fn the_suite(store: Store) {
    let env = HashMap::new();
    assert!(store.list().await.unwrap().is_empty());
    let acme = store.create(form("acme", 1), &env, &by("ana", Action::Created)).await.unwrap();
    store.create(form("beta", 2), &env, &by_test()).await.unwrap();
    assert!(matches!(store.create(form("acme", 3), &env, &by_test()).await, Err(StoreError::Exists(_))));
    let listed = store.list().await.unwrap();
    assert_eq!(listed.iter().map(|v| v.form.id.as_str()).collect::<Vec<_>>(), ["acme", "beta"]);
    assert_eq!(listed[0], acme, "secrets and every field stored as given");

    // Two admins read version 1; the first save wins, the second is refused and changes nothing.
    let first = store.update(form("acme", 10), &acme.version, &env, &by("bob", Action::Updated)).await.unwrap();
    assert_ne!(first.version, acme.version);
    let stale = store.update(form("acme", 20), &acme.version, &env, &by_test()).await;
    assert!(matches!(&stale, Err(StoreError::Stale { current, .. }) if *current == first.version), "{stale:?}");
    assert_eq!(store.get("acme").await.unwrap(), first);

    let mut broken = form("acme", 30);
    broken.employee_id = 0;
    let refused = store.update(broken, &first.version, &env, &by_test()).await.unwrap_err().to_string();
    assert!(refused.contains("employee_id"), "{refused}");
    assert_eq!(store.get("acme").await.unwrap(), first, "an invalid form is never written");
    assert!(matches!(
        store.update(form("gone", 1), &first.version, &env, &by_test()).await,
        Err(StoreError::NotFound(_))
    ));

    let set = store.integrations(&env).await.unwrap();
    assert_eq!(set.len(), 2);
    let acme = set.get("acme").unwrap();
    assert_eq!(acme.default, crate::integrations::Target::Campaign { campaign_id: 10 });
    assert_eq!(acme.comagic_token.expose(), "ct-secret-token-42");
    the_history(&store, &first).await;

    // One integration this process cannot load (a variable only another process has) does not
    // refuse the saves of the others.
    let mut elsewhere = form("gamma", 4);
    elsewhere.comagic_token = None;
    elsewhere.comagic_token_env = Some("BRIDGE_SECRET_ONLY_THERE".into());
    let there = HashMap::from([("BRIDGE_SECRET_ONLY_THERE".to_owned(), "ct-elsewhere".to_owned())]);
    store.create(elsewhere, &there, &by_test()).await.unwrap();
    let beta = store.get("beta").await.unwrap();
    store.update(form("beta", 5), &beta.version, &env, &by_test()).await.expect("beta saves all the same");
}

fn by(who: &str, action: Action) -> Edit {
    Edit::new(who, action)
}

/// What `the_suite` left: acme created by ana, updated by bob (the stale and invalid saves
/// recorded nothing).
async fn the_history(store: &Store, first: &Versioned) {
    let env = HashMap::new();
    let history = store.history("acme").await.unwrap();
    let seen: Vec<_> = history.iter().map(|e| (e.who.as_str(), e.action.clone())).collect();
    assert_eq!(seen, [("bob", Action::Updated), ("ana", Action::Created)], "newest first, refused saves not recorded");
    assert_eq!(history[0].changed, ["default"]);
    assert_eq!(history[0].to_version.as_deref(), Some(first.version.as_str()));
    let created = history[1].to_version.clone().unwrap();
    assert_eq!(history::form_at(&history, &created), Some(form("acme", 1)), "the full form kept, for a restore");

    // A secret changed is named, its value never in the entry's names.
    let mut rotated = form("acme", 10);
    rotated.comagic_token = Some(Secret::new("ct-rotated-token-43"));
    let rotated = store.update(rotated, &first.version, &env, &by_test()).await.unwrap();
    assert_eq!(store.history("acme").await.unwrap()[0].changed, ["comagic_token"]);

    // Deleted: gone from the set, its form kept; a stale delete refused.
    assert!(matches!(store.delete("acme", &first.version, &by_test()).await, Err(StoreError::Stale { .. })));
    store.delete("acme", &rotated.version, &by("cy", Action::Deleted)).await.unwrap();
    assert!(matches!(store.get("acme").await, Err(StoreError::NotFound(_))));
    let history = store.history("acme").await.unwrap();
    assert_eq!((history[0].who.as_str(), &history[0].action), ("cy", &Action::Deleted));
    assert_eq!(
        history::form_at(&history, &rotated.version).unwrap().comagic_token.unwrap().expose(),
        "ct-rotated-token-43"
    );

    // Dead-letter actions name the version they were taken at.
    store.record("beta", &by("dee", Action::Replayed), "replayed 2").await.unwrap();
    let beta = store.history("beta").await.unwrap();
    assert_eq!((beta[0].action.clone(), beta[0].detail.as_deref()), (Action::Replayed, Some("replayed 2")));
    assert!(matches!(store.record("acme", &by_test(), "").await, Err(StoreError::NotFound(_))));

    // Bounded: the newest KEPT entries stay.
    let mut beta = store.get("beta").await.unwrap();
    for campaign in 0..(2 * history::KEPT as i64 + 3) {
        beta = store.update(form("beta", 100 + campaign), &beta.version, &env, &by_test()).await.unwrap();
    }
    let kept = store.history("beta").await.unwrap();
    assert_eq!(kept.len(), history::KEPT);
    assert_eq!(kept[0].to_version.as_deref(), Some(beta.version.as_str()), "the newest kept");
    assert_eq!(store.history("acme").await.unwrap().len(), 4, "another integration's history untouched");
}

/// A field this release does not know, as a newer release would write it.
const NEWER_FIELD: &str = "added_by_a_newer_release";

/// With beta's stored form given [`NEWER_FIELD`]: the services read gamma and refuse beta alone
/// (its webhook token still read). The console's list of the file names it and shows nothing (a
/// save rewrites the file); of PostgreSQL, leaves it out and still reads gamma.
async fn beta_unreadable(store: &Store) {
    let stored = store.read_for_services().await.unwrap();
    assert_eq!(stored.readable.iter().map(|v| v.form.id.as_str()).collect::<Vec<_>>(), ["gamma"]);
    let [beta] = &stored.unreadable[..] else { panic!("one unreadable: {:?}", stored.unreadable) };
    assert_eq!(beta.id, "beta");
    assert!(beta.error.to_string().contains(NEWER_FIELD), "{}", beta.error);
    assert_eq!(beta.webhook_token.as_ref().map(Secret::expose), Some("tok_0123456789abcdefghijkl"));
    match store {
        Store::File(_) => {
            let listed = store.list().await.unwrap_err().to_string();
            assert!(listed.contains(NEWER_FIELD), "{listed}");
        }
        Store::Postgres(_) => {
            let listed = store.list().await.unwrap();
            assert_eq!(listed.iter().map(|v| v.form.id.as_str()).collect::<Vec<_>>(), ["gamma"]);
            assert!(store.get("gamma").await.is_ok(), "a row is read alone");
        }
    }
}

#[tokio::test]
async fn the_file_store_keeps_forms_versions_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("integrations.toml");
    let store = Store::open(&Location::File(path.clone())).await.unwrap();
    the_suite(Store::open(&Location::File(path.clone())).await.unwrap()).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let mut edited: toml::Table = toml::from_str(&text).unwrap();
    let entries = edited["integration"].as_array_mut().unwrap();
    let beta = entries.iter_mut().find(|e| e["id"].as_str() == Some("beta")).unwrap();
    beta.as_table_mut().unwrap().insert(NEWER_FIELD.into(), toml::Value::Boolean(true));
    std::fs::write(&path, toml::to_string(&edited).unwrap()).unwrap();
    beta_unreadable(&store).await;
    let env = HashMap::from([("BRIDGE_SECRET_ONLY_THERE".to_owned(), "ct-elsewhere".to_owned())]);
    let reread = Integrations::from_toml(&text, &env).expect("the services read what the console wrote");
    assert_eq!(reread.len(), 2, "beta and gamma (acme was deleted)");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "it holds tokens");
    let history = dir.path().join("integrations.history.jsonl");
    assert_eq!(std::fs::metadata(&history).unwrap().permissions().mode() & 0o777, 0o600, "it holds tokens too");
    let lines = std::fs::read_to_string(&history).unwrap().lines().count();
    assert!(lines < 2 * history::KEPT + 4, "rewritten once over the bound: {lines} lines");
}

#[tokio::test]
async fn the_postgres_store_keeps_forms_versions_and_secrets() {
    let url = std::env::var("BRIDGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://bridge:bridge@127.0.0.1:5432/bridge_test".into());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let scope = format!("t.store.{}.{nanos}", std::process::id());
    let location = Location::Postgres { url: url.clone(), scope: scope.clone() };
    the_suite(Store::open(&location).await.expect("PostgreSQL answers")).await;
    let database = Postgres::new(crate::postgres::DEFAULT_TIMEOUT).database(&url, Role::Integrations).unwrap();
    let newer = format!("UPDATE bridge_integrations SET doc = left(doc, -1) || ',\"{NEWER_FIELD}\":true}}' WHERE scope = $1 AND id = 'beta'");
    assert_eq!(database.execute(&newer, &[&scope]).await.unwrap(), 1);
    beta_unreadable(&Store::open(&location).await.unwrap()).await;
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

/// A disk that stops answering (here a FIFO nobody writes) fails a read and a save after the
/// deadline instead of holding them, and the console's and the reload's callers with them.
#[tokio::test]
async fn a_disk_that_does_not_answer_fails_reads_and_saves_after_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("integrations.toml");
    assert!(std::process::Command::new("mkfifo").arg(&path).status().expect("mkfifo runs").success());
    let store = Store::open(&Location::File(path.clone())).await.unwrap();
    let listed = store.list().await;
    assert!(matches!(&listed, Err(StoreError::File(m)) if m.contains("did not answer")), "{:?}", listed.err());
    let saved = store.create(form("acme", 1), &HashMap::new(), &by_test()).await;
    assert!(matches!(&saved, Err(StoreError::File(m)) if m.contains("did not answer")), "{:?}", saved.err());
    // Lets the blocked reads end, so the runtime can stop: opening the write end releases every
    // reader waiting; without a reader left the open fails (ENXIO) instead of blocking.
    use std::os::unix::fs::OpenOptionsExt;
    let release = || std::fs::OpenOptions::new().write(true).custom_flags(O_NONBLOCK).open(&path);
    while release().is_ok() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Linux's `O_NONBLOCK` (asm-generic/fcntl.h).
const O_NONBLOCK: i32 = 0o4000;

#[tokio::test]
async fn a_bad_line_in_the_history_file_hides_and_drops_no_other() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Location::File(dir.path().join("integrations.toml"))).await.unwrap();
    let env = HashMap::new();
    let mut acme = store.create(form("acme", 1), &env, &by_test()).await.unwrap();
    // A hand edit's bytes that are not UTF-8, then the end of an append a crash cut short.
    let history = dir.path().join("integrations.history.jsonl");
    let mut file = std::fs::OpenOptions::new().append(true).open(&history).unwrap();
    file.write_all(b"\xff\xfe not a line\n{\"id\":\"acme\",\"torn").unwrap();

    acme = store.update(form("acme", 2), &acme.version, &env, &by_test()).await.unwrap();
    assert_eq!(store.history("acme").await.unwrap().len(), 2, "the line after the torn one reads");
    for campaign in 0..(2 * history::KEPT as i64) {
        acme = store.update(form("acme", 10 + campaign), &acme.version, &env, &by_test()).await.unwrap();
    }
    let kept = store.history("acme").await.unwrap();
    assert_eq!(kept.len(), history::KEPT);
    assert_eq!(kept[0].to_version.as_deref(), Some(acme.version.as_str()));
    let bytes = std::fs::read(&history).unwrap();
    let kept = |raw: &[u8]| bytes.windows(raw.len()).any(|w| w == raw);
    assert!(
        kept(b"\xff\xfe not a line\n") && kept(b"{\"id\":\"acme\",\"torn\n"),
        "the rewrite keeps what it cannot read, byte for byte"
    );
}
