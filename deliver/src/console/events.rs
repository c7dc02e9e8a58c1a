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
use crate::journey::query::{bounded, Cursor, Outcome, Query, MAX_LIMIT};

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
        Ok(Query {
            integration: integration.to_owned(),
            event_id: text("event_id", &self.event_id)?,
            dialog: text("dialog", &self.dialog)?,
            contact: text("contact", &self.contact)?,
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

/// `GET /api/integrations/{id}/events`: newest first, a page at a time.
pub async fn find(
    state: web::Data<ConsoleState>,
    id: web::Path<String>,
    search: web::Query<Search>,
) -> Result<HttpResponse, ApiError> {
    let query = search.query(&id)?;
    let page = state.journeys.find(query).await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(json!({"events": page.events, "next": page.next.map(|c| c.to_text())})))
}

/// `GET /api/events/{event_id}`.
pub async fn get(
    state: web::Data<ConsoleState>,
    by: Principal,
    event_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::NotFound(format!("no event `{}`", bridge_shared::redact::cut(&event_id, 100)));
    let id = bounded(&event_id).ok_or_else(not_found)?;
    let journey = state.journeys.get(&id).await.map_err(unavailable)?;
    match journey.filter(|j| by.sees(&j.summary.integration)) {
        Some(journey) => Ok(HttpResponse::Ok().json(journey)),
        None => Err(not_found()),
    }
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
            Search { before: Some("nope".into()), ..Search::default() },
        ];
        for search in refused {
            assert!(matches!(search.query("acme"), Err(ApiError::Invalid { .. })), "{search:?}");
        }
    }
}
