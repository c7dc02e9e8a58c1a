//! The integrations of the admin API: list, read, create, update, deactivate; their setup text
//! and their CoMagic account's pick-lists. Secrets are write-only: a save may set them, nothing
//! returns them; an update that leaves a secret out keeps the stored one.

use actix_web::{web, HttpResponse};
use bridge_shared::comagic::{COMAGIC_URL, UIS_URL};
use bridge_shared::integrations::store::{Action, Edit, StoreError, Versioned};
use bridge_shared::integrations::{Integration, IntegrationForm};
use bridge_shared::secret::Secret;
use bridge_shared::settings::deserialize_naming_key;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::operator_fields::{operator_field, operator_fields_kept, stored_kept};
use super::principal::Principal;
use super::random::random_hex;
use super::views::{masked_form, webhook_urls, with_masked_token};
use super::ConsoleState;
use crate::check::{self, AccountKey};

type State = web::Data<ConsoleState>;

/// A save: the form, the version it was based on (updates), and `force` to save what
/// `deliver check` would flag.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveRequest {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    force: bool,
    integration: IntegrationForm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VersionRequest {
    pub(super) version: String,
}

/// A JSON body, with an error naming the field (`integration.employee_id`) but not its value.
pub(super) fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    Ok(deserialize_naming_key(&mut json)?)
}

/// A webhook token for an integration created without one: 48 hex digits from the kernel's
/// random source.
fn new_webhook_token() -> Result<Secret, ApiError> {
    Ok(Secret::new(random_hex(24, "a webhook token")?))
}

impl ConsoleState {
    fn validate(&self, form: &IntegrationForm) -> Result<Integration, ApiError> {
        Ok(form.clone().validate(0, &self.env)?)
    }

    /// A form validated for `to`: a tenant is told that one of the operator's fields does not
    /// apply here, not which variable or address it names.
    fn validate_for(&self, form: &IntegrationForm, to: &Principal) -> Result<Integration, ApiError> {
        self.validate(form).map_err(|error| for_principal(error, to))
    }

    /// What a form sent to the API may name: a CoMagic address the console may send tokens to,
    /// and environment variables of the allowed prefix only (see [`Self::admit_endpoint`]).
    fn admit(&self, form: &IntegrationForm) -> Result<(), ApiError> {
        let prefix = &self.settings.console.secret_env_prefix;
        for (field, name) in [
            ("webhook_token_env", &form.webhook_token_env),
            ("verbox_secret_key_env", &form.verbox_secret_key_env),
            ("comagic_token_env", &form.comagic_token_env),
        ] {
            if name.as_deref().is_some_and(|n| !self.settings.console.env_name_allowed(n)) {
                return Err(ApiError::Invalid {
                    field: field.into(),
                    message: format!("must name a variable starting with {prefix} (the console reads no other)"),
                });
            }
        }
        self.admit_endpoint(&form.comagic_api)
    }

    /// A CoMagic address a token may be sent to: CoMagic's, UIS's, or one the operator listed in
    /// `[console] comagic_endpoints`. Anything else would make the console send a token, or probe
    /// a port, wherever an admin says.
    fn admit_endpoint(&self, api: &str) -> Result<(), ApiError> {
        let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        let listed = [COMAGIC_URL, UIS_URL]
            .into_iter()
            .chain(self.settings.console.comagic_endpoints.iter().map(String::as_str))
            .any(|allowed| same(allowed, api));
        if listed {
            Ok(())
        } else {
            Err(ApiError::Invalid {
                field: "comagic_api".into(),
                message: format!(
                    "must be CoMagic's ({COMAGIC_URL}) or UIS's ({UIS_URL}) Data API, or an address the operator \
                     listed in [console] comagic_endpoints"
                ),
            })
        }
    }

