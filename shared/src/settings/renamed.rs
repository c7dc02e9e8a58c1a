//! Settings that were renamed: the old name is still read, as its new one, with a line in the log
//! saying what to write instead. `publish_timeout_ms` and `batch_linger_ms` were counts of
//! milliseconds while every other duration is text (`5s`); they are `publish_timeout` and
//! `batch_linger` now.

use super::ConfigError;

/// (section, old name, new name): the old one held milliseconds, the new one a duration.
const MILLISECONDS: &[(&str, &str, &str)] =
    &[("amqp", "publish_timeout_ms", "publish_timeout"), ("deliver", "batch_linger_ms", "batch_linger")];

/// Moves each old name of `table` to its new one, as a duration; an old name beside its new one
/// is refused (which one was meant?).
pub(super) fn read_old_names(table: &mut toml::Table) -> Result<(), ConfigError> {
    for &(section, old, new) in MILLISECONDS {
        let Some(toml::Value::Table(section_table)) = table.get_mut(section) else { continue };
        let Some(value) = section_table.remove(old) else { continue };
        let key = format!("{section}.{old}");
        if section_table.contains_key(new) {
            return Err(ConfigError::invalid(
                key,
                format!("is the old name of `{new}`, which is set too: keep `{new}`"),
            ));
        }
        let millis = value
            .as_integer()
            .and_then(|ms| u64::try_from(ms).ok())
            .ok_or_else(|| ConfigError::invalid(&key, "must be a number of milliseconds"))?;
        tracing::warn!(
            setting = %key,
            "`[{section}] {old}` is deprecated: write `{new} = \"{millis}ms\"` (it is read as that)"
        );
        section_table.insert(new.to_owned(), toml::Value::String(format!("{millis}ms")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_name_is_read_as_its_new_one_and_both_together_are_refused() {
        let mut table: toml::Table =
            "[amqp]\npublish_timeout_ms = 2500\n[deliver]\nbatch_linger_ms = 0".parse().unwrap();
        read_old_names(&mut table).unwrap();
        assert_eq!(table["amqp"]["publish_timeout"].as_str(), Some("2500ms"));
        assert_eq!(table["deliver"]["batch_linger"].as_str(), Some("0ms"));
        assert!(table["amqp"].get("publish_timeout_ms").is_none());
        let mut both: toml::Table = "[deliver]\nbatch_linger_ms = 5\nbatch_linger = \"5ms\"".parse().unwrap();
        let refused = read_old_names(&mut both).unwrap_err().to_string();
        assert!(refused.starts_with("deliver.batch_linger_ms:"), "{refused}");
        let mut text: toml::Table = "[amqp]\npublish_timeout_ms = \"5s\"".parse().unwrap();
        assert!(read_old_names(&mut text).is_err());
    }
}
