//! `deliver events` for people: a page of journeys, or one journey's steps, as tables.

use super::query::Page;
use super::Journey;
use crate::table::table;

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".into())
}

/// One line per journey, newest first, and how to ask for the next page.
pub fn page_table(page: &Page) -> String {
    let rows: Vec<Vec<String>> = page
        .events
        .iter()
        .map(|j| {
            let delivered = j.steps.iter().rev().find(|s| s.outcome == super::record::DELIVERED);
            vec![
                j.summary.accepted_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                j.summary.event_id.clone(),
                or_dash(j.summary.dialog_id.clone()),
                or_dash(j.summary.contact.clone()),
                or_dash(j.end.clone()),
                j.last.clone(),
                or_dash(delivered.and_then(|s| s.rule.clone())),
                or_dash(delivered.and_then(|s| s.comagic_id).map(|id| id.to_string())),
                j.steps.len().to_string(),
            ]
        })
        .collect();
    let header = ["ACCEPTED (UTC)", "EVENT", "DIALOG", "CONTACT", "END", "LAST", "RULE", "COMAGIC ID", "STEPS"];
    let mut out = table(&header, &rows);
    if let Some(next) = &page.next {
        out += &format!("more: --before {}\n", next.to_text());
    }
    out
}

/// The journey's facts, then one line per step, oldest first.
pub fn journey_table(j: &Journey) -> String {
    let s = &j.summary;
    let mut out = format!(
        "event {} of {} ({}), accepted {} by {}\ndialog {}, contact {}\nend: {}, {} steps{}\n\n",
        s.event_id,
        s.integration,
        s.kind,
        s.accepted_at.to_rfc3339(),
        s.accepted_by.as_deref().unwrap_or("-"),
        s.dialog_id.as_deref().unwrap_or("-"),
        s.contact.as_deref().unwrap_or("-"),
        j.end.as_deref().unwrap_or("on its way"),
        j.steps.len(),
        if j.steps_dropped > 0 { format!(" ({} more left out)", j.steps_dropped) } else { String::new() },
    );
    let rows: Vec<Vec<String>> = j
        .steps
        .iter()
        .map(|t| {
            vec![
                t.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                t.outcome.clone(),
                or_dash(t.rule.clone()),
                or_dash(t.comagic_id.map(|id| id.to_string())),
                or_dash(t.class.clone().or_else(|| t.mnemonic.clone())),
                or_dash(t.tier.clone()),
                or_dash(t.replica.clone()),
                or_dash(t.error.clone()),
            ]
        })
        .collect();
    out += &table(&["AT (UTC)", "STEP", "RULE", "COMAGIC ID", "CLASS", "TIER", "REPLICA", "SAID"], &rows);
    out
}
