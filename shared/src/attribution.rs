//! Which ad session, campaign or source an event is filed under (docs/attribution-and-mapping.md).

use crate::integrations::{Integration, Target};
use crate::verbox::{positive_integer, VerboxEvent};

/// The rule that decided, recorded in the delivery log line and `bridge_deliver_attribution_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    Session,
    Messenger,
    Default,
    /// CoMagic rejected the session; rule 2 or 3 was applied instead.
    SessionFallback,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Session => "session",
            Rule::Messenger => "messenger",
            Rule::Default => "default",
            Rule::SessionFallback => "session_fallback",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attributed {
    Session { visitor_session_id: u64 },
    Target(Target),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribution {
    pub rule: Rule,
    pub to: Attributed,
}

/// Rule 1: the session id the site script put in `customData`; else rules 2 and 3.
pub fn attribute(integration: &Integration, event: &VerboxEvent) -> Attribution {
    match event.client.custom_data.get(&integration.session_key).and_then(positive_integer) {
        Some(visitor_session_id) => Attribution { rule: Rule::Session, to: Attributed::Session { visitor_session_id } },
        None => without_session(integration, event, false),
    }
}

/// Rules 2 and 3, for an event with no session or whose session CoMagic refused.
pub fn without_session(integration: &Integration, event: &VerboxEvent, session_refused: bool) -> Attribution {
    let (rule, target) = match integration.messenger_target(event.client.channel.as_deref()) {
        Some(target) => (Rule::Messenger, target),
        None => (Rule::Default, integration.default),
    };
    Attribution { rule: if session_refused { Rule::SessionFallback } else { rule }, to: Attributed::Target(target) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::{tests::SAMPLE, Integrations};
    use serde_json::json;

    fn event(client: serde_json::Value) -> VerboxEvent {
        crate::verbox::parse(json!({"data": {"client": client}}).to_string().as_bytes()).unwrap()
    }

    fn acme() -> std::sync::Arc<Integration> {
        Integrations::from_toml(SAMPLE, &Default::default()).unwrap().get("acme-shop").unwrap().clone()
    }

    #[test]
    fn session_wins_over_everything() {
        let a = attribute(
            &acme(),
            &event(json!({"customData": {"comagic_session_id": "987"}, "source": {"type": {"id": "telegram"}}})),
        );
        assert_eq!(a, Attribution { rule: Rule::Session, to: Attributed::Session { visitor_session_id: 987 } });
    }

    #[test]
    fn a_bad_session_value_is_no_session() {
        for bad in [json!("0"), json!("abc"), json!(-3), json!({"id": 5})] {
            let a = attribute(&acme(), &event(json!({"customData": {"comagic_session_id": bad}})));
            assert_eq!(a.rule, Rule::Default, "{bad}");
        }
    }

    #[test]
    fn mapped_messenger_gets_its_target() {
        let a = attribute(&acme(), &event(json!({"source": {"type": {"id": "WhatsApp"}}})));
        assert_eq!(
            a,
            Attribution {
                rule: Rule::Messenger,
                to: Attributed::Target(Target::SiteSource { site_id: 77, source_id: 13 })
            }
        );
    }

    #[test]
    fn unmapped_messenger_and_widget_get_the_default() {
        for client in
            [json!({"source": {"type": {"id": "viber"}}}), json!({"source": {"type": {"id": "widget"}}}), json!({})]
        {
            let a = attribute(&acme(), &event(client.clone()));
            assert_eq!(
                a,
                Attribution { rule: Rule::Default, to: Attributed::Target(Target::Campaign { campaign_id: 5001 }) },
                "{client}"
            );
        }
    }

    #[test]
    fn refused_session_falls_back_to_messenger_or_default() {
        let telegram = event(json!({"customData": {"comagic_session_id": 5}, "source": {"type": {"id": "telegram"}}}));
        let a = without_session(&acme(), &telegram, true);
        assert_eq!(
            a,
            Attribution { rule: Rule::SessionFallback, to: Attributed::Target(Target::Campaign { campaign_id: 5002 }) }
        );
        let widget = event(json!({"customData": {"comagic_session_id": 5}}));
        assert_eq!(
            without_session(&acme(), &widget, true).to,
            Attributed::Target(Target::Campaign { campaign_id: 5001 })
        );
    }
}
