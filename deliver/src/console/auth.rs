//! Signing in: the bearer token of every `/api` request is an admin token from
//! `BRIDGE_ADMIN_TOKENS` (comma-separated, so a token can be rotated by adding the new one before
//! removing the old; each a full operator) or a token an operator issued from the console
//! ([`super::tokens`]); compared in constant time, never logged or echoed. What the token may do
//! is then [`super::access::authorize`]'s to say, and failed sign-ins are rate limited
//! ([`super::limits`]: [`SIGN_IN_GUESSES`] refused tokens, then one more every
//! [`SIGN_IN_REFILL`], per peer address).

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use bridge_shared::secret::{is_placeholder, Secret};

use super::error::ApiError;
use super::principal::{Principal, Role};
use super::ConsoleState;

/// The environment variable the tokens come from.
pub const ADMIN_TOKENS_VAR: &str = "BRIDGE_ADMIN_TOKENS";
/// Refused tokens an address may present at once, and how often one more guess is allowed after.
pub const SIGN_IN_GUESSES: u32 = 10;
pub const SIGN_IN_REFILL: std::time::Duration = std::time::Duration::from_secs(30);
/// Shorter tokens are refused at start: they could be guessed.
pub const MIN_ADMIN_TOKEN_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("{ADMIN_TOKENS_VAR} is not set: give at least one admin token ({MIN_ADMIN_TOKEN_LEN}+ characters)")]
    Missing,
    #[error("{ADMIN_TOKENS_VAR}: token {0} is shorter than {MIN_ADMIN_TOKEN_LEN} characters")]
    Short(usize),
    #[error("{ADMIN_TOKENS_VAR}: token {0} is a sample's placeholder: set a random one")]
    Placeholder(usize),
}

/// Each admin token with the name the logs and the history give its operator.
pub struct AdminTokens(Vec<(String, Secret)>);

/// `name:token` when what precedes the first `:` is a name (letters, digits, `.`, `_`, `-`, at
/// most 64); the whole entry is the token otherwise, its operator "operator token N".
fn named(place: usize, entry: &str) -> (String, &str) {
    let name_like =
        |n: &str| !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
    match entry.split_once(':') {
        Some((name, token)) if name_like(name) => (name.to_owned(), token.trim()),
        _ => (format!("operator token {place}"), entry),
    }
}

impl AdminTokens {
    pub fn parse(value: Option<&str>) -> Result<Self, TokensError> {
        let entries = value.unwrap_or("").split(',').map(str::trim).filter(|t| !t.is_empty());
        let (names, tokens): (Vec<String>, Vec<&str>) = entries.enumerate().map(|(i, e)| named(i + 1, e)).unzip();
        if tokens.is_empty() {
            return Err(TokensError::Missing);
        }
        if let Some(i) = tokens.iter().position(|t| t.len() < MIN_ADMIN_TOKEN_LEN) {
            return Err(TokensError::Short(i + 1));
        }
        if let Some(i) = tokens.iter().position(|t| is_placeholder(t)) {
            return Err(TokensError::Placeholder(i + 1));
        }
        Ok(AdminTokens(names.into_iter().zip(tokens.into_iter().map(Secret::new)).collect()))
    }

    /// The operator a token belongs to.
    fn admits(&self, candidate: &str) -> Option<Principal> {
        // Every token is compared, so the time taken says nothing about which one came close.
        let found = self.0.iter().fold(None, |found, (name, token)| found.or(token.matches(candidate).then_some(name)));
        found.map(|name| Principal { name: name.clone(), role: Role::Operator, read_only: false, expires_at: None })
    }
}

/// The principal of `token`: an admin token first, an issued one then.
async fn admit(state: &ConsoleState, token: &str) -> Result<Option<Principal>, ApiError> {
    match state.tokens.admits(token) {
        Some(operator) => Ok(Some(operator)),
        None => super::tokens::admit(state, token, chrono::Utc::now().timestamp()).await,
    }
}

/// Every route under `/api` passes here first, so a request without a valid token never reaches
/// a handler, nor one its token may not call (a route added later included).
pub async fn signed_in(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    match principal_of(&request).await {
        Ok(principal) => {
            actix_web::HttpMessage::extensions_mut(&request).insert(principal);
            Ok(next.call(request).await?.map_into_left_body())
        }
        // An answer, not an error: the headers the scope adds (no-store) are added to it too.
        Err(refused) => Ok(request.into_response(refused.error_response()).map_into_right_body()),
    }
}

async fn principal_of(request: &ServiceRequest) -> Result<Principal, ApiError> {
    let state = request.app_data::<web::Data<ConsoleState>>().ok_or(ApiError::Unauthorized)?;
    let presented = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(presented) = presented else { return Err(ApiError::Unauthorized) };
    let Some(principal) = admit(state, presented.trim()).await? else {
        // Each refused token takes one of the address's guesses, in one step (guesses sent
        // together cannot all pass a check made before they are counted); a right token is let
        // in whatever the count, so a guesser cannot lock everyone behind one proxy out.
        let peer = request.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        return Err(match state.sign_ins.take(&peer) {
            Ok(()) => ApiError::Unauthorized,
            Err(retry_after) => ApiError::TooMany { what: "too many refused tokens from this address", retry_after },
        });
    };
    super::access::authorize(
        &principal,
        request.method(),
        request.match_pattern().as_deref(),
        request.path(),
        super::API_ROUTES,
    )?;
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_required_long_and_matched_exactly() {
        assert!(matches!(AdminTokens::parse(None), Err(TokensError::Missing)));
        assert!(matches!(AdminTokens::parse(Some(" , ")), Err(TokensError::Missing)));
        assert!(matches!(AdminTokens::parse(Some("a".repeat(30).as_str())).map(|_| ()), Ok(())));
        let short = format!("{},short", "a".repeat(30));
        let error = AdminTokens::parse(Some(&short)).err().unwrap().to_string();
        assert!(error.contains("token 2") && !error.contains("short,"), "{error}");
        let sample = format!("{},change-me-to-a-long-random-admin-token", "a".repeat(30));
        assert!(matches!(AdminTokens::parse(Some(&sample)), Err(TokensError::Placeholder(2))));
        let tokens = AdminTokens::parse(Some(&format!("{}, {}", "a".repeat(30), "b".repeat(30)))).unwrap();
        assert_eq!(tokens.admits(&"b".repeat(30)).map(|p| p.name).as_deref(), Some("operator token 2"));
        assert!(tokens.admits(&"b".repeat(29)).is_none() && tokens.admits("").is_none());
        // `name:token` names its operator; a short token after the name is still refused.
        let named = AdminTokens::parse(Some(&format!("alice:{}, {}", "a".repeat(30), "b".repeat(30)))).unwrap();
        assert_eq!(named.admits(&"a".repeat(30)).map(|p| p.name).as_deref(), Some("alice"));
        assert!(named.admits(&format!("alice:{}", "a".repeat(30))).is_none());
        assert_eq!(named.admits(&"b".repeat(30)).map(|p| p.name).as_deref(), Some("operator token 2"));
        assert!(matches!(AdminTokens::parse(Some(&format!("bob:{}", "a".repeat(20)))), Err(TokensError::Short(1))));
    }
}
