//! `result.metadata.limits`: the points left in the tenant's minute and day budgets.
//!
//! The values come from a foreign service and steer how long a tenant waits, so they are read
//! defensively: a field that is negative, fractional, a string or absurdly large is read as the
//! nearest sensible value, and a reset is never further away than its window is long. A missing or
//! unreadable field makes the whole block unknown, which the quota logic treats as "probe again".

use std::time::Duration;

use serde_json::Value;

/// A window's reset is never further away than the window itself.
pub const MINUTE_WINDOW_SECS: u64 = 60;
pub const DAY_WINDOW_SECS: u64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub day_limit: u64,
    pub day_remaining: u64,
    /// Seconds until the day budget resets (at most a day).
    pub day_reset: u64,
    pub minute_limit: u64,
    pub minute_remaining: u64,
    /// Seconds until the minute budget resets (at most a minute).
    pub minute_reset: u64,
}

/// A count or a number of seconds as CoMagic might send it: negative reads as 0, a fraction is
/// truncated, a numeric string is read, anything else is unknown.
fn count(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_i64().map(|_| 0)).or_else(|| {
            let f = n.as_f64()?;
            f.is_finite().then(|| if f <= 0.0 { 0 } else { f.min(u64::MAX as f64) as u64 })
        }),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
}

impl Limits {
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Limits {
            day_limit: count(v, "day_limit")?,
            day_remaining: count(v, "day_remaining")?,
            day_reset: count(v, "day_reset")?.min(DAY_WINDOW_SECS),
            minute_limit: count(v, "minute_limit")?,
            minute_remaining: count(v, "minute_remaining")?,
            minute_reset: count(v, "minute_reset")?.min(MINUTE_WINDOW_SECS),
        })
    }

    /// How long to wait before the next call can succeed; zero while points remain.
    pub fn wait_before_next_call(&self) -> Duration {
        let seconds = if self.day_remaining == 0 {
            self.day_reset.max(1)
        } else if self.minute_remaining == 0 {
            self.minute_reset.max(1)
        } else {
            0
        };
        Duration::from_secs(seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits(day_remaining: u64, minute_remaining: u64) -> Limits {
        Limits { day_limit: 100, day_remaining, day_reset: 5000, minute_limit: 10, minute_remaining, minute_reset: 30 }
    }

    #[test]
    fn waits_only_when_a_budget_is_spent() {
        assert_eq!(limits(50, 5).wait_before_next_call(), Duration::ZERO);
        assert_eq!(limits(50, 0).wait_before_next_call(), Duration::from_secs(30));
        assert_eq!(limits(0, 5).wait_before_next_call(), Duration::from_secs(5000));
    }

    #[test]
    fn absurd_values_are_read_as_the_nearest_sensible_ones() {
        let read = Limits::from_json(&json!({
            "day_limit": "1000", "day_remaining": -5, "day_reset": 1e300,
            "minute_limit": 10.7, "minute_remaining": 3, "minute_reset": u64::MAX,
        }))
        .unwrap();
        assert_eq!(
            read,
            Limits {
                day_limit: 1000,
                day_remaining: 0,
                day_reset: DAY_WINDOW_SECS,
                minute_limit: 10,
                minute_remaining: 3,
                minute_reset: MINUTE_WINDOW_SECS
            }
        );
        assert_eq!(Limits::from_json(&json!({"day_limit": 1})), None, "incomplete: unknown");
        assert_eq!(Limits::from_json(&json!([1, 2])), None);
        let nan_like = json!({"day_limit": 1, "day_remaining": "lots", "day_reset": 1,
                              "minute_limit": 1, "minute_remaining": 1, "minute_reset": 1});
        assert_eq!(Limits::from_json(&nan_like), None);
    }
}
