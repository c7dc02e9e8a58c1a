//! The change history over the admin API: every recorded action with who and which fields,
//! restore through the save's own path (check, stale 409), delete then restore.

use reqwest::Method;
use serde_json::{json, Value};

use super::{valid_form, RunningConsole, COMAGIC_TOKEN};

const WEBHOOK_TOKEN: &str = "whtok_0123456789abcdefghijklmn";
const OPERATOR: &str = "operator token 1";

async fn history(console: &RunningConsole) -> Vec<Value> {
    let (status, body) = console.call(Method::GET, "/api/integrations/acme/history", None).await;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    assert!(!text.contains(COMAGIC_TOKEN) && !text.contains(WEBHOOK_TOKEN), "no stored secret leaves: {text}");
    body["entries"].as_array().unwrap().clone()
}

fn version(body: &Value) -> String {
    body["version"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_change_is_recorded_and_an_earlier_version_restored_through_the_save_path() {
    let console = RunningConsole::start().await;
    let api = console.sandbox.url().to_owned();
    let (status, created) =
        console.call(Method::POST, "/api/integrations", Some(json!({"integration": valid_form(&api)}))).await;
    assert_eq!(status, 201, "{created}");
    let v1 = version(&created);
    let mut form = valid_form(&api);
    form["default"] = json!({"campaign_id": 5002});
    form["comagic_token"] = json!("ct-acme-0123456789");
    let (status, updated) =
        console.call(Method::PUT, "/api/integrations/acme", Some(json!({"version": v1, "integration": form}))).await;
    assert_eq!(status, 200, "{updated}");
    let v2 = version(&updated);

    let entries = history(&console).await;
    assert_eq!(entries.len(), 2);
    assert_eq!((entries[0]["action"].as_str(), entries[0]["who"].as_str()), (Some("updated"), Some(OPERATOR)));
    assert_eq!(entries[0]["changed"], json!(["default"]), "the same token given again is no change");
    assert_eq!((entries[0]["from_version"].as_str(), entries[0]["to_version"].as_str()), (Some(&*v1), Some(&*v2)));
    assert_eq!(entries[1]["action"], "created");
    assert!(entries[0]["at"].as_str().is_some_and(|at| at.contains('T')), "{}", entries[0]);

    // A restore is a save: named on the version read, refused when stale.
    let stale = json!({"version": v1, "restore": v1});
    let (status, refused) = console.call(Method::POST, "/api/integrations/acme/restore", Some(stale)).await;
    assert_eq!(status, 409, "{refused}");
    let (status, _) = console
        .call(Method::POST, "/api/integrations/acme/restore", Some(json!({"version": v2, "restore": "0000"})))
        .await;
    assert_eq!(status, 404, "a version the history does not hold");

    // ... and checked: a forced save check flags, restored without force, is refused.
    let mut flagged = valid_form(&api);
    flagged["default"] = json!({"campaign_id": 9999});
    let body = json!({"version": v2, "integration": flagged, "force": true});
    let (status, forced) = console.call(Method::PUT, "/api/integrations/acme", Some(body)).await;
    assert_eq!(status, 200, "{forced}");
    let v3 = version(&forced);
    let mut back = valid_form(&api);
    back["default"] = json!({"campaign_id": 5001});
    let fix = json!({"version": v3, "integration": back});
    let (status, fixed) = console.call(Method::PUT, "/api/integrations/acme", Some(fix)).await;
    assert_eq!(status, 200, "{fixed}");
    let v4 = version(&fixed);
    let (status, refused) =
        console.call(Method::POST, "/api/integrations/acme/restore", Some(json!({"version": v4, "restore": v3}))).await;
    assert_eq!((status, refused["error"].as_str()), (422, Some("check_failed")), "{refused}");

    let (status, restored) =
        console.call(Method::POST, "/api/integrations/acme/restore", Some(json!({"version": v4, "restore": v2}))).await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["integration"]["default"], json!({"campaign_id": 5002}));
    assert!(restored.get("new_webhook_urls").is_none(), "a restore shows no token in full");
    let entries = history(&console).await;
    assert_eq!((entries[0]["action"].as_str(), entries[0]["restored_from"].as_str()), (Some("restored"), Some(&*v2)));
    let v5 = version(&restored);

    let (status, deactivated) =
        console.call(Method::POST, "/api/integrations/acme/deactivate", Some(json!({"version": v5}))).await;
    assert_eq!(status, 200, "{deactivated}");
    let v6 = version(&deactivated);
    assert_eq!(history(&console).await[0]["changed"], json!(["active"]));

    for (path, action) in [("replay", "replayed"), ("purge", "purged")] {
        let body = json!({"confirm": "acme"});
        let body = if path == "replay" { json!({}) } else { body };
        let (status, answer) =
            console.call(Method::POST, &format!("/api/integrations/acme/dead-letters/{path}"), Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        let top = &history(&console).await[0];
        assert_eq!((top["action"].as_str(), top["who"].as_str()), (Some(action), Some(OPERATOR)), "{top}");
        assert!(top["detail"].is_string(), "{top}");
    }

    // Deleted, then re-created by a restore of its last version.
    let (status, _) = console.call(Method::DELETE, "/api/integrations/acme", Some(json!({"version": v5}))).await;
    assert_eq!(status, 409, "a delete names the current version");
    let (status, deleted) = console.call(Method::DELETE, "/api/integrations/acme", Some(json!({"version": v6}))).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(console.call(Method::GET, "/api/integrations/acme", None).await.0, 404);
    assert_eq!(history(&console).await[0]["action"], "deleted");
    let (status, recreated) =
        console.call(Method::POST, "/api/integrations/acme/restore", Some(json!({"restore": v6}))).await;
    assert_eq!(status, 201, "{recreated}");
    assert_eq!(
        (recreated["active"].as_bool(), recreated["integration"]["default"].clone()),
        (Some(false), json!({"campaign_id": 5002}))
    );
    assert_eq!(console.call(Method::GET, "/api/integrations/acme", None).await.0, 200);
    console.stop().await;
}
