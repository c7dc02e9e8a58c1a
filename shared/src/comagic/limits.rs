//! `result.metadata.limits`: the points left in the tenant's minute and day budgets.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Limits {
    pub day_limit: u64,
    pub day_remaining: u64,
    /// Seconds until the day budget resets.
    pub day_reset: u64,
    pub minute_limit: u64,
    pub minute_remaining: u64,
    pub minute_reset: u64,
}

impl Limits {
    pub fn from_json(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
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

    fn limits(day_remaining: u64, minute_remaining: u64) -> Limits {
        Limits { day_limit: 100, day_remaining, day_reset: 5000, minute_limit: 10, minute_remaining, minute_reset: 30 }
    }

    #[test]
    fn waits_only_when_a_budget_is_spent() {
        assert_eq!(limits(50, 5).wait_before_next_call(), Duration::ZERO);
        assert_eq!(limits(50, 0).wait_before_next_call(), Duration::from_secs(30));
        assert_eq!(limits(0, 5).wait_before_next_call(), Duration::from_secs(5000));
    }
}
