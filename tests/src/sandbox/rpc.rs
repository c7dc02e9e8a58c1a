//! JSON-RPC errors the way the Data API documents them.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub mnemonic: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl RpcError {
    pub fn new(code: i64, mnemonic: &'static str, message: impl Into<String>) -> Self {
        RpcError { code, mnemonic, message: message.into(), field: None }
    }

    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn to_json(&self, id: &Value) -> Value {
        let mut data = json!({"mnemonic": self.mnemonic});
        if let Some(field) = &self.field {
            data["field"] = Value::String(field.clone());
        }
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": self.code, "message": self.message, "data": data}})
    }

    pub fn invalid_value(field: impl Into<String>, message: impl Into<String>) -> Self {
        RpcError::new(-32602, "invalid_parameter_value", message).at(field)
    }

    pub fn missing(field: impl Into<String>) -> Self {
        let field = field.into();
        RpcError::new(-32602, "required_parameter_missed", format!("Required parameter {field} is missed")).at(field)
    }

    pub fn not_found(field: impl Into<String>) -> Self {
        let field = field.into();
        RpcError::new(-32602, "entity_not_found", format!("Entity {field} not found")).at(field)
    }

    /// A mnemonic given by name (fault injection): its documented code.
    pub fn by_mnemonic(mnemonic: &str) -> Option<Self> {
        let (code, m) = KNOWN.iter().find(|(_, m)| *m == mnemonic)?;
        Some(RpcError::new(*code, m, format!("injected {m}")))
    }
}

const KNOWN: &[(i64, &str)] = &[
    (-32700, "parse_error"),
    (-32600, "invalid_request"),
    (-32601, "method_not_found"),
    (-32603, "internal_error"),
    (-32099, "notifications_not_supported"),
    (-32001, "access_token_expired"),
    (-32001, "access_token_blocked"),
    (-32001, "access_token_invalid"),
    (-32001, "auth_error"),
    (-32003, "ip_not_whitelisted"),
    (-32003, "forbidden"),
    (-32009, "account_inactive"),
    (-32008, "method_component_disabled"),
    (-32008, "parameter_component_disabled"),
    (-32029, "limit_exceeded"),
    (-32602, "required_parameter_missed"),
    (-32602, "invalid_parameter_value"),
    (-32602, "unexpected_parameters"),
    (-32602, "invalid_parameters_combination"),
    (-32602, "data_type_error"),
    (-32602, "entity_not_found"),
    (-32602, "duplicate_entity"),
    (-32602, "campaign_is_inactive"),
    (-32602, "invalid_date_time"),
    (-32602, "data_limit_exceeded"),
    (-32602, "tariff_restrictions"),
    (-32602, "already_in_use"),
];
