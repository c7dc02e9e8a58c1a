//! Every refusal of a webhook, mapped to its HTTP answer and metric outcome. Messages are for the
//! person configuring Verbox; none of them ever contains a token.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use bridge_shared::verbox::ParseError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook at this URL: check the integration and the token in the URL")]
    NotFound,
    #[error("the body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("not a Verbox webhook: {0}")]
    Invalid(#[from] ParseError),
    #[error("the request body could not be read")]
    BodyUnreadable,
    #[error("secretKey does not match the Verbox secret key configured for this integration")]
    Unauthorized,
    #[error("the event cannot be stored right now (broker and spool both unavailable); retry later")]
    Unavailable,
    #[error("this integration's settings do not apply on this server yet (its operator is told); retry later")]
    NotApplied,
}

impl WebhookError {
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::NotFound => "not_found",
            WebhookError::TooLarge(_) => "too_large",
            WebhookError::Invalid(_) | WebhookError::BodyUnreadable => "invalid_webhook",
            WebhookError::Unauthorized => "unauthorized",
            WebhookError::Unavailable => "unavailable",
            WebhookError::NotApplied => "not_applied",
        }
    }

    /// The `outcome` label of `bridge_ingest_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            WebhookError::Invalid(_) | WebhookError::BodyUnreadable => "invalid",
            other => other.code(),
        }
    }
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebhookError::NotFound => StatusCode::NOT_FOUND,
            WebhookError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::Invalid(_) | WebhookError::BodyUnreadable => StatusCode::BAD_REQUEST,
            WebhookError::Unauthorized => StatusCode::UNAUTHORIZED,
            WebhookError::Unavailable | WebhookError::NotApplied => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({"error": self.code(), "message": self.to_string()}))
    }
}
