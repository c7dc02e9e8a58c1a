//! Tokens an operator issues from the console: a tenant's (one integration) or a read-only
//! operator's, each with an expiry of at most [`MAX_LIFETIME_DAYS`] and revocable at once. The
//! token is shown once, in the answer to issuing it; the page makes it a link that carries it in
//! the URL's fragment (a browser sends a fragment to no server, so no proxy or access log sees it).
//! Only its SHA-256 is stored ([`store`]).

pub mod store;

use actix_web::{web, HttpResponse};
use bridge_shared::integrations::store::StoreError;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use self::store::{Record, TokenStoreError};
use super::error::ApiError;
use super::principal::{Principal, Role};
use super::random::{hex, random_hex};
use super::ConsoleState;

/// The longest an issued token may live: a link handed to a tenant is given again, not kept for
/// good.
pub const MAX_LIFETIME_DAYS: i64 = 90;
/// How an issued token starts, so it is told apart from an admin token without a lookup.
pub const TOKEN_PREFIX: &str = "vbc_";

fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

impl From<TokenStoreError> for ApiError {
    fn from(error: TokenStoreError) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

/// Who presents `token`, if it is an issued token neither revoked nor expired at `now`.
pub async fn admit(state: &ConsoleState, token: &str, now: i64) -> Result<Option<Principal>, ApiError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let found = state.issued.find(&hash(token)).await?;
    Ok(found.filter(|r| r.revoked_at.is_none() && now < r.expires_at).map(|r| Principal {
        name: format!("{} (token {})", r.name, r.id),
        role: r.access,
        read_only: r.read_only,
        expires_at: Some(r.expires_at),
    }))
}

fn time(seconds: i64) -> Value {
    json!(DateTime::<Utc>::from_timestamp(seconds, 0).map(|t| t.to_rfc3339()))
}

/// A record as the API shows it: never the token or its hash.
fn view(record: &Record, now: i64) -> Value {
    let status = if record.revoked_at.is_some() {
        "revoked"
    } else if now >= record.expires_at {
        "expired"
    } else {
        "active"
    };
    let (role, integration) = record.access.parts();
    json!({
        "id": record.id, "name": record.name, "role": role, "integration": integration,
        "read_only": record.read_only, "issued_by": record.issued_by, "issued_at": time(record.issued_at),
        "expires_at": time(record.expires_at), "revoked_at": record.revoked_at.map(time), "status": status,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum IssuedRole {
    Tenant,
    Operator,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    role: IssuedRole,
    integration: Option<String>,
    #[serde(default)]
    read_only: bool,
    expires_at: DateTime<Utc>,
    /// How the page and the change history name whoever uses it.
    name: Option<String>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid { field: field.into(), message: message.into() }
}

pub async fn issue(state: web::Data<ConsoleState>, by: Principal, bytes: web::Bytes) -> Result<HttpResponse, ApiError> {
    let asked: IssueRequest = super::integrations::body(&bytes)?;
    let now = Utc::now().timestamp();
    let access = match (asked.role, asked.integration) {
        (IssuedRole::Tenant, Some(id)) => {
            match state.store.get(&id).await {
                Err(StoreError::NotFound(_)) => return Err(invalid("integration", format!("no integration `{id}`"))),
                other => other?,
            };
            Role::Tenant(id)
        }
        (IssuedRole::Tenant, None) => return Err(invalid("integration", "a tenant's token is for one integration")),
        (IssuedRole::Operator, None) if asked.read_only => Role::Operator,
        (IssuedRole::Operator, None) => {
            return Err(invalid(
                "read_only",
                "an issued operator token is read-only (full operators are in BRIDGE_ADMIN_TOKENS)",
            ))
        }
        (IssuedRole::Operator, Some(_)) => {
            return Err(invalid("integration", "an operator's token is for every integration"))
        }
    };
    let expires_at = asked.expires_at.timestamp();
    if expires_at <= now || expires_at > now + MAX_LIFETIME_DAYS * 86_400 {
        return Err(invalid("expires_at", format!("must be in the future, {MAX_LIFETIME_DAYS} days from now at most")));
    }
    let name = asked.name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).unwrap_or_else(|| match &access {
        Role::Tenant(id) => format!("tenant of {id}"),
        Role::Operator => "read-only operator".into(),
    });
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(invalid("name", "100 printable characters at most"));
    }
    let token = format!("{TOKEN_PREFIX}{}", random_hex(32, "an access token")?);
    let record = Record {
        id: random_hex(8, "a token's id")?,
        name,
        access,
        read_only: asked.read_only,
        issued_by: by.name.clone(),
        issued_at: now,
        expires_at,
        revoked_at: None,
        hash: hash(&token),
    };
    state.issued.add(&record).await?;
    tracing::info!(token = %record.id, name = %record.name, by = %by.name, "console token issued");
    Ok(HttpResponse::Created().json(json!({"token": token, "issued": view(&record, now)})))
}

pub async fn list(state: web::Data<ConsoleState>) -> Result<HttpResponse, ApiError> {
    let now = Utc::now().timestamp();
    let tokens: Vec<Value> = state.issued.list().await?.iter().map(|r| view(r, now)).collect();
    Ok(HttpResponse::Ok().json(json!({"tokens": tokens, "max_lifetime_days": MAX_LIFETIME_DAYS})))
}

pub async fn revoke(
    state: web::Data<ConsoleState>,
    by: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let now = Utc::now().timestamp();
    let revoked = state.issued.revoke(&id, now).await?.ok_or_else(|| ApiError::NotFound(format!("no token `{id}`")))?;
    tracing::info!(token = %revoked.id, by = %by.name, "console token revoked");
    Ok(HttpResponse::Ok().json(view(&revoked, now)))
}

/// Who the caller is, as the page's header shows it.
pub async fn whoami(by: Principal) -> HttpResponse {
    let (role, integration) = by.role.parts();
    HttpResponse::Ok().json(json!({
        "name": by.name, "role": role, "integration": integration, "read_only": by.read_only,
        "expires_at": by.expires_at.map(time),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_256_random_bits_and_only_its_hash_is_kept() {
        let a = random_hex(32, "a test").unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_hex(32, "a test").unwrap());
        assert_eq!(hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
