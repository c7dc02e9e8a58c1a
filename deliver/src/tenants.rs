//! Per-integration state shared by its chat and offline lanes: a pause while its CoMagic account
//! refuses us (5 min doubling to 1 h by default), and the quota read from `metadata.limits`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bridge_shared::comagic::{Limits, QuotaWindow};
use bridge_shared::telemetry::DeliverMetrics;
use tokio::time::Instant;

/// Why an integration cannot be called now, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    Paused(Duration),
    Quota(Duration),
}

/// Calls the integration may still start in the current quota window, as last reported by
/// `metadata.limits` less the calls started since. Unknown (`None`) until an answer tells, and
/// again once the window has reset; then one call at a time probes it.
#[derive(Debug, Default)]
struct Budget {
    calls: Option<u64>,
    until: Option<Instant>,
    probing: bool,
}

#[derive(Debug)]
struct State {
    paused: Option<(Instant, &'static str)>,
    next_pause: Duration,
    not_before: Option<Instant>,
    limits: Option<Limits>,
    budget: Budget,
}

/// How long a lane waits before asking again while another call probes an unknown budget.
const PROBE_WAIT: Duration = Duration::from_millis(20);

/// `now + wait`, or a day from now if that is not representable: a wait comes from a foreign
/// answer, and no answer may make the clock arithmetic panic.
fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait).unwrap_or_else(|| now + Duration::from_secs(86_400))
}

pub struct Tenant {
    id: String,
    state: Mutex<State>,
    pause_range: (Duration, Duration),
    metrics: DeliverMetrics,
}

impl Tenant {
    /// The state, even after a panic elsewhere while it was held: every update below leaves it
    /// consistent between statements, so a poisoned lock must not stop the tenant for good.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `None` when a call may start now (and then counts it against the budget), else why not.
    pub fn reserve_call(&self) -> Option<Block> {
        let mut state = self.state();
        let now = Instant::now();
        if let Some((until, _)) = state.paused.filter(|(until, _)| *until > now) {
            return Some(Block::Paused(until - now));
        }
        if let Some(t) = state.not_before.filter(|t| *t > now) {
            return Some(Block::Quota(t - now));
        }
        let budget = &mut state.budget;
        if budget.until.is_some_and(|until| until <= now) {
            *budget = Budget::default();
        }
        match budget.calls {
            Some(0) => {
                let wait = budget.until.map_or(PROBE_WAIT, |until| until - now);
                Some(Block::Quota(wait))
            }
            Some(n) => {
                budget.calls = Some(n - 1);
                None
            }
            None if budget.probing => Some(Block::Quota(PROBE_WAIT)),
            None => {
                budget.probing = true;
                None
            }
        }
    }

    /// A reserved call ended without telling the budget (a failure): let the next one probe.
    pub fn call_failed(&self) {
        self.state().budget.probing = false;
    }

    /// The account refused us (`mnemonic`): pause, doubling the pause each time up to the maximum.
    pub fn pause(&self, mnemonic: &'static str) -> Duration {
        let mut state = self.state();
        let pause = state.next_pause;
        if let Some((_, previous)) = state.paused {
            self.metrics.paused.with_label_values(&[&self.id, previous]).set(0);
        }
        state.paused = Some((later(Instant::now(), pause), mnemonic));
        state.next_pause = (pause * 2).min(self.pause_range.1);
        self.metrics.paused.with_label_values(&[&self.id, mnemonic]).set(1);
        tracing::warn!(integration = %self.id, reason = mnemonic, pause_s = pause.as_secs(), "integration paused: its CoMagic account refuses the bridge");
        pause
    }

    /// A call went through: the account works again, and its budget is known.
    pub fn succeeded(&self, limits: Option<Limits>) {
        let mut state = self.state();
        if let Some((_, reason)) = state.paused.take() {
            self.metrics.paused.with_label_values(&[&self.id, reason]).set(0);
            tracing::info!(integration = %self.id, "integration resumed");
        }
        state.next_pause = self.pause_range.0;
        state.budget.probing = false;
        if let Some(limits) = limits {
            let reset = if limits.day_remaining == 0 { limits.day_reset } else { limits.minute_reset };
            state.budget.calls = Some(limits.minute_remaining.min(limits.day_remaining));
            state.budget.until = Some(later(Instant::now(), Duration::from_secs(reset.max(1))));
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.metrics.quota_remaining.with_label_values(&[&self.id, "minute"]).set(gauge(limits.minute_remaining));
            self.metrics.quota_remaining.with_label_values(&[&self.id, "day"]).set(gauge(limits.day_remaining));
            let wait = limits.wait_before_next_call();
            state.not_before = (!wait.is_zero()).then(|| later(Instant::now(), wait));
            state.limits = Some(limits);
        }
    }

    /// `limit_exceeded`: wait for the window's reset as last reported (else a minute, or an hour).
    pub fn quota_exceeded(&self, window: QuotaWindow) -> Duration {
        let mut state = self.state();
        let known = state.limits.map(|l| match window {
            QuotaWindow::Minute => l.minute_reset,
            QuotaWindow::Day => l.day_reset,
        });
        let fallback = match window {
            QuotaWindow::Minute => 60,
            QuotaWindow::Day => 3600,
        };
        let wait = Duration::from_secs(known.filter(|s| *s > 0).unwrap_or(fallback));
        state.not_before = Some(later(Instant::now(), wait));
        wait
    }
}