    /// `deliver check` on a form about to be saved: an active integration whose account would
    /// refuse it is not saved unless forced.
    async fn check(&self, integration: &Integration, force: bool) -> Result<(), ApiError> {
        if force || !integration.active {
            return Ok(());
        }
        let problems = check::check(&self.comagic, integration).await;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Check { problems })
        }
    }

    /// An integration as the API shows it to `to`. `token_set` is true in the answer to the save
    /// that set the webhook token: the only answer that carries the URLs in full, to paste into
    /// Verbox. A tenant is not shown the operator's fields ([`operator_field`]).
    fn view(&self, stored: &Versioned, token_set: bool, to: &Principal) -> Value {
        let public_url = &self.settings.ingest.public_url;
        let mut form = masked_form(stored);
        if let Some(fields) = form.as_object_mut().filter(|_| to.is_tenant()) {
            fields.retain(|key, _| !operator_field(key));
        }
        let mut view = json!({
            "id": stored.form.id,
            "version": stored.version,
            "active": stored.form.active,
            "integration": form,
            "state": self.sampler.state_of(&stored.form.id),
            "applied": self.sampler.applied_of(&stored.form.id, &stored.version, to.is_tenant()),
        });
        if let Ok(integration) = self.validate(&stored.form) {
            view["webhook_urls"] = webhook_urls(public_url, &with_masked_token(&integration));
            if token_set {
                view["new_webhook_urls"] = webhook_urls(public_url, &integration);
            }
        }
        view
    }

    pub(super) async fn stored_integration(&self, id: &str, to: &Principal) -> Result<Integration, ApiError> {
        let stored = self.store.get(id).await?;
        self.validate_for(&stored.form, to)
    }
}

/// `error` as `to` may read it: a tenant is told that one of the operator's fields does not
/// apply here, not which variable, prefix or address it names.
fn for_principal(error: ApiError, to: &Principal) -> ApiError {
    match error {
        ApiError::Invalid { field, .. } if to.is_tenant() && operator_field(&field) => ApiError::Invalid {
            field: "operator".into(),
            message: "a setting only an operator can change does not apply in the console: ask your operator".into(),
        },
        other => other,
    }
}

/// Every integration an operator sees; a tenant's own only.
pub async fn list(state: State, by: Principal) -> Result<HttpResponse, ApiError> {
    let all = state.store.list().await?;
    let views: Vec<Value> =
        all.iter().filter(|stored| by.sees(&stored.form.id)).map(|stored| state.view(stored, false, &by)).collect();
    Ok(HttpResponse::Ok().json(json!({ "integrations": views })))
}

pub async fn get(state: State, by: Principal, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let stored = state.store.get(&id).await?;
    Ok(HttpResponse::Ok().json(state.view(&stored, false, &by)))
}

pub async fn create(state: State, by: Principal, bytes: web::Bytes) -> Result<HttpResponse, ApiError> {
    let SaveRequest { force, mut integration, .. } = body(&bytes)?;
    if integration.webhook_token.is_none() && integration.webhook_token_env.is_none() {
        integration.webhook_token = Some(new_webhook_token()?);
    }
    let token_set = integration.webhook_token.is_some();
    save_new(&state, &by, integration, force, token_set, &Edit::new(&by.name, Action::Created)).await
}

/// A save of a new integration: a create, or the restore of a deleted one.
pub(super) async fn save_new(
    state: &ConsoleState,
    by: &Principal,
    integration: IntegrationForm,
    force: bool,
    token_set: bool,
    edit: &Edit,
) -> Result<HttpResponse, ApiError> {
    if by.is_tenant() {
        return Err(ApiError::Forbidden("only an operator may create an integration".into()));
    }
    state.admit(&integration)?;
    let checked = state.validate_for(&integration, by)?;
    state.check(&checked, force).await?;
    // Tokens of an integration deleted under this id (whose delete could not revoke them) must
    // not open the new one; an id in use keeps its tenants.
    match state.store.get(&integration.id).await {
        Err(StoreError::NotFound(_)) => {}
        Ok(_) => return Err(StoreError::Exists(integration.id).into()),
        Err(error) => return Err(error.into()),
    }
    state.issued.revoke_tenants_of(&integration.id, chrono::Utc::now().timestamp()).await?;
    let stored = state.store.create(integration, &state.env, edit).await?;
    tracing::info!(integration = %stored.form.id, version = %stored.version, by = %edit.who, action = ?edit.action, "integration created");
    Ok(HttpResponse::Created().json(state.view(&stored, token_set, by)))
}

