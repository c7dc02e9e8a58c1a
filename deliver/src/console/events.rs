//! Every event's journey, for its tenant and the operators: a search of one integration's events
//! and one event by its id (`crate::journey`). A tenant asking for another's event is answered
//! 404, as for one that does not exist.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::principal::Principal;
use super::ConsoleState;
use bridge_shared::event::Envelope;
use bridge_shared::integrations::store::{Action, Edit};
use bridge_shared::mapping::contact::{normalize_email, normalize_phone};

use super::dead_letters;
use crate::dlq::{self, Filter, ReplayOptions, Selection};
use crate::journey::query::{bounded, Cursor, Outcome, Query, MAX_LIMIT};
use crate::journey::Journey;

/// A page's size when the request names none.
const DEFAULT_LIMIT: usize = 20;

/// A search as the query string gives it.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Search {
    pub event_id: Option<String>,
    pub dialog: Option<String>,
    pub contact: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub outcome: Option<String>,
    pub before: Option<String>,
    pub limit: Option<usize>,
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::Invalid { field: field.into(), message: message.into() }
}

fn text(field: &str, value: &Option<String>) -> Result<Option<String>, ApiError> {
    match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => bounded(v).map(Some).ok_or_else(|| invalid(field, "at most 200 characters, none a control")),
    }
}

fn time(field: &str, value: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    text(field, value)?
        .map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| invalid(field, "an RFC 3339 time, e.g. 2026-12-01T09:00:00Z"))
        })
        .transpose()
}

impl Search {
    /// The query of integration `integration` it asks for, every value bounded.
    pub fn query(&self, integration: &str) -> Result<Query, ApiError> {
        let outcome = text("outcome", &self.outcome)?
            .map(|o| Outcome::parse(&o).ok_or_else(|| invalid("outcome", "delivered, dead_lettered or on_its_way")))
            .transpose()?;
        let before = text("before", &self.before)?
            .map(|c| Cursor::parse(&c).ok_or_else(|| invalid("before", "the `next` of an earlier page")))
            .transpose()?;
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(invalid("limit", &format!("1 to {MAX_LIMIT}")));
        }
        let contact = text("contact", &self.contact)?;
        if contact.as_deref().is_some_and(|c| normalize_phone(c).is_none() && normalize_email(c).is_none()) {
            return Err(invalid("contact", "a phone (10 to 15 digits) or an e-mail"));
        }
        Ok(Query {
            integration: integration.to_owned(),
            event_id: text("event_id", &self.event_id)?,
            dialog: text("dialog", &self.dialog)?,
            contact,
            from: time("from", &self.from)?,
            to: time("to", &self.to)?,
            outcome,
            before,
            limit,
        })
    }
}

fn unavailable(error: String) -> ApiError {
    ApiError::Unavailable(format!("the journey's store: {error}"))
}

/// Each token's reads of the journey come from its allowance ([`super::limits`]): a search may
/// read thousands of entries, and the store is every tenant's.
fn allowed(state: &ConsoleState, by: &Principal) -> Result<(), ApiError> {
    let refused = |retry_after| ApiError::TooMany { what: "journey reads of this token", retry_after };
    state.journey_reads.take(&by.name).map_err(refused)
}

/// A journey as `by` is shown it: a tenant is not told the bridge's hosts.
fn shown_to(by: &Principal, mut journey: Journey) -> Journey {
    if by.is_tenant() {
        journey.summary.accepted_by = None;
        journey.steps.iter_mut().for_each(|s| s.replica = None);
    }
    journey
}

/// `GET /api/integrations/{id}/events`: newest first, a page at a time.
pub async fn find(
    state: web::Data<ConsoleState>,
    by: Principal,
    id: web::Path<String>,
    search: web::Query<Search>,
) -> Result<HttpResponse, ApiError> {
    let query = search.query(&id)?;
    allowed(&state, &by)?;
    let page = state.journeys.find(query).await.map_err(unavailable)?;
    let events: Vec<Journey> = page.events.into_iter().map(|j| shown_to(&by, j)).collect();
    Ok(HttpResponse::Ok().json(json!({"events": events, "next": page.next.map(|c| c.to_text())})))
}

/// The journey of `event_id`, if `by` may see it (404 otherwise, as for one that does not exist).
async fn journey_for(state: &ConsoleState, by: &Principal, event_id: &str) -> Result<Journey, ApiError> {
    let not_found = || ApiError::NotFound(format!("no event `{}`", bridge_shared::redact::cut(event_id, 100)));
    let id = bounded(event_id).ok_or_else(not_found)?;
    allowed(state, by)?;
    let journey = state.journeys.get(&id).await.map_err(unavailable)?;
    journey.filter(|j| by.sees(&j.summary.integration)).ok_or_else(not_found)
}

