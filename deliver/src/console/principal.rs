//! Who a request comes from and what their token is for: what handlers and the authorization
//! read, apart from how a token is checked, so both can use it.

use serde::{Deserialize, Serialize};

use super::error::ApiError;

/// What a token is for: every integration, or one tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", content = "integration", rename_all = "snake_case")]
pub enum Role {
    Operator,
    Tenant(String),
}

impl Role {
    /// The role's name and its integration, as the API and the database spell them.
    pub fn parts(&self) -> (&'static str, Option<&str>) {
        match self {
            Role::Operator => ("operator", None),
            Role::Tenant(id) => ("tenant", Some(id)),
        }
    }
}

/// Who a request comes from, as signing in (`auth::signed_in`) found them: what the change history records
/// ("who") and what a handler may allow.
#[derive(Debug, Clone)]
pub struct Principal {
    /// How the history and the page name them: never the token itself.
    pub name: String,
    pub role: Role,
    /// GET requests only.
    pub read_only: bool,
    /// Unix seconds; `None` for an admin token, which lives as long as the setting.
    pub expires_at: Option<i64>,
}

impl Principal {
    /// Whether this principal may see integration `id`.
    pub fn sees(&self, id: &str) -> bool {
        match &self.role {
            Role::Operator => true,
            Role::Tenant(own) => own == id,
        }
    }

    pub fn is_tenant(&self) -> bool {
        matches!(self.role, Role::Tenant(_))
    }
}

impl actix_web::FromRequest for Principal {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    /// Every `/api` request has one (signing in put it there); anything else is refused.
    fn from_request(request: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage;
        let found = request.extensions().get::<Principal>().cloned();
        std::future::ready(found.ok_or_else(|| ApiError::Unauthorized.into()))
    }
}
