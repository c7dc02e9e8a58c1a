//! CoMagic wants account-local wall time, `YYYY-MM-DD hh:mm:ss`, never in the future.
//!
//! Every time here is a [`VerboxTime`]: the webhook's were bounded when it was parsed, and our own
//! clocks (the receipt time, now) are brought into the same range, so a zone's offset added to any
//! of them cannot overflow whatever a sender or a clock said.

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;

use crate::verbox::{Horizon, Message, VerboxTime};

pub const FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// `dateTimeUTC` converted to the account's zone, else `dateTime` as is; capped at now. `None` when
/// the message has no time in range.
pub fn comagic_time(m: &Message, tz: Tz, now: DateTime<Utc>) -> Option<String> {
    let local = match m.utc_time {
        Some(utc) => utc.in_zone(tz),
        None => m.local_time?.get(),
    };
    Some(format(local.min(VerboxTime::now(now).in_zone(tz))))
}

/// The time of last resort, for an event whose messages carry none: when ingest received it (never
/// later than now, never before the range starts).
pub fn receipt_time(received_at: DateTime<Utc>, tz: Tz, now: DateTime<Utc>) -> String {
    let received = Horizon::at(now).clamp(received_at.naive_utc()).min(VerboxTime::now(now));
    format(received.in_zone(tz))
}

fn format(t: NaiveDateTime) -> String {
    t.format(FORMAT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_at_the_edges_of_the_calendar_give_times_in_range() {
        for clock in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            for tz in [chrono_tz::Asia::Tokyo, chrono_tz::America::New_York, chrono_tz::Pacific::Kiritimati] {
                let t = NaiveDateTime::parse_from_str(&receipt_time(clock, tz, clock), FORMAT).unwrap();
                assert!((1999..=10_000).contains(&chrono::Datelike::year(&t)), "{tz}: {t}");
            }
        }
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().to_utc();
        assert_eq!(receipt_time(DateTime::<Utc>::MIN_UTC, chrono_tz::UTC, now), "2000-01-01 00:00:00");
        assert_eq!(receipt_time(DateTime::<Utc>::MAX_UTC, chrono_tz::UTC, now), "2026-03-01 12:00:00");
    }
}
