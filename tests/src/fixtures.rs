//! Integrations and Verbox webhooks for tests.

use serde_json::{json, Value};

pub const WEBHOOK_TOKEN: &str = "whtok_0123456789abcdefghijklmn";
pub const OTHER_WEBHOOK_TOKEN: &str = "whtok_zyxwvutsrqponmlkjihgfedc";

/// One `[[integration]]` pointing at `comagic_api` with `comagic_token`; in campaign mode (5001)
/// unless `extra` sets its own `default`.
pub fn integration(id: &str, webhook_token: &str, comagic_api: &str, comagic_token: &str, extra: &str) -> String {
    let default = if extra.contains("default =") { "" } else { "default = { campaign_id = 5001 }" };
    format!(
        r#"
[[integration]]
id = "{id}"
webhook_token = "{webhook_token}"
comagic_api = "{comagic_api}"
comagic_token = "{comagic_token}"
employee_id = 101
timezone = "Europe/Moscow"
{default}
{extra}
"#
    )
}

/// A finished dialog (envelope A) with a client message and an operator answer.
pub fn chat(dialog_id: u64, extra_client: Value) -> Value {
    let mut client = json!({"clientId": format!("c-{dialog_id}"), "name": "Ivan", "phone": "+7 (912) 345-67-89"});
    if let (Some(c), Some(extra)) = (client.as_object_mut(), extra_client.as_object()) {
        c.extend(extra.clone());
    }
    json!({
        "eventId": "dialogFinished",
        "data": {
            "client": client,
            "dialog": {"id": dialog_id, "messages": [
                {"id": 1, "whoSend": "client", "text": "Hello, is it in stock?", "dateTimeUTC": "2026-01-10 09:00:00", "messageType": null},
                {"id": 2, "whoSend": "operator", "text": "Yes, it is.", "dateTimeUTC": "2026-01-10 09:01:00", "messageType": null, "operatorName": "Olga"}
            ]}
        }
    })
}

/// An offline question (envelope B, as older Verbox sends it).
pub fn offline(client_id: &str, question: &str) -> Value {
    json!({
        "eventId": "newOfflineQuestion",
        "client": {"clientId": client_id, "name": "Anna", "email": "anna@example.ru"},
        "message": {"whoSend": "client", "text": question, "dateTimeUTC": "2026-01-10 10:00:00"},
        "operator": {"login": "Offline"}
    })
}

/// Who a test's own save to the integrations store is recorded as.
pub fn by_test() -> bridge_shared::integrations::store::Edit {
    use bridge_shared::integrations::store::{Action, Edit};
    Edit::new("test", Action::Created)
}
