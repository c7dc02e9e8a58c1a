//! Verbox's message times, bounded where they enter.
//!
//! A webhook's `dateTime` and `dateTimeUTC` are whatever the sender's clock and code wrote: chrono
//! reads `-262143-01-01 00:00:00` and unix seconds near `i64::MAX` as valid times, and arithmetic
//! on them later (a zone's offset, a report window's day either side) overflowed and panicked. A
//! [`VerboxTime`] is only ever built here, and only holds an instant CoMagic can take: from
//! [`EARLIEST`] up to [`FUTURE_MARGIN`] after now (and never past [`LATEST`], whatever the clock
//! says). Everything downstream takes it, so a day or a zone's offset added to one cannot overflow.
//!
//! A time outside that range is not kept: the message counts as undated and the event records the
//! field (`VerboxEvent::times_out_of_range`); mapping then falls back to the previous message's time
//! or the receipt time. Why not a 400, and why not the range's edge: docs/webhook-api.md.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use super::tree::Json;

/// The earliest time kept: CoMagic has no use for a chat before it existed, and a clock that says
/// 1970 (unix 0) or earlier is broken, not early.
pub const EARLIEST: NaiveDateTime = match NaiveDate::from_ymd_opt(2000, 1, 1) {
    Some(d) => d.and_time(chrono::NaiveTime::MIN),
    None => NaiveDateTime::MIN,
};

/// The latest time ever kept, whatever the clock: CoMagic writes years with four digits, and a day
/// short of the last one leaves room for any zone's offset and a report window's day.
pub const LATEST: NaiveDateTime = match NaiveDate::from_ymd_opt(9999, 12, 30) {
    Some(d) => d.and_time(match chrono::NaiveTime::from_hms_opt(23, 59, 59) {
        Some(t) => t,
        None => chrono::NaiveTime::MIN,
    }),
    None => NaiveDateTime::MAX,
};

/// How far past now a time may be and still be kept (mapping then caps it at now). A day covers a
/// local `dateTime` in the furthest zone east (UTC+14) and a sender's clock some hours fast; a time
/// later than that is a broken clock, not a chat that happened.
pub const FUTURE_MARGIN: TimeDelta = TimeDelta::days(1);

/// A time Verbox sent (UTC, or the account's wall time: the field says which), within
/// [`EARLIEST`]..=[`LATEST`] and at most [`FUTURE_MARGIN`] after the now it was read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VerboxTime(NaiveDateTime);

/// The range of times kept at one `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    latest: NaiveDateTime,
}

impl Horizon {
    /// Times up to `now` + [`FUTURE_MARGIN`], within [`EARLIEST`]..=[`LATEST`] even when the clock
    /// itself is outside them.
    pub fn at(now: DateTime<Utc>) -> Self {
        let latest = now.naive_utc().checked_add_signed(FUTURE_MARGIN).unwrap_or(LATEST);
        Horizon { latest: latest.clamp(EARLIEST, LATEST) }
    }

    /// `t` when it is in range, else `None`.
    pub fn admit(self, t: NaiveDateTime) -> Option<VerboxTime> {
        (EARLIEST..=self.latest).contains(&t).then_some(VerboxTime(t))
    }

    /// The nearest time in range: for our own clocks (receipt, now), which are never refused.
    pub fn clamp(self, t: NaiveDateTime) -> VerboxTime {
        VerboxTime(t.clamp(EARLIEST, self.latest))
    }
}

impl VerboxTime {
    /// `now` itself, brought into range.
    pub fn now(now: DateTime<Utc>) -> Self {
        Horizon::at(now).clamp(now.naive_utc())
    }

    pub fn get(self) -> NaiveDateTime {
        self.0
    }

    /// This UTC time as wall time in `tz`. Cannot fail in range (no zone is a day off UTC); the
    /// UTC time itself stands in if it ever did.
    pub fn in_zone(self, tz: Tz) -> NaiveDateTime {
        self.0.checked_add_offset(tz.offset_from_utc_datetime(&self.0).fix()).unwrap_or(self.0)
    }

    /// `delta` later, or earlier for a negative one; saturates at the ends of chrono's calendar.
    pub fn shifted(self, delta: TimeDelta) -> NaiveDateTime {
        let saturated = if delta < TimeDelta::zero() { NaiveDateTime::MIN } else { NaiveDateTime::MAX };
        self.0.checked_add_signed(delta).unwrap_or(saturated)
    }
}

