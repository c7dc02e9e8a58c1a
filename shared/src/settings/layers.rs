//! Reading `bridge.toml` and the environment on top of it, with errors that name the key and
//! never show a value (it may be a token).

use std::collections::HashMap;

use super::ConfigError;

/// A TOML syntax error as a line number and what is wrong, never the text of the line: the line
/// may hold a token (a missing quote after `comagic_token = "…`), and the error goes to the log.
pub(crate) fn syntax_message(error: &toml::de::Error, text: &str) -> String {
    let line = error.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let what = hide_values(error.message().trim());
    match line {
        Some(line) => format!("line {line}: {what}"),
        None => what,
    }
}

/// A deserializer's message with every quoted value replaced by `"…"`: `invalid type: string
/// "<a token pasted under the wrong key>", expected u64` must not reach a log line.
fn hide_values(message: &str) -> String {
    let parts: Vec<&str> =
        message.split('"').enumerate().map(|(i, part)| if i % 2 == 1 { "…" } else { part }).collect();
    parts.join("\"")
}

/// Deserializes (TOML, or the admin API's JSON), and on failure names the dotted key that was
/// wrong (`ingest.listen: ...`) without its value.
pub fn deserialize_naming_key<'de, D, T>(input: D) -> Result<T, ConfigError>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde_path_to_error::deserialize(input).map_err(|e| {
        let key = e.path().to_string();
        // The first line: TOML's value deserializer appends the key on lines of its own.
        let message = e.into_inner().to_string();
        let message = hide_values(message.lines().next().unwrap_or_default());
        if key == "." {
            ConfigError::Syntax { path: String::new(), message }
        } else {
            ConfigError::invalid(key, message)
        }
    })
}

/// `BRIDGE__AMQP__URL=...` sets `[amqp] url`. A value that parses as a TOML literal (number, bool)
/// is taken as one, anything else as a string.
pub(super) fn apply_env_overrides(table: &mut toml::Table, env: &HashMap<String, String>) -> Result<(), ConfigError> {
    let mut keys: Vec<_> = env.keys().filter(|k| k.starts_with("BRIDGE__")).collect();
    keys.sort();
    for name in keys {
        let raw = &env[name];
        let path: Vec<String> = name["BRIDGE__".len()..].split("__").map(str::to_lowercase).collect();
        let key = path.join(".");
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(name.clone(), "malformed variable name"));
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let (last, sections) = path.split_last().expect("at least one segment");
        let mut node = &mut *table;
        for section in sections {
            node = node
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError::invalid(key.clone(), "is not a section"))?;
        }
        node.insert(last.clone(), value);
    }
    Ok(())
}
