//! The message headers of docs/topology.md (dead-letter headers) and the ones deliver keeps between
//! retries, with typed reads that accept whichever integer type a broker or client wrote.

use lapin::types::{AMQPValue, FieldTable, LongString};

pub const ERROR_CLASS: &str = "x-bridge-error-class";
pub const ERROR: &str = "x-bridge-error";
pub const ATTEMPTS: &str = "x-bridge-attempts";
pub const DEAD_AT: &str = "x-bridge-dead-at";
pub const INTEGRATION: &str = "x-bridge-integration";
pub const KIND: &str = "x-bridge-kind";
/// Passes through the delayed retry queues so far (chooses the next tier).
pub const RETRIES: &str = "x-bridge-retries";
/// Set by `deliver dlq replay` (RFC 3339): `retry_for` counts from here, not from ingest, so a
/// replayed event gets its full retry budget again.
pub const REPLAYED_AT: &str = "x-bridge-replayed-at";
/// When deliver first parked the event for a paused integration (RFC 3339): after
/// `[deliver] park_for` it is dead-lettered as `tenant_paused` instead of parked again.
pub const PARKED_SINCE: &str = "x-bridge-parked-since";
/// Set on an event that may already be in CoMagic although no answer said so (an upload whose
/// answer was lost, a claim taken over from a holder that called, a redelivery), to when the doubt
/// arose in Unix milliseconds (`1`, as earlier releases wrote it: unknown). Once `[deliver] comagic_timeout` and
/// `doubt_margin` have passed since then, deliver asks CoMagic's report whether its ext_id is
/// there before it is sent again.
pub const IN_DOUBT: &str = "x-bridge-in-doubt";
/// Set (to 1) beside [`IN_DOUBT`] when the only doubt is that the broker delivered the event before
/// (its consumer died or stopped), no holder having marked it: deliver's shared ledger, which notes
/// every call, settles that doubt when it claims the event clean. Without it a doubt is kept until
/// CoMagic's report is asked.
pub const IN_DOUBT_REDELIVERED: &str = "x-bridge-in-doubt-redelivered";
/// Set (to 1) on an event parked until its account's quota window reset: meeting
/// `limit_exceeded` again after that is a failure like any other (an attempt, the retry tiers).
pub const QUOTA_WAITED: &str = "x-bridge-quota-waited";
/// Set by quorum queues: how often the message was delivered before.
pub const DELIVERY_COUNT: &str = "x-delivery-count";

/// Why a message is in the dead-letter queue (`x-bridge-error-class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadClass {
    InvalidEvent,
    ComagicRejected,
    RetriesExhausted,
    Poison,
    /// Its integration stayed paused (the account refusing the bridge) for `park_for`.
    TenantPaused,
}

impl DeadClass {
    pub const ALL: [DeadClass; 5] = [
        DeadClass::InvalidEvent,
        DeadClass::ComagicRejected,
        DeadClass::RetriesExhausted,
        DeadClass::Poison,
        DeadClass::TenantPaused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadClass::InvalidEvent => "invalid_event",
            DeadClass::ComagicRejected => "comagic_rejected",
            DeadClass::RetriesExhausted => "retries_exhausted",
            DeadClass::Poison => "poison",
            DeadClass::TenantPaused => "tenant_paused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

pub fn get_str(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

pub fn get_u64(headers: &FieldTable, key: &str) -> Option<u64> {
    let n: i128 = match headers.inner().get(key)? {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => (*v).into(),
        AMQPValue::Timestamp(v) => (*v).into(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).trim().parse().ok()?,
        _ => return None,
    };
    u64::try_from(n).ok()
}

pub fn set_str(headers: &mut FieldTable, key: &str, value: &str) {
    headers.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
}

pub fn set_u64(headers: &mut FieldTable, key: &str, value: u64) {
    headers.insert(key.into(), AMQPValue::LongLongInt(i64::try_from(value).unwrap_or(i64::MAX)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_of_any_width_and_strings_read_back() {
        let mut h = FieldTable::default();
        set_u64(&mut h, ATTEMPTS, 3);
        h.insert(DELIVERY_COUNT.into(), AMQPValue::LongInt(2));
        h.insert("neg".into(), AMQPValue::LongInt(-1));
        set_str(&mut h, ERROR_CLASS, DeadClass::Poison.as_str());
        assert_eq!(get_u64(&h, ATTEMPTS), Some(3));
        assert_eq!(get_u64(&h, DELIVERY_COUNT), Some(2));
        assert_eq!(get_u64(&h, "neg"), None);
        assert_eq!(get_u64(&h, "missing"), None);
        assert_eq!(get_str(&h, ERROR_CLASS).as_deref().and_then(DeadClass::parse), Some(DeadClass::Poison));
    }
}