pub async fn update(
    state: State,
    by: Principal,
    id: web::Path<String>,
    bytes: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let stored = state.store.get(&id).await?;
    let bytes = stored_kept(&bytes, &stored.form, by.is_tenant())?;
    let SaveRequest { version, force, integration } = body(&bytes)?;
    let version = version.ok_or_else(|| ApiError::Invalid {
        field: "version".into(),
        message: "is required: the version you read, so a save never overwrites someone else's".into(),
    })?;
    if integration.id != *id {
        return Err(ApiError::Invalid { field: "id".into(), message: "an integration's id cannot change".into() });
    }
    let token_set = integration.webhook_token.is_some();
    save_over(&state, &by, integration, &version, force, token_set, &Edit::new(&by.name, Action::Updated)).await
}

/// A save over an integration at `version`: an update, or a restore of an earlier form.
pub(super) async fn save_over(
    state: &ConsoleState,
    by: &Principal,
    mut integration: IntegrationForm,
    version: &str,
    force: bool,
    token_set: bool,
    edit: &Edit,
) -> Result<HttpResponse, ApiError> {
    let stored = state.store.get(&integration.id).await?;
    if by.is_tenant() {
        operator_fields_kept(&integration, &stored.form)?;
    }
    state.admit(&integration).map_err(|error| for_principal(error, by))?;
    token_follows_address(&integration, &stored.form)?;
    keep_unsent_secrets(&mut integration, &stored.form);
    let checked = state.validate_for(&integration, by)?;
    state.check(&checked, force).await?;
    let saved = state.store.update(integration, version, &state.env, edit).await?;
    tracing::info!(integration = %saved.form.id, version = %saved.version, by = %edit.who, action = ?edit.action, "integration updated");
    Ok(HttpResponse::Ok().json(state.view(&saved, token_set, by)))
}

/// A stored CoMagic token goes only to the address it was saved with: a form that moves the
/// integration to another address gives the token again.
fn token_follows_address(form: &IntegrationForm, stored: &IntegrationForm) -> Result<(), ApiError> {
    // A variable's name is not the token given again: it may be the very one stored.
    let token_given = form.comagic_token.is_some();
    if token_given || form.comagic_api == stored.comagic_api {
        Ok(())
    } else {
        Err(moved_without_token())
    }
}

fn moved_without_token() -> ApiError {
    ApiError::Invalid {
        field: "comagic_token".into(),
        message: "give the token again for a new comagic_api: a saved token goes only where it was saved for".into(),
    }
}

/// A secret the form leaves out (neither it nor its `_env` given) stays as stored.
fn keep_unsent_secrets(form: &mut IntegrationForm, stored: &IntegrationForm) {
    let keep =
        |value: &mut Option<Secret>, env: &mut Option<String>, old: &Option<Secret>, old_env: &Option<String>| {
            if value.is_none() && env.is_none() {
                value.clone_from(old);
                env.clone_from(old_env);
            }
        };
    keep(&mut form.webhook_token, &mut form.webhook_token_env, &stored.webhook_token, &stored.webhook_token_env);
    keep(
        &mut form.verbox_secret_key,
        &mut form.verbox_secret_key_env,
        &stored.verbox_secret_key,
        &stored.verbox_secret_key_env,
    );
    keep(&mut form.comagic_token, &mut form.comagic_token_env, &stored.comagic_token, &stored.comagic_token_env);
}