/// `GET /api/events/{event_id}`.
pub async fn get(
    state: web::Data<ConsoleState>,
    by: Principal,
    event_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let journey = journey_for(&state, &by, &event_id).await?;
    Ok(HttpResponse::Ok().json(shown_to(&by, journey)))
}

/// `POST /api/events/{event_id}/send-again`: a dead-lettered event's letter goes back to the
/// events exchange as `deliver dlq replay` sends it (confirmed, then removed from the dead-letter
/// queue); a skipped event's kept webhook is published the same way. Its journey says `replayed`
/// once deliver takes it.
pub async fn send_again(
    state: web::Data<ConsoleState>,
    by: Principal,
    event_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let shown = journey_for(&state, &by, &event_id).await?;
    let (id, integration) = (shown.summary.event_id.clone(), shown.summary.integration.clone());
    if !shown.can_send_again {
        let now = shown.end.unwrap_or_else(|| format!("on its way ({})", shown.last));
        return Err(ApiError::Conflict(format!(
            "event `{id}` is {now}: only a dead-lettered event, or a skipped one whose webhook was kept, is sent again"
        )));
    }
    dead_letters::allowed_scan(&state, &integration)?;
    let amqp = &state.settings.amqp;
    let result = if shown.dead_lettered_now() {
        let filter = Filter { integration: Some(integration.clone()), event_id: Some(id.clone()), ..Filter::default() };
        let options = ReplayOptions { rate: None, dry_run: false, publish_timeout: amqp.publish_timeout };
        let selection = Selection { filter, limit: Some(1) };
        let replay = dlq::replay(amqp, &selection, &options);
        let result = state.sampler.scan_alone(replay).await.map_err(dead_letters::unavailable)?;
        if !result.starts_with("replayed 1 ") {
            let gone = format!("no dead letter of event `{id}` in the queue: replayed or purged already");
            return Err(ApiError::NotFound(gone));
        }
        result
    } else {
        let whole = state.journeys.get_whole(&id).await.map_err(unavailable)?;
        let kept = whole.filter(|j| j.skipped_and_kept()).and_then(|j| j.summary.webhook);
        // The bytes are the store's: only an envelope of this very event, of this integration, goes.
        let envelope = kept.as_deref().and_then(|w| Envelope::from_bytes(w.as_bytes()).ok());
        let envelope = envelope.filter(|e| e.integration == integration && e.event_id.as_str() == id);
        let (Some(envelope), Some(kept)) = (envelope, kept) else {
            return Err(ApiError::Conflict(format!("event `{id}` changed meanwhile")));
        };
        let sent = dlq::send_again(amqp, envelope.kind, kept.as_bytes()).await;
        sent.map_err(|e| ApiError::Unavailable(e.to_string()))?
    };
    tracing::info!(%integration, event_id = %id, by = %by.name, "an event sent again from the console");
    let edit = Edit::new(&by.name, Action::Replayed);
    dead_letters::record(&state, &integration, edit, &format!("event {id} sent again")).await;
    Ok(HttpResponse::Ok().json(json!({"result": result.trim(), "event_id": id})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_is_bounded_where_it_enters() {
        let ok = Search { dialog: Some(" 42 ".into()), limit: Some(5), ..Search::default() }.query("acme").unwrap();
        assert_eq!((ok.dialog.as_deref(), ok.limit, ok.integration.as_str()), (Some("42"), 5, "acme"));
        assert_eq!(Search::default().query("acme").unwrap().limit, DEFAULT_LIMIT);
        let refused = [
            Search { limit: Some(0), ..Search::default() },
            Search { limit: Some(MAX_LIMIT + 1), ..Search::default() },
            Search { dialog: Some("x".repeat(201)), ..Search::default() },
            Search { contact: Some("a\u{0}b".into()), ..Search::default() },
            Search { from: Some("yesterday".into()), ..Search::default() },
            Search { outcome: Some("lost".into()), ..Search::default() },
            Search { contact: Some("Ivan".into()), ..Search::default() },
            Search { before: Some("nope".into()), ..Search::default() },
        ];
        for search in refused {
            assert!(matches!(search.query("acme"), Err(ApiError::Invalid { .. })), "{search:?}");
        }
    }
}
