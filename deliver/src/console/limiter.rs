//! Failed sign-ins, counted per peer address: after [`ALLOWED`] failures within [`WINDOW`], every
//! request from that address is answered 429 for [`BLOCKED_FOR`], a right token included (else a
//! blocked guesser could keep guessing and learn from the answers). At most [`TRACKED`] addresses
//! are remembered; when that many are, the stale ones go first, and an address with no room is
//! not limited. Behind a reverse proxy every client shares the proxy's address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub const ALLOWED: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
pub const BLOCKED_FOR: Duration = Duration::from_secs(300);
pub const TRACKED: usize = 10_000;

struct Failures {
    since: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

impl Failures {
    fn stale(&self, now: Instant) -> bool {
        match self.blocked_until {
            Some(until) => now >= until,
            None => now.duration_since(self.since) >= WINDOW,
        }
    }
}

#[derive(Default)]
pub struct Limiter {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl Limiter {
    /// How long `peer` is still refused, if it is.
    pub fn blocked(&self, peer: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.get(&peer).and_then(|f| f.blocked_until).filter(|until| *until > now).map(|until| until - now)
    }

    /// Counts a failed sign-in from `peer`.
    pub fn failed(&self, peer: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.get(&peer).is_some_and(|f| f.stale(now)) {
            failures.remove(&peer);
        }
        if !failures.contains_key(&peer) && failures.len() >= TRACKED {
            failures.retain(|_, f| !f.stale(now));
            if failures.len() >= TRACKED {
                return;
            }
        }
        let entry = failures.entry(peer).or_insert(Failures { since: now, count: 0, blocked_until: None });
        entry.count += 1;
        if entry.count >= ALLOWED && entry.blocked_until.is_none() {
            entry.blocked_until = Some(now + BLOCKED_FOR);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.failures.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[tokio::test(start_paused = true)]
    async fn ten_failures_in_a_minute_block_that_address_for_a_while() {
        let limiter = Limiter::default();
        for _ in 0..ALLOWED - 1 {
            limiter.failed(PEER);
        }
        assert_eq!(limiter.blocked(PEER), None, "nine failures are not yet blocked");
        limiter.failed(PEER);
        assert_eq!(limiter.blocked(PEER), Some(BLOCKED_FOR));
        assert_eq!(limiter.blocked(OTHER), None, "another address is not");
        tokio::time::advance(BLOCKED_FOR - Duration::from_secs(1)).await;
        assert_eq!(limiter.blocked(PEER), Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limiter.blocked(PEER), None);
        limiter.failed(PEER);
        assert_eq!(limiter.blocked(PEER), None, "the count starts again after the block");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_spread_over_more_than_a_minute_are_not_blocked() {
        let limiter = Limiter::default();
        for _ in 0..ALLOWED - 1 {
            limiter.failed(PEER);
        }
        tokio::time::advance(WINDOW).await;
        limiter.failed(PEER);
        assert_eq!(limiter.blocked(PEER), None);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_stale_addresses_make_room() {
        let limiter = Limiter::default();
        let address = |i: usize| IpAddr::V6(std::net::Ipv6Addr::from(i as u128));
        for i in 0..TRACKED + 5 {
            limiter.failed(address(i));
        }
        assert_eq!(limiter.tracked(), TRACKED);
        tokio::time::advance(WINDOW).await;
        limiter.failed(PEER);
        assert_eq!(limiter.tracked(), 1, "the stale ones went");
    }
}
