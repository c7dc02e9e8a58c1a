//! Every error mnemonic the Data API documents, in one table: its JSON-RPC code, how the bridge
//! treats it, and what a tenant's admin does about it. The classifier (`outcome.rs`), the
//! fixes shown by `deliver check` and the console ([`fix_for`]), the courier's question
//! whether a refused report could answer on a retry, and the test sandbox's answers all read it,
//! so none of them can disagree with another (docs/delivery.md says the same in words).

/// What the bridge does when an answer names the mnemonic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// The request itself is malformed (a bug, or an API change): retried whole, later.
    Request,
    /// A parameter error: about one item when its `field` points into the items (that item is
    /// dead-lettered, the rest sent), else about the request.
    Item,
    /// The tenant's account or token is wrong: the tenant pauses, its events wait.
    Pause,
    /// The account's points are spent: wait for the window to reset.
    Quota,
    /// The item is already there: counts as delivered.
    Duplicate,
    /// CoMagic's own trouble: retried, bounded by `retry_for`.
    Retry,
}

#[derive(Debug)]
pub struct Mnemonic {
    pub name: &'static str,
    /// The JSON-RPC error code CoMagic documents with it.
    pub code: i64,
    pub treatment: Treatment,
    /// One sentence for the admin, when there is something to do.
    pub fix: Option<&'static str>,
    /// A report refused like this will refuse a retry too (the account lacks the report, or the
    /// request does not suit it), although the upload may go through.
    pub report_never_answers: bool,
}

const TOKEN_FIX: Option<&str> =
    Some("the token was refused: create an API key in the CoMagic account (Settings → API) and set comagic_token");
const COMPONENT_FIX: Option<&str> = Some(
    "an upload component of the account is off: turn on upload_chats / upload_offline_messages in the CoMagic \
     account (or ask the account manager)",
);

const fn entry(name: &'static str, code: i64, treatment: Treatment, fix: Option<&'static str>) -> Mnemonic {
    Mnemonic { name, code, treatment, fix, report_never_answers: false }
}

/// A refusal of the account that a report shares with nothing else: it is asked no more.
const fn report_refused(name: &'static str, code: i64, fix: Option<&'static str>) -> Mnemonic {
    Mnemonic { name, code, treatment: Treatment::Pause, fix, report_never_answers: true }
}

use Treatment::{Duplicate, Item, Pause, Quota, Request, Retry};

pub const MNEMONICS: &[Mnemonic] = &[
    entry("parse_error", -32700, Request, None),
    entry("invalid_request", -32600, Request, None),
    entry("method_not_found", -32601, Request, None),
    entry("internal_error", -32603, Retry, None),
    entry("notifications_not_supported", -32099, Request, None),
    entry("access_token_expired", -32001, Pause, TOKEN_FIX),
    entry("access_token_blocked", -32001, Pause, TOKEN_FIX),
    entry("access_token_invalid", -32001, Pause, TOKEN_FIX),
    entry("auth_error", -32001, Pause, TOKEN_FIX),
    entry(
        "ip_not_whitelisted",
        -32003,
        Pause,
        Some("this server's IP address is not allowed: add it to the account's API IP list"),
    ),
    report_refused("forbidden", -32003, TOKEN_FIX),
    entry(
        "account_inactive",
        -32009,
        Pause,
        Some("the CoMagic account is inactive: ask the tenant to reactivate it, or set active = false"),
    ),
    report_refused("method_component_disabled", -32008, COMPONENT_FIX),
    report_refused("parameter_component_disabled", -32008, COMPONENT_FIX),
    entry(
        "limit_exceeded",
        -32029,
        Quota,
        Some("the account's API points are spent for now: delivery resumes when they reset"),
    ),
    entry("required_parameter_missed", -32602, Item, None),
    entry("invalid_parameter_value", -32602, Item, None),
    entry("unexpected_parameters", -32602, Item, None),
    entry("invalid_parameters_combination", -32602, Item, None),
    entry("data_type_error", -32602, Item, None),
    entry(
        "entity_not_found",
        -32602,
        Item,
        Some("an id in the settings (employee, campaign, site, source) is not in the account"),
    ),
    entry("duplicate_entity", -32602, Duplicate, None),
    entry(
        "campaign_is_inactive",
        -32602,
        Item,
        Some("the campaign is inactive: activate it in CoMagic or pick an active one"),
    ),
    entry("invalid_date_time", -32602, Item, None),
    entry("data_limit_exceeded", -32602, Item, None),
    entry(
        "tariff_restrictions",
        -32602,
        Item,
        Some("the account's tariff does not allow this upload: ask the account manager"),
    ),
    entry("already_in_use", -32602, Item, None),
];

/// What an admin does about `mnemonic`, if there is something to do: shown by `deliver check`,
/// the console's paused state and a test chat's outcome.
pub fn fix_for(mnemonic: &str) -> Option<&'static str> {
    lookup(mnemonic).and_then(|m| m.fix)
}

/// The table's entry for `name`, if CoMagic documents it.
pub fn lookup(name: &str) -> Option<&'static Mnemonic> {
    MNEMONICS.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_pause_has_a_fix() {
        for (i, m) in MNEMONICS.iter().enumerate() {
            assert!(MNEMONICS[..i].iter().all(|other| other.name != m.name), "{} twice", m.name);
            if m.treatment == Treatment::Pause {
                assert!(m.fix.is_some(), "{} pauses a tenant without saying what to do", m.name);
            }
        }
        assert!(lookup("made_up").is_none() && fix_for("made_up").is_none());
        assert!(fix_for("internal_error").is_none(), "nothing for the admin to do");
    }
}
