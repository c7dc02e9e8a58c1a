//! An integration's dead letters, with the `deliver dlq` commands' semantics: counts and the
//! letters themselves (read without removing), replay (confirmed publish, then removal), and purge,
//! which deletes for good and so must be confirmed by typing the integration's id.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use bridge_shared::integrations::store::{Action, Edit};

use super::error::ApiError;
use super::principal::Principal;
use super::state::ScanError;
use super::ConsoleState;
use crate::dlq::{self, Filter, ReplayOptions, Selection};

/// Letters listed at most; the counts cover all of them.
const LISTED: usize = 200;

fn of(integration: &str, limit: Option<usize>) -> Selection {
    Selection { filter: Filter { integration: Some(integration.to_owned()), ..Filter::default() }, limit }
}

pub(super) fn unavailable(error: ScanError) -> ApiError {
    match error {
        ScanError::Failed(_) => ApiError::Unavailable(error.to_string()),
        ScanError::Busy | ScanError::TimedOut => ApiError::Busy(error.to_string()),
    }
}

/// A scan of the queue for integration `id`, from its allowance: every scan holds the console's
/// one scan turn, so no integration's calls may keep the others' waiting.
pub(super) fn allowed_scan(state: &ConsoleState, id: &str) -> Result<(), ApiError> {
    let refused = |retry_after| ApiError::TooMany { what: "dead-letter scans of this integration", retry_after };
    state.dead_letter_scans.take(id).map_err(refused)
}

/// The counts and the first letters, in one scan of the queue.
pub async fn list(state: web::Data<ConsoleState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    allowed_scan(&state, &id)?;
    let selection = of(&id, None);
    let overview = dlq::overview(&state.settings.amqp, &selection, LISTED);
    let (stats, letters) = state.sampler.scan_alone(overview).await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(json!({"stats": stats, "letters": letters, "listed_at_most": LISTED})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Replay at most this many (all of the integration's when left out).
    limit: Option<usize>,
    #[serde(default)]
    dry_run: bool,
}

/// Records a dead-letter action in the integration's history; its failure is said, not the
/// action's (which was done).
pub(super) async fn record(state: &ConsoleState, id: &str, edit: Edit, result: &str) {
    if let Err(e) = state.store.record(id, &edit, result).await {
        tracing::warn!(integration = %id, error = %e, "a dead-letter action was not recorded in the history");
    }
}

pub async fn replay(
    state: web::Data<ConsoleState>,
    by: Principal,
    id: web::Path<String>,
    request: web::Json<ReplayRequest>,
) -> Result<HttpResponse, ApiError> {
    allowed_scan(&state, &id)?;
    let amqp = &state.settings.amqp;
    let options = ReplayOptions { rate: None, dry_run: request.dry_run, publish_timeout: amqp.publish_timeout };
    let selection = of(&id, request.limit);
    let result = state.sampler.scan_alone(dlq::replay(amqp, &selection, &options)).await;
    let result = result.map_err(unavailable)?;
    tracing::info!(integration = %id, result = %result.trim(), by = %by.name, "dead letters replayed from the console");
    if !request.dry_run {
        record(&state, &id, Edit::new(&by.name, Action::Replayed), result.trim()).await;
    }
    Ok(HttpResponse::Ok().json(json!({"result": result.trim()})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// The integration's id, typed again: a purge cannot be undone.
    confirm: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

pub async fn purge(
    state: web::Data<ConsoleState>,
    by: Principal,
    id: web::Path<String>,
    request: web::Json<PurgeRequest>,
) -> Result<HttpResponse, ApiError> {
    if !request.dry_run && request.confirm.as_deref() != Some(id.as_str()) {
        return Err(ApiError::Invalid {
            field: "confirm".into(),
            message: format!(
                "a purge deletes dead letters for good: set confirm to \"{id}\" (or look first with dry_run)"
            ),
        });
    }
    allowed_scan(&state, &id)?;
    let selection = of(&id, None);
    let result = state.sampler.scan_alone(dlq::purge(&state.settings.amqp, &selection, request.dry_run)).await;
    let result = result.map_err(unavailable)?;
    tracing::info!(integration = %id, result = %result.trim(), by = %by.name, "dead letters purged from the console");
    if !request.dry_run {
        record(&state, &id, Edit::new(&by.name, Action::Purged), result.trim()).await;
    }
    Ok(HttpResponse::Ok().json(json!({"result": result.trim()})))
}