pub async fn deactivate(
    state: State,
    by: Principal,
    id: web::Path<String>,
    bytes: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let VersionRequest { version } = body(&bytes)?;
    let mut form = state.store.get(&id).await?.form;
    form.active = false;
    let saved = state.store.update(form, &version, &state.env, &Edit::new(&by.name, Action::Deactivated)).await?;
    tracing::info!(integration = %saved.form.id, version = %saved.version, by = %by.name, "integration deactivated");
    Ok(HttpResponse::Ok().json(state.view(&saved, false, &by)))
}

/// The state, with whether every process runs the stored version (the page polls it).
pub async fn state(state: State, by: Principal, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let stored = state.store.get(&id).await?;
    let mut answer = state.sampler.state_of(&id);
    answer["applied"] = state.sampler.applied_of(&id, &stored.version, by.is_tenant());
    Ok(HttpResponse::Ok().json(answer))
}

/// What to paste into Verbox and onto the site (`ingest setup`), the token masked.
pub async fn setup(state: State, by: Principal, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let integration = with_masked_token(&state.stored_integration(&id, &by).await?);
    let public_url = &state.settings.ingest.public_url;
    Ok(HttpResponse::Ok().json(json!({
        "webhook_urls": webhook_urls(public_url, &integration),
        "site_script": bridge_shared::setup::site_script(&integration.session_key),
        "steps": bridge_shared::setup::instructions(public_url, &integration),
    })))
}

async fn pick_lists(state: &ConsoleState, key: AccountKey<'_>) -> Result<HttpResponse, ApiError> {
    match check::pick_lists(&state.comagic, key).await {
        Ok(lists) => Ok(HttpResponse::Ok().json(lists)),
        Err(problem) => Err(ApiError::Check { problems: vec![problem] }),
    }
}

/// The stored integration's account: what its form may pick from.
pub async fn account(state: State, by: Principal, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let integration = state.stored_integration(&id, &by).await?;
    pick_lists(&state, (&integration).into()).await
}

/// An account named by a form being filled in: its API address and token, or the stored token
/// of integration `id` when the form leaves the token out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountRequest {
    comagic_api: Option<String>,
    comagic_token: Option<Secret>,
    id: Option<String>,
}

/// A tenant reads its own integration's account only, at its stored address.
pub async fn account_for_form(state: State, by: Principal, bytes: web::Bytes) -> Result<HttpResponse, ApiError> {
    let request: AccountRequest = body(&bytes)?;
    if by.is_tenant() {
        match &request.id {
            None => {
                return Err(ApiError::Forbidden("a tenant reads its own integration's account: give its id".into()))
            }
            Some(id) if !by.sees(id) => return Err(ApiError::NotFound(format!("no integration `{id}`"))),
            Some(_) if request.comagic_api.is_some() => return Err(ApiError::ForbiddenField("comagic_api".into())),
            Some(_) => {}
        }
    }
    let stored = match &request.id {
        Some(id) => Some(state.stored_integration(id, &by).await?),
        None => None,
    };
    let api = request
        .comagic_api
        .or_else(|| stored.as_ref().map(|s| s.comagic_api.clone()))
        .unwrap_or_else(|| IntegrationForm::DEFAULT_COMAGIC_API.to_owned());
    let token = match (request.comagic_token, &stored) {
        (Some(token), _) => {
            state.admit_endpoint(&api)?;
            token
        }
        // The stored token, to the address it was saved with.
        (None, Some(stored)) if stored.comagic_api == api => stored.comagic_token.clone(),
        (None, Some(_)) => return Err(moved_without_token()),
        (None, None) => {
            return Err(ApiError::Invalid {
                field: "comagic_token".into(),
                message: "is required to read the account".into(),
            })
        }
    };
    pick_lists(&state, AccountKey { api: &api, token: &token }).await
}
