//! An integration's change history, and what it allows: a restore of an earlier version (a save
//! through exactly the update's path: admitted, checked, refused when stale) and a delete (kept in
//! the history, so a restore re-creates it). The history is the store's
//! (bridge_shared::integrations::store::history); the API shows each entry without the form it
//! keeps, so no stored secret leaves through it: a changed secret is only named.

use actix_web::{web, HttpResponse};
use bridge_shared::integrations::store::history::form_at;
use bridge_shared::integrations::store::{Action, Edit, Entry, StoreError};
use bridge_shared::integrations::IntegrationForm;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::integrations::{body, save_new, save_over, VersionRequest};
use super::principal::Principal;
use super::ConsoleState;

type State = web::Data<ConsoleState>;

/// An entry as the API shows it: everything but the form.
fn view(entry: Entry) -> Value {
    serde_json::to_value(Entry { form: None, ..entry }).unwrap_or(Value::Null)
}

/// The history `by` may read: a tenant's starts after the integration's last delete (an id
/// created again may be someone else's: the one before is not theirs to read or restore).
async fn history_for(state: &ConsoleState, by: &Principal, id: &str) -> Result<Vec<Entry>, ApiError> {
    let mut history = state.store.history(id).await?;
    if by.is_tenant() {
        let deleted = history.iter().position(|entry| entry.action == Action::Deleted);
        history.truncate(deleted.unwrap_or(history.len()));
    }
    Ok(history)
}

pub async fn list(state: State, by: Principal, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let history = history_for(&state, &by, &id).await?;
    let entries: Vec<Value> = history.into_iter().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({ "id": *id, "entries": entries })))
}

/// A restore: the version read (none when the integration was deleted), the version to restore,
/// and `force` as for a save.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreRequest {
    #[serde(default)]
    version: Option<String>,
    restore: String,
    #[serde(default)]
    force: bool,
}

pub async fn restore(
    state: State,
    by: Principal,
    id: web::Path<String>,
    bytes: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let RestoreRequest { version, restore, force } = body(&bytes)?;
    let history = history_for(&state, &by, &id).await?;
    let form = form_at(&history, &restore)
        .ok_or_else(|| ApiError::NotFound(format!("no version {restore} in the history of `{id}`")))?;
    let edit = Edit::new(&by.name, Action::Restored { restored_from: restore });
    match (state.store.get(&id).await, version) {
        (Ok(current), Some(version)) => {
            save_over(&state, &by, with_secrets_of(form, &current.form), &version, force, false, &edit).await
        }
        (Ok(_), None) => Err(ApiError::Invalid {
            field: "version".into(),
            message: "is required: the version you read, so a restore never overwrites someone else's save".into(),
        }),
        // Deleted: the restore re-creates it.
        (Err(StoreError::NotFound(_)), _) => save_new(&state, &by, form, force, false, &edit).await,
        (Err(e), _) => Err(e.into()),
    }
}

/// A restore brings settings back, not secrets: a token rotated since (perhaps because it leaked)
/// stays rotated. But a stored CoMagic token goes only to the address it was saved with: a
/// restore that moves `comagic_api` back brings back the token saved with that address.
fn with_secrets_of(form: IntegrationForm, current: &IntegrationForm) -> IntegrationForm {
    let current = current.clone();
    let (comagic_token, comagic_token_env) = if form.comagic_api == current.comagic_api {
        (current.comagic_token, current.comagic_token_env)
    } else {
        (form.comagic_token.clone(), form.comagic_token_env.clone())
    };
    IntegrationForm {
        webhook_token: current.webhook_token,
        webhook_token_env: current.webhook_token_env,
        verbox_secret_key: current.verbox_secret_key,
        verbox_secret_key_env: current.verbox_secret_key_env,
        comagic_token,
        comagic_token_env,
        ..form
    }
}

pub async fn delete(
    state: State,
    by: Principal,
    id: web::Path<String>,
    bytes: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let VersionRequest { version } = body(&bytes)?;
    let deleted = state.store.delete(&id, &version, &Edit::new(&by.name, Action::Deleted)).await?;
    // Then its tenants' tokens: they open nothing now, and must not open the id if it is created
    // again, for someone else. Tokens a failure here leaves are revoked by that create.
    let revoked = match state.issued.revoke_tenants_of(&id, chrono::Utc::now().timestamp()).await {
        Ok(revoked) => Some(revoked),
        Err(error) => {
            tracing::error!(integration = %id, %error, "tenant tokens not revoked; a create of this id will revoke them");
            None
        }
    };
    tracing::info!(integration = %id, version = %deleted.version, by = %by.name, tenant_tokens_revoked = ?revoked, "integration deleted");
    Ok(HttpResponse::Ok().json(json!({ "deleted": *id, "version": deleted.version, "tenant_tokens_revoked": revoked })))
}
