//! What a tenant's admin does about a CoMagic error, by mnemonic: one sentence each, shown by
//! `deliver check`, the console's paused state and a test chat's outcome.

/// The fix for `mnemonic`, if it is one an admin can act on.
pub fn fix_for(mnemonic: &str) -> Option<&'static str> {
    Some(match mnemonic {
        "access_token_expired" | "access_token_blocked" | "access_token_invalid" | "auth_error" | "forbidden" => {
            "the token was refused: create an API key in the CoMagic account (Settings → API) and set comagic_token"
        }
        "ip_not_whitelisted" => "this server's IP address is not allowed: add it to the account's API IP list",
        "account_inactive" => "the CoMagic account is inactive: ask the tenant to reactivate it, or set active = false",
        "method_component_disabled" | "parameter_component_disabled" => {
            "an upload component of the account is off: turn on upload_chats / upload_offline_messages in the \
             CoMagic account (or ask the account manager)"
        }
        "campaign_is_inactive" => "the campaign is inactive: activate it in CoMagic or pick an active one",
        "entity_not_found" => "an id in the settings (employee, campaign, site, source) is not in the account",
        "limit_exceeded" => "the account's API points are spent for now: delivery resumes when they reset",
        "tariff_restrictions" => "the account's tariff does not allow this upload: ask the account manager",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_mnemonic_that_pauses_an_integration_has_a_fix() {
        for mnemonic in super::super::outcome::TENANT {
            assert!(super::fix_for(mnemonic).is_some(), "{mnemonic}");
        }
        assert!(super::fix_for("internal_error").is_none());
    }
}
