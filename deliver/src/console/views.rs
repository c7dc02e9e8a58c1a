//! What the admin API shows of an integration: its form with every secret masked (the last four
//! characters at most), and its webhook URLs masked the same way, since the token is in them.

use bridge_shared::integrations::store::Versioned;
use bridge_shared::integrations::Integration;
use bridge_shared::secret::Secret;
use serde_json::{json, Value};

const SECRET_FIELDS: [&str; 3] = ["webhook_token", "verbox_secret_key", "comagic_token"];

/// `…1a2b` for a secret long enough that four characters say nothing; `set` otherwise.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() >= 16 {
        format!("…{}", chars[chars.len() - 4..].iter().collect::<String>())
    } else {
        "set".into()
    }
}

/// The form as JSON, each secret replaced by its mask.
pub fn masked_form(stored: &Versioned) -> Value {
    let mut form = serde_json::to_value(&stored.form).expect("a form serialises");
    for field in SECRET_FIELDS {
        if let Some(value) = form.get_mut(field) {
            *value = json!(value.as_str().map(mask));
        }
    }
    form
}

/// The integration with its webhook token masked, for text that would print it.
pub fn with_masked_token(integration: &Integration) -> Integration {
    let mut shown = integration.clone();
    shown.webhook_token = Secret::new(mask(integration.webhook_token.expose()));
    shown
}

/// `{chat, offline}` webhook URLs; `offline` is null when offline requests are off.
pub fn webhook_urls(public_url: &str, integration: &Integration) -> Value {
    let url = |kind| bridge_shared::setup::webhook_url(public_url, integration, kind);
    json!({
        "chat": url("chat"),
        "offline": integration.offline_enabled.then(|| url("offline")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_shows_four_characters_of_a_long_secret_only() {
        assert_eq!(mask("tok_0123456789abcdefghijkl"), "…ijkl");
        assert_eq!(mask("short-secret"), "set");
    }
}