impl std::fmt::Display for VerboxTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A message time that was read but not kept, being out of range: where it was, what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfRange {
    /// The field as sent, e.g. `dialog.messages[3].dateTimeUTC`.
    pub field: String,
    pub read: NaiveDateTime,
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` = {}", self.field, self.read)
    }
}

/// Reads the times of one webhook against one horizon, noting each one it does not keep.
pub(super) struct TimeReader {
    horizon: Horizon,
    pub out_of_range: Vec<OutOfRange>,
}

impl TimeReader {
    pub fn new(now: DateTime<Utc>) -> Self {
        TimeReader { horizon: Horizon::at(now), out_of_range: Vec::new() }
    }

    /// The time in `v` when it has one in range; a time out of range is noted under `field`, and
    /// text that is no time at all is absent, as it always was.
    pub fn read(&mut self, v: Option<&Json>, field: impl FnOnce() -> String) -> Option<VerboxTime> {
        let read = timestamp(v?)?;
        let kept = self.horizon.admit(read);
        if kept.is_none() {
            self.out_of_range.push(OutOfRange { field: field(), read });
        }
        kept
    }
}

/// Verbox sends `YYYY-MM-DD HH:MM:SS`; ISO forms and unix seconds are accepted too.
pub(super) fn timestamp(v: &Json) -> Option<NaiveDateTime> {
    match v {
        Json::Number(n) => unix_seconds(n.as_i64()?),
        Json::String(s) => {
            let s = s.trim();
            if let Some(t) = plain_date_time(s) {
                return Some(t);
            }
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.naive_utc());
            }
            ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .or_else(|| s.parse::<i64>().ok().and_then(unix_seconds))
        }
        _ => None,
    }
}

fn unix_seconds(seconds: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(seconds, 0).map(|t| t.naive_utc())
}

/// `YYYY-MM-DD HH:MM:SS` (or with `T`), read by hand. Verbox stamps every message with it twice, and
/// chrono's format interpreter took 9 of the 31 µs that parsing a 4 KB, 20-message dialog cost;
/// a string of that form has no offset, so reading it first changes no result. Anything else: `None`.
pub(super) fn plain_date_time(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    let shaped =
        b.len() == 19 && b[4] == b'-' && b[7] == b'-' && matches!(b[10], b' ' | b'T') && b[13] == b':' && b[16] == b':';
    if !shaped {
        return None;
    }
    let number = |at: std::ops::Range<usize>| {
        b[at].iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let date = NaiveDate::from_ymd_opt(number(0..4)? as i32, number(5..7)?, number(8..10)?)?;
    date.and_hms_opt(number(11..13)?, number(14..16)?, number(17..19)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().into()
    }

    fn naive(s: &str) -> NaiveDateTime {
        utc(s).naive_utc()
    }

    #[test]
    fn the_range_runs_from_2000_to_a_day_after_now() {
        let horizon = Horizon::at(utc("2026-03-01T12:00:00Z"));
        assert_eq!(horizon.admit(naive("1999-12-31T23:59:59Z")), None);
        assert_eq!(horizon.admit(EARLIEST).map(VerboxTime::get), Some(EARLIEST));
        assert!(horizon.admit(naive("1970-01-01T00:00:00Z")).is_none());
        assert!(horizon.admit(naive("2026-03-02T12:00:00Z")).is_some(), "now + 1 day is kept");
        assert!(horizon.admit(naive("2026-03-02T12:00:01Z")).is_none());
        assert!(horizon.admit(naive("2026-03-03T12:00:00Z")).is_none(), "now + 2 days is not");
        assert!(horizon.admit(NaiveDateTime::MIN).is_none());
        assert!(horizon.admit(NaiveDateTime::MAX).is_none());
    }

    #[test]
    fn a_clock_outside_the_calendar_still_gives_a_range() {
        for now in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::UNIX_EPOCH] {
            let horizon = Horizon::at(now);
            assert!(horizon.admit(EARLIEST).is_some(), "{now}");
            let clamped = horizon.clamp(NaiveDateTime::MAX).get();
            assert!((EARLIEST..=LATEST).contains(&clamped), "{now}: {clamped}");
            assert!((EARLIEST..=LATEST).contains(&VerboxTime::now(now).get()));
        }
        assert_eq!(Horizon::at(DateTime::<Utc>::MAX_UTC).admit(LATEST).map(VerboxTime::get), Some(LATEST));
    }

    #[test]
    fn every_zone_and_a_day_either_way_fit_at_both_ends() {
        for t in [VerboxTime(EARLIEST), VerboxTime(LATEST)] {
            for tz in chrono_tz::TZ_VARIANTS {
                let local = t.in_zone(tz);
                assert!((local - t.get()).abs() < TimeDelta::days(1), "{tz}");
            }
            assert_eq!(t.shifted(TimeDelta::days(-1)), t.get() - TimeDelta::days(1));
            assert_eq!(t.shifted(TimeDelta::days(1)), t.get() + TimeDelta::days(1));
        }
    }

    #[test]
    fn times_in_several_forms() {
        for (raw, want) in [
            (json!("2026-01-02 03:04:05"), "2026-01-02 03:04:05"),
            (json!("2026-01-02T03:04:05"), "2026-01-02 03:04:05"),
            (json!("2026-01-02T06:04:05+03:00"), "2026-01-02 03:04:05"),
            (json!(1767323045), "2026-01-02 03:04:05"),
            (json!("1767323045"), "2026-01-02 03:04:05"),
        ] {
            assert_eq!(timestamp_of(&raw).map(|t| t.to_string()).as_deref(), Some(want), "{raw}");
        }
        assert_eq!(timestamp_of(&json!("yesterday")), None);
    }

    fn timestamp_of(v: &Value) -> Option<NaiveDateTime> {
        timestamp(&serde_json::from_str(&v.to_string()).unwrap())
    }

    proptest::proptest! {
        #[test]
        fn plain_date_times_read_as_chrono_reads_them(
            y in 0i32..10_000, mo in 0u32..14, d in 0u32..33, h in 0u32..25, mi in 0u32..61, sec in 0u32..62, t in proptest::bool::ANY
        ) {
            let s = format!("{y:04}-{mo:02}-{d:02}{}{h:02}:{mi:02}:{sec:02}", if t { 'T' } else { ' ' });
            let format = if t { "%Y-%m-%dT%H:%M:%S" } else { "%Y-%m-%d %H:%M:%S" };
            match plain_date_time(&s) {
                Some(read) => proptest::prop_assert_eq!(Some(read), NaiveDateTime::parse_from_str(&s, format).ok()),
                // Only what chrono refuses too, or a leap second, which it keeps and we leave to it.
                None => proptest::prop_assert!(sec == 60 || NaiveDateTime::parse_from_str(&s, format).is_err(), "{}", s),
            }
        }

        #[test]
        fn plain_date_time_never_panics(s in ".{0,24}") {
            let _ = plain_date_time(&s);
        }
    }
}
