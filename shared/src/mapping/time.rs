//! CoMagic wants account-local wall time, `YYYY-MM-DD hh:mm:ss`, never in the future.
//!
//! Every conversion here is checked: a webhook may carry a time at the edge of what chrono can
//! represent (unix seconds near `i64::MAX` read as year 262,143), and adding a zone's offset to it
//! overflows. Such a time is treated as absent, never as a reason to panic.

use chrono::{DateTime, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::verbox::Message;

pub const FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// `dateTimeUTC` converted to the account's zone, else `dateTime` as is; capped at now. `None` when
/// the message has no time that can be shown in the zone.
pub fn comagic_time(m: &Message, tz: Tz, now: DateTime<Utc>) -> Option<String> {
    let local = match m.utc_time {
        Some(utc) => to_zone(utc, tz),
        None => m.local_time,
    }?;
    Some(format(cap_at_now(local, tz, now)))
}

/// The time of last resort, for an event whose messages carry none: when ingest received it.
pub fn receipt_time(received_at: DateTime<Utc>, tz: Tz, now: DateTime<Utc>) -> String {
    let utc = received_at.min(now).naive_utc();
    format(to_zone(utc, tz).unwrap_or(utc))
}

fn cap_at_now(local: NaiveDateTime, tz: Tz, now: DateTime<Utc>) -> NaiveDateTime {
    let utc = now.naive_utc();
    local.min(to_zone(utc, tz).unwrap_or(utc))
}

fn to_zone(utc: NaiveDateTime, tz: Tz) -> Option<NaiveDateTime> {
    utc.checked_add_offset(tz.offset_from_utc_datetime(&utc).fix())
}

fn format(t: NaiveDateTime) -> String {
    t.format(FORMAT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_at_the_edges_of_the_calendar_are_absent_not_a_panic() {
        assert_eq!(to_zone(NaiveDateTime::MAX, chrono_tz::Asia::Tokyo), None);
        assert_eq!(to_zone(NaiveDateTime::MIN, chrono_tz::America::New_York), None);
        assert!(to_zone(NaiveDateTime::MAX, chrono_tz::UTC).is_some());
    }
}
