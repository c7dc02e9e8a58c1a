//! JSON-RPC errors the way the Data API documents them.

use bridge_shared::comagic::mnemonics::lookup;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub mnemonic: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl RpcError {
    /// An error named by its mnemonic, with the code CoMagic documents for it
    /// (`bridge_shared::comagic::mnemonics`): the sandbox answers no other.
    pub fn new(mnemonic: &str, message: impl Into<String>) -> Self {
        let known =
            lookup(mnemonic).unwrap_or_else(|| panic!("the sandbox answers only documented mnemonics: {mnemonic}"));
        RpcError { code: known.code, mnemonic: known.name, message: message.into(), field: None }
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
        RpcError::new("invalid_parameter_value", message).at(field)
    }

    pub fn missing(field: impl Into<String>) -> Self {
        let field = field.into();
        RpcError::new("required_parameter_missed", format!("Required parameter {field} is missed")).at(field)
    }

    pub fn not_found(field: impl Into<String>) -> Self {
        let field = field.into();
        RpcError::new("entity_not_found", format!("Entity {field} not found")).at(field)
    }

    /// A mnemonic given by name (fault injection): its documented code.
    pub fn by_mnemonic(mnemonic: &str) -> Option<Self> {
        let known = lookup(mnemonic)?;
        Some(RpcError::new(known.name, format!("injected {}", known.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error the sandbox's code names is one the bridge's table knows, so no test can pass
    /// against an answer CoMagic does not give (read from the source: some are on rare paths).
    #[test]
    fn the_sandbox_answers_only_mnemonics_from_the_bridges_table() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sandbox");
        let mut named = 0;
        for file in std::fs::read_dir(dir).unwrap() {
            let source = std::fs::read_to_string(file.unwrap().path()).unwrap();
            for call in source.split("RpcError::new(\"").skip(1) {
                let mnemonic = &call[..call.find('"').unwrap()];
                assert!(lookup(mnemonic).is_some(), "the sandbox answers {mnemonic}, which the table lacks");
                named += 1;
            }
        }
        assert!(named >= 10, "the sandbox's errors were found ({named})");
        assert!(RpcError::by_mnemonic("made_up").is_none());
    }
}
