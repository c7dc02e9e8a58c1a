//! The CoMagic client against the sandbox: every documented violation is refused with its code and
//! mnemonic, and every outcome is classified into the class the delivery side acts on.

use bridge_shared::comagic::{ComagicClient, Failure};
use bridge_shared::secret::Secret;
use bridge_tests::sandbox::{Account, Sandbox, SandboxConfig};
use serde_json::{json, Map, Value};

use crate::helpers::comagic_client;

mod outcomes;
mod reports;
mod rules;

pub(super) const TOKEN: &str = "sandbox-token-acme";

pub(super) async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig { account: vec![Account::sample("acme", TOKEN)] }).await.unwrap()
}

pub(super) fn valid_chat(ext_id: &str) -> Value {
    json!({
        "ext_id": ext_id, "start_date_time": "2026-01-01 10:00:00", "phone": "79123456789", "status": "succeed",
        "campaign_id": 5001,
        "messages": [
            {"date_time": "2026-01-01 10:00:00", "source": "visitor", "message": "hi"},
            {"date_time": "2026-01-01 10:01:00", "source": "operator", "message": "hello", "employee_id": 101}
        ]
    })
}

pub(super) fn valid_offline(ext_id: &str) -> Value {
    json!({"ext_id": ext_id, "date_time": "2026-01-01 10:00:00", "email": "a@b.ru", "message": "call me", "form_name": "Verbox", "campaign_id": 5001})
}

pub(super) async fn call(
    client: &ComagicClient,
    sandbox: &Sandbox,
    method: &'static str,
    key: &str,
    items: Vec<Value>,
) -> Result<Value, Failure> {
    let mut params = Map::new();
    params.insert(key.into(), Value::Array(items));
    client.call(sandbox.url(), &Secret::new(TOKEN), method, params, Some(key)).await.map(|s| s.result)
}

/// Applies `change` to the second of three valid items, so the index in `field` is checked too.
pub(super) fn batch_with(base: fn(&str) -> Value, change: impl FnOnce(&mut Map<String, Value>)) -> Vec<Value> {
    let mut items: Vec<Value> = (0..3).map(|i| base(&format!("x-{i}"))).collect();
    change(items[1].as_object_mut().unwrap());
    items
}
