//! When to try again. The one place that knows the `backoff` crate (unmaintained, RUSTSEC-2025-0012;
//! see deny.toml), so it can be swapped without touching the callers.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;

/// The delayed retry tiers, each a queue whose TTL is the delay; the last one repeats until
/// `retry_for` has passed.
pub const RETRY_TIERS: [(&str, Duration); 4] = [
    ("10s", Duration::from_secs(10)),
    ("1m", Duration::from_secs(60)),
    ("10m", Duration::from_secs(600)),
    ("1h", Duration::from_secs(3600)),
];

/// A sequence of delays between attempts; `None` once the policy gives up.
#[derive(Debug)]
pub struct Delays(ExponentialBackoff);

impl Delays {
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.0.next_backoff()
    }
}

/// Short in-process retries of one call (a CoMagic request): 100 ms doubling to 2 s, ±50 % jitter,
/// for at most `max_elapsed` before the caller takes the slow path (the delayed retry queues).
pub fn short_retries(max_elapsed: Duration) -> Delays {
    Delays(ExponentialBackoff {
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_secs(2),
        randomization_factor: 0.5,
        multiplier: 2.0,
        max_elapsed_time: Some(max_elapsed),
        ..Default::default()
    })
}

/// Moving a message to a retry or dead queue while the publish fails: 200 ms doubling to 5 s with
/// jitter, for at most `max_elapsed`, then the message goes back to the broker.
pub fn move_retries(max_elapsed: Duration) -> Delays {
    Delays(ExponentialBackoff {
        initial_interval: Duration::from_millis(200),
        max_interval: Duration::from_secs(5),
        randomization_factor: 0.3,
        multiplier: 2.0,
        max_elapsed_time: Some(max_elapsed),
        ..Default::default()
    })
}

/// Reconnecting to the broker: never gives up, 200 ms doubling to 5 s with jitter.
pub fn reconnect_backoff() -> Delays {
    Delays(ExponentialBackoff {
        initial_interval: Duration::from_millis(200),
        max_interval: Duration::from_secs(5),
        randomization_factor: 0.3,
        multiplier: 2.0,
        max_elapsed_time: None,
        ..Default::default()
    })
}

/// The delayed retry queue for an event that has been through `previous_retries` of them:
/// 10 s, 1 min, 10 min, 1 h, then hourly.
pub fn retry_tier(previous_retries: u32) -> &'static str {
    let index = (previous_retries as usize).min(RETRY_TIERS.len() - 1);
    RETRY_TIERS[index].0
}

/// The retry queue to hold an event that must wait about `wait` without counting an attempt (a
/// paused integration, a spent day budget, a saturated lane): the longest tier not over `wait`,
/// at least the first; the event comes back early rather than late.
pub fn park_tier(wait: Duration) -> &'static str {
    RETRY_TIERS.iter().rev().find(|(_, delay)| *delay <= wait).unwrap_or(&RETRY_TIERS[0]).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parking_never_overshoots_the_wait_by_a_tier() {
        assert_eq!(park_tier(Duration::from_secs(1)), "10s");
        assert_eq!(park_tier(Duration::from_secs(300)), "1m");
        assert_eq!(park_tier(Duration::from_secs(600)), "10m");
        assert_eq!(park_tier(Duration::from_secs(86_400)), "1h");
    }

    #[test]
    fn tiers_escalate_then_stay_hourly() {
        let tiers: Vec<_> = (0..6).map(retry_tier).collect();
        assert_eq!(tiers, vec!["10s", "1m", "10m", "1h", "1h", "1h"]);
    }

    #[test]
    fn short_retries_give_up_and_reconnects_do_not() {
        let mut short = short_retries(Duration::ZERO);
        assert_eq!(short.next_delay(), None);
        let mut forever = reconnect_backoff();
        for _ in 0..100 {
            let d = forever.next_delay().expect("reconnect never gives up");
            assert!(d <= Duration::from_millis(6_500));
        }
    }
}
