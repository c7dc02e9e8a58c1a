//! What an update keeps of the stored form. A key the request leaves out keeps its stored value,
//! so the page sends only what it edits. The fields that are the operator's, not the tenant's
//! (where the console sends the CoMagic token, `comagic_api`, and the names of the operator's
//! environment variables, `*_env`): a tenant neither sees nor sets them; its saves and restores
//! leave them as stored.

use bridge_shared::integrations::IntegrationForm;
use serde_json::Value;

use super::error::ApiError;

/// Fields of a form only an operator sees and sets: where the console sends the CoMagic token,
/// and the names of the operator's environment variables.
pub(super) fn operator_field(key: &str) -> bool {
    key == "comagic_api" || key.ends_with("_env")
}

/// A tenant's save or restore leaves the operator's fields as they are (a restore would otherwise
/// bring back an address or a variable an operator has since changed).
pub(super) fn operator_fields_kept(form: &IntegrationForm, stored: &IntegrationForm) -> Result<(), ApiError> {
    let fields = |f: &IntegrationForm| match serde_json::to_value(f) {
        Ok(Value::Object(map)) => map.into_iter().filter(|(key, _)| operator_field(key)).collect(),
        _ => serde_json::Map::new(),
    };
    let (now, then) = (fields(stored), fields(form));
    let changed = now.keys().chain(then.keys()).find(|key| now.get(*key) != then.get(*key));
    match changed {
        Some(field) => Err(ApiError::ForbiddenField(field.clone())),
        None => Ok(()),
    }
}

/// Secrets, each with its `_env`: a pair left out is kept by the save (the integrations' API
/// keeps unsent secrets), one given replaces the other.
const SECRETS: [&str; 3] = ["webhook_token", "verbox_secret_key", "comagic_token"];

/// An update's request with every key its form leaves out set to the stored value (`null`
/// clears an optional one, such as `chat_events`); the secrets and their `_env` are left to the
/// save. A tenant's is refused if it sets an operator's field; a secret an operator keeps in a
/// variable stays there: its `_env` is filled in, so a tenant giving that secret is refused (by
/// [`operator_fields_kept`], naming the variable's field).
pub(super) fn stored_kept(bytes: &[u8], stored: &IntegrationForm, by_tenant: bool) -> Result<Vec<u8>, ApiError> {
    let mut request: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if let Some(form) = request.get_mut("integration").and_then(Value::as_object_mut) {
        if let Some(field) = form.keys().find(|key| by_tenant && operator_field(key)) {
            return Err(ApiError::ForbiddenField(field.clone()));
        }
        let kept = |key: &str, form: &serde_json::Map<String, Value>| match key.strip_suffix("_env") {
            Some(secret) if SECRETS.contains(&secret) => by_tenant && !form.contains_key(secret),
            _ => !SECRETS.contains(&key),
        };
        if let Value::Object(stored) = serde_json::to_value(stored).map_err(|e| ApiError::Unavailable(e.to_string()))? {
            for (key, value) in stored {
                if kept(&key, form) {
                    form.entry(key).or_insert(value);
                }
            }
        }
    }
    serde_json::to_vec(&request).map_err(|e| ApiError::BadRequest(e.to_string()))
}