/// Every integration's state, created on first use.
pub struct Tenants {
    all: Mutex<HashMap<String, Arc<Tenant>>>,
    pause_range: (Duration, Duration),
    metrics: DeliverMetrics,
}

impl Tenants {
    pub fn new(pause_range: (Duration, Duration), metrics: DeliverMetrics) -> Self {
        Tenants { all: Mutex::default(), pause_range, metrics }
    }

    pub fn get(&self, id: &str) -> Arc<Tenant> {
        let mut all = self.all.lock().unwrap_or_else(PoisonError::into_inner);
        all.entry(id.to_owned())
            .or_insert_with(|| {
                Arc::new(Tenant {
                    id: id.to_owned(),
                    state: Mutex::new(State {
                        paused: None,
                        next_pause: self.pause_range.0,
                        not_before: None,
                        limits: None,
                        budget: Budget::default(),
                    }),
                    pause_range: self.pause_range,
                    metrics: self.metrics.clone(),
                })
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants() -> Tenants {
        let metrics = DeliverMetrics::new(&prometheus::Registry::new());
        Tenants::new((Duration::from_secs(300), Duration::from_secs(3600)), metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_the_cap_and_a_success_resets_them() {
        let t = tenants().get("acme");
        let pauses: Vec<_> = (0..6).map(|_| t.pause("ip_not_whitelisted").as_secs()).collect();
        assert_eq!(pauses, vec![300, 600, 1200, 2400, 3600, 3600]);
        assert!(matches!(t.reserve_call(), Some(Block::Paused(_))));
        tokio::time::advance(Duration::from_secs(3601)).await;
        assert_eq!(t.reserve_call(), None, "the pause ends by itself");
        t.succeeded(None);
        assert_eq!(t.pause("forbidden").as_secs(), 300);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_blocks_until_its_reset() {
        let t = tenants().get("acme");
        let limits = Limits {
            day_limit: 1000,
            day_remaining: 10,
            day_reset: 5000,
            minute_limit: 10,
            minute_remaining: 0,
            minute_reset: 20,
        };
        t.succeeded(Some(limits));
        assert_eq!(t.reserve_call(), Some(Block::Quota(Duration::from_secs(20))));
        assert_eq!(t.quota_exceeded(QuotaWindow::Day), Duration::from_secs(5000));
        tokio::time::advance(Duration::from_secs(5001)).await;
        assert_eq!(t.reserve_call(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_counted_against_the_reported_budget() {
        let t = tenants().get("acme");
        assert_eq!(t.reserve_call(), None, "the first call probes");
        assert_eq!(t.reserve_call(), Some(Block::Quota(PROBE_WAIT)), "one probe at a time");
        let limits = Limits {
            day_limit: 1000,
            day_remaining: 900,
            day_reset: 5000,
            minute_limit: 10,
            minute_remaining: 2,
            minute_reset: 30,
        };
        t.succeeded(Some(limits));
        assert_eq!((t.reserve_call(), t.reserve_call()), (None, None));
        assert_eq!(t.reserve_call(), Some(Block::Quota(Duration::from_secs(30))), "the budget is spent");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(t.reserve_call(), None, "a new window probes again");
    }

    mod no_panic {
        use super::*;
        use proptest::prelude::*;
        use serde_json::{json, Value};

        fn any_value() -> impl Strategy<Value = Value> {
            prop_oneof![
                any::<u64>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| json!(f)),
                "[0-9a-z-]{0,24}".prop_map(Value::from),
                Just(Value::Null),
                Just(json!([1])),
            ]
        }

        const KEYS: [&str; 6] =
            ["day_limit", "day_remaining", "day_reset", "minute_limit", "minute_remaining", "minute_reset"];

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
            /// Any `metadata.limits` block, followed by calls, quota refusals and pauses.
            #[test]
            fn any_limits_answer_goes_through_the_quota_logic_without_panicking(
                values in prop::collection::vec(any_value(), 6),
                drop_key in prop::option::of(0..6usize),
            ) {
                let mut block = serde_json::Map::new();
                for (i, (key, value)) in KEYS.iter().zip(values).enumerate() {
                    if drop_key != Some(i) {
                        block.insert(key.to_string(), value);
                    }
                }
                let limits = Limits::from_json(&Value::Object(block));
                let t = tenants().get("acme");
                let _ = t.reserve_call();
                t.succeeded(limits);
                for _ in 0..3 {
                    let _ = t.reserve_call();
                }
                t.call_failed();
                let _ = (t.quota_exceeded(QuotaWindow::Minute), t.quota_exceeded(QuotaWindow::Day));
                if let Some(Block::Quota(wait) | Block::Paused(wait)) = t.reserve_call() {
                    prop_assert!(wait <= Duration::from_secs(86_400), "{wait:?}");
                }
            }
        }
    }
}
