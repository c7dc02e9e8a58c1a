//! What to paste into Verbox and onto the site: printed by `ingest setup INTEGRATION`, shown by the
//! console.

use crate::integrations::Integration;

pub fn webhook_url(public_url: &str, integration: &Integration, kind: &str) -> String {
    format!(
        "{}/v1/verbox/{}/{kind}/{}",
        public_url.trim_end_matches('/'),
        integration.id,
        integration.webhook_token.expose()
    )
}

/// The instructions and the site script, as printed.
pub fn instructions(public_url: &str, integration: &Integration) -> String {
    let chat = webhook_url(public_url, integration, "chat");
    let offline = if integration.offline_enabled {
        format!(
            "2. Handler \"Новый оффлайн вопрос\" (new offline question), action Webhook, URL:\n   {}\n",
            webhook_url(public_url, integration, "offline")
        )
    } else {
        "2. Offline requests are off for this integration (offline_enabled = false): add no offline handler.\n".into()
    };
    let secret = if integration.verbox_secret_key.is_some() {
        "   Set the same secret key in Verbox as verbox_secret_key in integrations.toml.\n"
    } else {
        ""
    };
    format!(
        "Integration {id}\n\n\
         In the Verbox cabinet, Settings → Handlers (Обработчики):\n\
         1. Handler \"Диалог завершен\" (dialog finished), action Webhook, URL:\n   {chat}\n{offline}{secret}\n\
         Keep these URLs secret: the last part is the integration's token.\n\n\
         On every page of the site, after the CoMagic tracking code and the Verbox widget, add:\n\n\
         <script>\n{script}</script>\n",
        id = integration.id,
        script = site_script(&integration.session_key),
    )
}

/// Passes `Comagic.getSessionId()` into the chat as custom data: once both scripts have loaded,
/// and again on each client message (nested custom data set before the widget loaded is sometimes
/// lost). Does nothing when either script is missing.
pub fn site_script(session_key: &str) -> String {
    let key = serde_json::to_string(session_key).expect("a string serializes");
    include_str!("site_script.js").replace("\"__SESSION_KEY__\"", &key)
}
