//! CoMagic wants account-local wall time, `YYYY-MM-DD hh:mm:ss`, never in the future.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::verbox::Message;

pub const FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// `dateTimeUTC` converted to the account's zone, else `dateTime` as is; capped at now.
pub fn comagic_time(m: &Message, tz: Tz, now: DateTime<Utc>) -> Option<String> {
    let local = m.utc_time.map(|utc| to_zone(utc, tz)).or(m.local_time)?;
    Some(format(local.min(to_zone(now.naive_utc(), tz))))
}

/// The time of last resort, for an event whose messages carry none: when ingest received it.
pub fn receipt_time(received_at: DateTime<Utc>, tz: Tz, now: DateTime<Utc>) -> String {
    format(to_zone(received_at.min(now).naive_utc(), tz))
}

fn to_zone(utc: NaiveDateTime, tz: Tz) -> NaiveDateTime {
    tz.from_utc_datetime(&utc).naive_local()
}

fn format(t: NaiveDateTime) -> String {
    t.format(FORMAT).to_string()
}
