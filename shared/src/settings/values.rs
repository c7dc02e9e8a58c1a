//! The text forms of setting values: durations (`10s`, `24h`) and broker address lists.

use std::time::Duration;

use super::DAY;

/// A duration in the form the settings take: the largest unit that divides it exactly (`90m`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= per && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// A duration key in its text form (`10s`, `5m`, `24h`, `7d`).
pub(super) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::super::values::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::super::values::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// `[amqp] urls`: a TOML list, or one string of comma-separated addresses (what an environment
/// variable or a Kubernetes Secret holds).
pub(super) mod address_list {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let list = match Form::deserialize(d)? {
            Form::List(list) => list,
            Form::Text(text) => text.split(',').map(str::to_owned).collect(),
        };
        Ok(list.into_iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect())
    }

    pub fn serialize<S: Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(urls)
    }
}

/// `500ms`, `10s`, `5m`, `24h`, `2d`; at most ten years, whatever the unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const LONGEST: u64 = 3650 * DAY;
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let not_a_duration = || format!("`{s}` is not a duration like 10s, 5m or 24h");
    let n: u64 = number.parse().map_err(|_| not_a_duration())?;
    let duration = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        "d" => n.checked_mul(DAY).map(Duration::from_secs),
        _ => return Err(not_a_duration()),
    };
    duration.filter(|d| d.as_secs() <= LONGEST).ok_or_else(|| format!("`{s}` is longer than ten years"))
}
