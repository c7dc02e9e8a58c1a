//! Allowances per key (an integration, a peer address): a bucket of `burst` that refills one every
//! `refill`. For what costs somebody something each time it is done: a test chat is a real chat
//! in a real CoMagic account, so a script holding a token cannot fill an account with them; a
//! refused sign-in is a guess at a token, so an address that keeps guessing is slowed to one guess
//! per refill (a right token is never refused for it).
//! Memory is bounded: past `keys` keys, full buckets (keys that would be admitted anyway) are
//! dropped first, then the oldest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Whole allowances left as of `at`.
    left: u32,
    at: Instant,
}

pub struct Allowances {
    burst: u32,
    refill: Duration,
    keys: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Allowances {
    pub fn new(burst: u32, refill: Duration, keys: usize) -> Self {
        Allowances {
            burst: burst.max(1),
            refill: refill.max(Duration::from_millis(1)),
            keys,
            buckets: Mutex::default(),
        }
    }

    /// The bucket of `key` as of `now`: refilled for the time since it was last seen.
    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(bucket.at);
        let earned = u32::try_from(elapsed.as_millis() / self.refill.as_millis()).unwrap_or(u32::MAX);
        if earned == 0 {
            return bucket;
        }
        let left = bucket.left.saturating_add(earned).min(self.burst);
        // What was earned moves the clock on; a full bucket restarts it.
        let at = if left == self.burst { now } else { bucket.at + self.refill * earned };
        Bucket { left, at }
    }

    /// Takes one allowance of `key`, or says how long until one is back.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let full = Bucket { left: self.burst, at: now };
        let bucket = buckets.get(key).map_or(full, |b| self.refilled(*b, now));
        if bucket.left == 0 {
            buckets.insert(key.to_owned(), bucket);
            return Err((bucket.at + self.refill).saturating_duration_since(now));
        }
        buckets.insert(key.to_owned(), Bucket { left: bucket.left - 1, ..bucket });
        if buckets.len() > self.keys {
            self.forget(&mut buckets, now);
        }
        Ok(())
    }

    /// Drops the buckets that are full again, and if that is not enough the oldest.
    fn forget(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        buckets.retain(|_, b| self.refilled(*b, now).left < self.burst);
        while buckets.len() > self.keys {
            let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| k.clone()) else { break };
            buckets.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_one_per_refill_and_keys_apart() {
        let limits = Allowances::new(3, Duration::from_secs(60), 100);
        for _ in 0..3 {
            assert_eq!(limits.take("acme"), Ok(()));
        }
        assert_eq!(limits.take("acme"), Err(Duration::from_secs(60)));
        assert_eq!(limits.take("beta"), Ok(()), "another key has its own bucket");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(limits.take("acme"), Err(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limits.take("acme"), Ok(()));
        assert!(limits.take("acme").is_err(), "one came back, not the burst");
        tokio::time::advance(Duration::from_secs(600)).await;
        for _ in 0..3 {
            assert_eq!(limits.take("acme"), Ok(()), "refilled to the burst, no further");
        }
        assert!(limits.take("acme").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_and_an_exhausted_key_is_kept_before_a_full_one() {
        let limits = Allowances::new(1, Duration::from_secs(60), 2);
        limits.take("spent").unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        limits.take("busy").unwrap();
        limits.take("third").unwrap();
        let kept = limits.buckets.lock().unwrap().keys().cloned().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(kept.len(), 2);
        assert!(!kept.contains("spent"), "its bucket was full again: dropping it changes nothing");
        assert!(limits.take("busy").is_err(), "still limited");
    }
}
