//! The admin API's errors: one JSON shape, `{"error": code, "message": ...}` plus what the code
//! needs (`field`, `problems`, `current_version`), never a secret.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use bridge_shared::integrations::store::StoreError;
use bridge_shared::settings::ConfigError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid, unexpired token is required: Authorization: Bearer <token>")]
    Unauthorized,
    /// What this token may not do.
    #[error("{0}")]
    Forbidden(String),
    /// A field of a save only an operator may set.
    #[error("{0}: only an operator may set it")]
    ForbiddenField(String),
    #[error("{0}")]
    NotFound(String),
    #[error("an integration `{0}` exists already")]
    Exists(String),
    #[error("integration `{id}` was changed since it was read: load it again, re-apply your change and save")]
    Stale { id: String, current: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// What is asked cannot be done to the thing as it is now (an event not dead-lettered).
    #[error("{0}")]
    Conflict(String),
    /// What `deliver check` would flag; saved anyway only with `force`.
    #[error("the CoMagic account does not fit these settings: fix them, or save with force")]
    Check { problems: Vec<String> },
    #[error("{0}")]
    BadRequest(String),
    /// The store, the broker or the disk did not answer, or failed. What failed (a file's path,
    /// a driver's words about the network) is logged, not answered: the caller may be a tenant,
    /// or not signed in yet.
    #[error("the console's store, the broker or its disk did not answer or failed: try again; its log says what")]
    Unavailable(String),
    /// A wait the caller may see the reason of (another scan runs; the queue took too long).
    #[error("{0}")]
    Busy(String),
    /// An allowance ([`super::limits`]) is spent: asked again after `retry_after`.
    #[error("{what}: try again in {} s", retry_after.as_secs().max(1))]
    TooMany { what: &'static str, retry_after: std::time::Duration },
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) | ApiError::ForbiddenField(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Exists(_) => "exists",
            ApiError::Stale { .. } => "stale",
            ApiError::Conflict(_) => "conflict",
            ApiError::Invalid { .. } => "invalid",
            ApiError::Check { .. } => "check_failed",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unavailable(_) | ApiError::Busy(_) => "unavailable",
            ApiError::TooMany { .. } => "too_many",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ForbiddenField(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Exists(_) | ApiError::Stale { .. } | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Invalid { .. } | ApiError::Check { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Unavailable(detail) = self {
            tracing::error!(%detail, "answered 503 unavailable");
        }
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        match self {
            ApiError::Invalid { field, .. } | ApiError::ForbiddenField(field) => body["field"] = json!(field),
            ApiError::Check { problems } => body["problems"] = json!(problems),
            ApiError::Stale { current, .. } => body["current_version"] = json!(current),
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                response.insert_header(("WWW-Authenticate", "Bearer"));
            }
            ApiError::TooMany { retry_after, .. } => {
                response.insert_header(("Retry-After", retry_after.as_secs().max(1).to_string()));
            }
            _ => {}
        }
        response.json(body)
    }
}

/// A validation error names the form's field (`default.campaign_id`), not the file's position.
impl From<ConfigError> for ApiError {
    fn from(error: ConfigError) -> Self {
        match error {
            ConfigError::Invalid { key, message } => {
                // `integration[0].employee_id` (validation) or `integration.employee_id` (the body).
                let field = key
                    .split_once("].")
                    .map(|(_, field)| field)
                    .or_else(|| key.strip_prefix("integration."))
                    .unwrap_or(&key)
                    .to_owned();
                ApiError::Invalid { field, message }
            }
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(id) => ApiError::NotFound(format!("no integration `{id}`")),
            StoreError::Exists(id) => ApiError::Exists(id),
            StoreError::Stale { id, current } => ApiError::Stale { id, current },
            StoreError::Invalid(e) => e.into(),
            other @ (StoreError::File(_) | StoreError::Database(_)) => ApiError::Unavailable(other.to_string()),
        }
    }
}
