//! Who may call which route. Every API route is declared with an [`Access`] where it is
//! registered (`routes()` in the console's module); [`authorize`] looks the request's route up
//! there, and a route found nowhere is for operators only, so a route added without a thought
//! is closed to tenants. A tenant asking for another integration is answered 404, as for an
//! integration that does not exist, so it cannot probe ids; a route it may never call is 403; a
//! read-only token gets 403 on everything but GET.

use actix_web::http::Method;

use super::error::ApiError;
use super::principal::{Principal, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone signed in (`/api/whoami`).
    Anyone,
    /// About the integration in the path's `{id}`: a tenant's own only.
    Integration,
    /// Open to tenants; the handler answers with, or acts on, the tenant's own only.
    Narrowed,
    /// Operators only.
    Operator,
}

/// One route of the API, as registered.
#[derive(Debug)]
pub struct ApiRoute {
    /// `get`, `post`, `put`, `delete`.
    pub method: &'static str,
    /// Below `/api`, with actix's `{name}` segments.
    pub path: &'static str,
    pub access: Access,
}

/// The path segment in place of `{id}` in `pattern`.
fn id_in<'a>(pattern: &str, path: &'a str) -> Option<&'a str> {
    let place = pattern.split('/').position(|segment| segment == "{id}")?;
    path.split('/').nth(place)
}

/// Whether `principal` may call `method` `path`, which matched the route `pattern` (the full
/// pattern, `/api` included) of `routes`.
pub fn authorize(
    principal: &Principal,
    method: &Method,
    pattern: Option<&str>,
    path: &str,
    routes: &[ApiRoute],
) -> Result<(), ApiError> {
    if principal.read_only && method != Method::GET {
        return Err(ApiError::Forbidden("this token is read-only: it may only look".into()));
    }
    let Role::Tenant(own) = &principal.role else { return Ok(()) };
    let route = pattern
        .and_then(|p| p.strip_prefix("/api"))
        .and_then(|p| routes.iter().find(|r| r.path == p && r.method.eq_ignore_ascii_case(method.as_str())));
    match route.map_or(Access::Operator, |r| r.access) {
        Access::Anyone | Access::Narrowed => Ok(()),
        Access::Operator => Err(ApiError::Forbidden("for operators only".into())),
        Access::Integration => match pattern.and_then(|p| id_in(p, path)) {
            Some(id) if id == own => Ok(()),
            Some(id) => Err(ApiError::NotFound(format!("no integration `{id}`"))),
            None => Err(ApiError::Forbidden("for operators only".into())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &[ApiRoute] = &[
        ApiRoute { method: "get", path: "/integrations/{id}", access: Access::Integration },
        ApiRoute { method: "post", path: "/integrations/{id}/purge", access: Access::Operator },
        ApiRoute { method: "get", path: "/integrations", access: Access::Narrowed },
    ];

    fn who(role: Role, read_only: bool) -> Principal {
        Principal { name: "t".into(), role, read_only, expires_at: None }
    }

    #[test]
    fn a_tenant_reaches_its_own_integration_only_and_no_operator_route() {
        let tenant = who(Role::Tenant("acme".into()), false);
        let check =
            |method: Method, pattern: &str, path: &str| authorize(&tenant, &method, Some(pattern), path, ROUTES);
        assert!(check(Method::GET, "/api/integrations/{id}", "/api/integrations/acme").is_ok());
        assert!(matches!(
            check(Method::GET, "/api/integrations/{id}", "/api/integrations/other"),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            check(Method::POST, "/api/integrations/{id}/purge", "/api/integrations/acme/purge"),
            Err(ApiError::Forbidden(_))
        ));
        assert!(check(Method::GET, "/api/integrations", "/api/integrations").is_ok());
        // A route nobody classified, and a method the table does not have, are operators'.
        assert!(matches!(check(Method::GET, "/api/unlisted", "/api/unlisted"), Err(ApiError::Forbidden(_))));
        assert!(matches!(
            check(Method::DELETE, "/api/integrations/{id}", "/api/integrations/acme"),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(authorize(&tenant, &Method::GET, None, "/api/x", ROUTES), Err(ApiError::Forbidden(_))));
    }

    #[test]
    fn read_only_looks_and_an_operator_goes_everywhere() {
        let reader = who(Role::Operator, true);
        let at = Some("/api/integrations/{id}");
        assert!(authorize(&reader, &Method::GET, at, "/api/integrations/x", ROUTES).is_ok());
        assert!(matches!(
            authorize(&reader, &Method::PUT, at, "/api/integrations/x", ROUTES),
            Err(ApiError::Forbidden(_))
        ));
        let operator = who(Role::Operator, false);
        assert!(authorize(&operator, &Method::POST, Some("/api/unlisted"), "/api/unlisted", ROUTES).is_ok());
    }
}
