//! Every answer of the Data API, classified into what the caller must do about it. Errors come with
//! HTTP 200 and an `error` body, so the body decides, not the status: a transport failure and an
//! answer that says "error" are different classes, retried differently.

use serde_json::Value;

use super::limits::Limits;
use super::mnemonics::{lookup, Treatment};

#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    pub result: Value,
    pub limits: Option<Limits>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaWindow {
    Minute,
    Day,
}

/// What went wrong, by what the caller does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Transport error, timeout, HTTP 5xx, `internal_error`, an unreadable body: try again later
    /// (see [`Failure::may_have_arrived`]).
    Transient { label: &'static str, reason: String },
    /// `limit_exceeded`: wait for the window to reset (known from the last `metadata.limits`);
    /// not the events' fault.
    Quota { window: QuotaWindow },
    /// The tenant's account or token is wrong: pause the tenant, keep its events.
    Tenant { mnemonic: &'static str, message: String },
    /// One item was refused: by index when `field` names it, else somewhere in the items (`field`
    /// names the items array but no index), to be found by splitting the batch.
    Item { mnemonic: &'static str, message: String, index: Option<usize>, field: Option<String> },
    /// The request as a whole was refused (a protocol error, or a parameter error that names no
    /// item): splitting the batch cannot help, so the batch is retried whole, later.
    Request { mnemonic: &'static str, message: String },
    /// `duplicate_entity`: the item is already there, which counts as delivered.
    Duplicate { index: Option<usize> },
}

impl Failure {
    /// The `result` label of `bridge_comagic_requests_total`: bounded (known mnemonics only).
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Transient { label, .. } => label,
            Failure::Quota { .. } => "limit_exceeded",
            Failure::Tenant { mnemonic, .. } | Failure::Item { mnemonic, .. } | Failure::Request { mnemonic, .. } => {
                mnemonic
            }
            Failure::Duplicate { .. } => "duplicate_entity",
        }
    }

    /// Whether CoMagic may have taken the call although no answer said so: a timeout, a dropped
    /// connection, a 5xx or an `internal_error` leave the upload in doubt; a refused connection
    /// and every answer that names an error do not (CoMagic takes a request all or nothing).
    pub fn may_have_arrived(&self) -> bool {
        matches!(self, Failure::Transient { label, .. } if *label != CONNECT_FAILED)
    }
}

/// The `result` label of a call whose connection was never made (nothing reached CoMagic).
pub const CONNECT_FAILED: &str = "connect";

/// Classifies one HTTP answer. `array` is the params key the items were sent under, to read an
/// item index out of `field` (`chats.3.phone`, `chats[3].phone`).
pub fn classify(status: u16, body: &[u8], array: Option<&str>) -> Result<Success, Failure> {
    if status >= 500 {
        return Err(Failure::Transient { label: "http_5xx", reason: format!("HTTP {status}") });
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let Some(Value::Object(body)) = parsed else {
        return Err(Failure::Transient {
            label: "bad_response",
            reason: format!("HTTP {status} with a body that is not a JSON object"),
        });
    };
    if let Some(error) = body.get("error").filter(|e| !e.is_null()) {
        return Err(classify_error(error, array));
    }
    if !(200..300).contains(&status) {
        return Err(Failure::Transient {
            label: "bad_response",
            reason: format!("HTTP {status} without an error object"),
        });
    }
    match body.get("result") {
        Some(result) => Ok(Success {
            limits: result.pointer("/metadata/limits").and_then(Limits::from_json),
            result: result.clone(),
        }),
        None => {
            Err(Failure::Transient { label: "bad_response", reason: "no result and no error in the answer".into() })
        }
    }
}

fn classify_error(error: &Value, array: Option<&str>) -> Failure {
    let message = error.get("message").and_then(Value::as_str).unwrap_or("").to_owned();
    let data = error.get("data");
    let mnemonic = data.and_then(|d| d.get("mnemonic")).and_then(Value::as_str).unwrap_or("");
    let field = data.and_then(|d| d.get("field")).and_then(Value::as_str).map(str::to_owned);
    let index = field.as_deref().zip(array).and_then(|(f, a)| item_index(f, a));
    let Some(known) = lookup(mnemonic) else {
        // Anything CoMagic may add later: retrying is the safe default, and `retry_for` bounds
        // it before the dead-letter queue.
        return Failure::Transient { label: "unknown_error", reason: format!("{mnemonic}: {message}") };
    };
    match known.treatment {
        Treatment::Duplicate => Failure::Duplicate { index },
        Treatment::Quota => {
            let window = if message.to_lowercase().contains("day") { QuotaWindow::Day } else { QuotaWindow::Minute };
            Failure::Quota { window }
        }
        Treatment::Pause => Failure::Tenant { mnemonic: known.name, message },
        Treatment::Request => Failure::Request { mnemonic: known.name, message },
        Treatment::Item => {
            let about_items = field.as_deref().zip(array).is_some_and(|(f, a)| f.starts_with(a));
            if about_items {
                Failure::Item { mnemonic: known.name, message, index, field }
            } else {
                Failure::Request { mnemonic: known.name, message }
            }
        }
        Treatment::Retry => Failure::Transient { label: known.name, reason: format!("{mnemonic}: {message}") },
    }
}

/// `chats.3.phone` or `chats[3].phone` → 3.
fn item_index(field: &str, array: &str) -> Option<usize> {
    let rest = field.strip_prefix(array)?;
    let digits = rest.trim_start_matches(['.', '[']);
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comagic::mnemonics::MNEMONICS;
    use serde_json::json;

    fn error(code: i64, mnemonic: &str, field: Option<&str>) -> Vec<u8> {
        json!({"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": "m", "data": {"mnemonic": mnemonic, "field": field}}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn item_index_forms() {
        assert_eq!(item_index("chats.3.phone", "chats"), Some(3));
        assert_eq!(item_index("chats[12].messages.0.date_time", "chats"), Some(12));
        assert_eq!(item_index("chats", "chats"), None);
        assert_eq!(item_index("phone", "chats"), None);
        assert_eq!(item_index("offline_messages.0.email", "chats"), None);
    }

    #[test]
    fn success_reads_limits() {
        let body = json!({"jsonrpc": "2.0", "id": 1, "result": {"data": [{"id": 1}], "metadata": {"limits": {
            "day_limit": 10000, "day_remaining": 9000, "day_reset": 3600, "minute_limit": 100, "minute_remaining": 42, "minute_reset": 17}}}});
        let ok = classify(200, body.to_string().as_bytes(), Some("chats")).unwrap();
        let limits = ok.limits.unwrap();
        assert_eq!((limits.minute_remaining, limits.minute_reset, limits.day_remaining), (42, 17, 9000));
    }

    #[test]
    fn transport_level_failures_are_transient() {
        assert!(matches!(classify(500, b"oops", None), Err(Failure::Transient { label: "http_5xx", .. })));
        assert!(matches!(classify(200, b"<html>", None), Err(Failure::Transient { label: "bad_response", .. })));
        assert!(matches!(classify(200, b"{}", None), Err(Failure::Transient { .. })));
        assert!(matches!(
            classify(200, &error(-32603, "internal_error", None), None),
            Err(Failure::Transient { label: "internal_error", .. })
        ));
        assert!(matches!(
            classify(200, &error(-1, "brand_new", None), None),
            Err(Failure::Transient { label: "unknown_error", .. })
        ));
    }

    #[test]
    fn quota_reads_the_window() {
        let body = json!({"error": {"code": -32029, "message": "Limit per day has been exceeded", "data": {"mnemonic": "limit_exceeded"}}});
        assert_eq!(classify(200, body.to_string().as_bytes(), None), Err(Failure::Quota { window: QuotaWindow::Day }));
        assert_eq!(
            classify(200, &error(-32029, "limit_exceeded", None), None),
            Err(Failure::Quota { window: QuotaWindow::Minute })
        );
    }

    #[test]
    fn tenant_level_mnemonics() {
        for m in MNEMONICS.iter().filter(|m| m.treatment == Treatment::Pause) {
            let got = classify(200, &error(m.code, m.name, None), None);
            assert!(matches!(got, Err(Failure::Tenant { mnemonic, .. }) if mnemonic == m.name), "{}", m.name);
        }
    }

    #[test]
    fn item_level_with_index() {
        let got = classify(200, &error(-32602, "invalid_parameter_value", Some("chats.7.phone")), Some("chats"));
        assert!(matches!(got, Err(Failure::Item { mnemonic: "invalid_parameter_value", index: Some(7), .. })));
        let somewhere = classify(200, &error(-32602, "required_parameter_missed", Some("chats")), Some("chats"));
        assert!(matches!(somewhere, Err(Failure::Item { index: None, .. })));
    }

    #[test]
    fn errors_that_name_no_item_are_about_the_request() {
        for (mnemonic, field) in [
            ("invalid_parameter_value", None),
            ("invalid_parameter_value", Some("access_token")),
            ("tariff_restrictions", None),
            ("invalid_request", Some("chats.3")),
            ("method_not_found", None),
        ] {
            let got = classify(200, &error(-32602, mnemonic, field), Some("chats"));
            assert!(matches!(got, Err(Failure::Request { mnemonic: m, .. }) if m == mnemonic), "{mnemonic} {field:?}");
        }
    }

    #[test]
    fn duplicate_is_its_own_class() {
        assert_eq!(
            classify(200, &error(-32602, "duplicate_entity", Some("chats.2.ext_id")), Some("chats")),
            Err(Failure::Duplicate { index: Some(2) })
        );
    }
}
