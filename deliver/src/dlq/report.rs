//! The dead letters as a table.

use bridge_shared::redact::cut;

use super::letter::DeadLetter;
use crate::table::table;

/// The list view: one dead letter per line, the error cut to fit a terminal.
pub fn letters(letters: &[DeadLetter]) -> String {
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|l| {
            vec![
                l.dead_at.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
                or_dash(&l.integration),
                l.kind_str().into(),
                class_of(l).into(),
                l.attempts.to_string(),
                l.event_id.clone().unwrap_or_else(|| "-".into()),
                cut(&l.error, 80),
            ]
        })
        .collect();
    table(&["DEAD AT (UTC)", "INTEGRATION", "KIND", "CLASS", "ATTEMPTS", "EVENT ID", "ERROR"], &rows)
}

pub fn class_of(letter: &DeadLetter) -> &'static str {
    letter.class.unwrap_or("unknown")
}

pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.into()
    }
}
