use super::*;

/// Each secret key, mistyped in each way an edit can go wrong: the error (which the reload
/// logs) never shows the secret.
#[test]
fn a_typo_on_a_secret_key_never_shows_the_secret() {
    const SECRET: &str = "Sup3rSecretValue_0123456789";
    for key in ["webhook_token", "verbox_secret_key", "comagic_token"] {
        let others: String = ["webhook_token", "verbox_secret_key", "comagic_token"]
            .iter()
            .filter(|k| **k != key)
            .map(|k| format!("{k} = \"tok_0123456789abcdefghijkl\"\n"))
            .collect();
        let head =
            format!("[[integration]]\nid = \"acme\"\nemployee_id = 101\ndefault = {{ campaign_id = 1 }}\n{others}");
        let mut typos = vec![
            format!("{key} = \"{SECRET}\n"),
            format!("{key} = {SECRET}\n"),
            format!("{key} = \"{SECRET}\"\"\n"),
            format!("{key} = [\"{SECRET}\"]\n"),
            format!("{key} = \"{SECRET}\"\n{key} = \"{SECRET}\"\n"),
            format!("{key} = \"{SECRET}\"\nemployee_id = \"{SECRET}\"\n"),
            format!("{key} = \"{SECRET}\"\ntimezone = \"{SECRET}\"\n"),
        ];
        if key == "webhook_token" {
            typos.push(format!("{key} = \"{}!\"\n", &SECRET[..12]));
        }
        for typo in typos {
            let error = Integrations::from_toml(&format!("{head}{typo}"), &HashMap::new())
                .expect_err(&format!("refused: {typo}"))
                .to_string();
            assert!(!error.contains(&SECRET[..12]), "{key}: {error}");
        }
    }
}

pub const SAMPLE: &str = r#"
    [[integration]]
    id = "acme-shop"
    webhook_token = "tok_0123456789abcdefghijkl"
    comagic_token = "ctok"
    employee_id = 101
    default = { campaign_id = 5001 }
    [integration.messengers]
    telegram = { campaign_id = 5002 }
    whatsapp = { site_id = 77, source_id = 13 }
"#;

fn err(text: &str) -> String {
    Integrations::from_toml(text, &HashMap::new()).unwrap_err().to_string()
}

fn with(line: &str) -> String {
    SAMPLE.replace("employee_id = 101", &format!("employee_id = 101\n{line}"))
}

#[test]
fn sample_loads_with_defaults() {
    let set = Integrations::from_toml(SAMPLE, &HashMap::new()).unwrap();
    let i = set.get("acme-shop").unwrap();
    assert!(i.active && i.offline_enabled);
    assert_eq!(i.timezone, chrono_tz::Europe::Moscow);
    assert_eq!(i.comagic_api, "https://dataapi.comagic.ru/v2.0");
    assert_eq!(i.session_key, "comagic_session_id");
    assert_eq!(i.default, Target::Campaign { campaign_id: 5001 });
    assert_eq!(i.messengers["whatsapp"], Target::SiteSource { site_id: 77, source_id: 13 });
    assert!(!format!("{i:?}").contains("tok_0123"), "tokens never in Debug output");
}

#[test]
fn token_from_the_environment() {
    let text = SAMPLE.replace("comagic_token = \"ctok\"", "comagic_token_env = \"ACME_TOKEN\"");
    let env = HashMap::from([("ACME_TOKEN".to_string(), "from-env".to_string())]);
    let set = Integrations::from_toml(&text, &env).unwrap();
    assert_eq!(set.get("acme-shop").unwrap().comagic_token.expose(), "from-env");
    assert!(err(&text).starts_with("integration[0].comagic_token_env:"));
}

#[test]
fn every_secret_may_come_from_the_environment() {
    let text = with("verbox_secret_key_env = \"ACME_VERBOX\"")
        .replace("webhook_token = \"tok_0123456789abcdefghijkl\"", "webhook_token_env = \"ACME_HOOK\"");
    let env = HashMap::from([
        ("ACME_HOOK".to_string(), "hook_0123456789abcdefghijkl".to_string()),
        ("ACME_VERBOX".to_string(), "vsecret".to_string()),
    ]);
    let set = Integrations::from_toml(&text, &env).unwrap();
    let acme = set.get("acme-shop").unwrap();
    assert_eq!(acme.webhook_token.expose(), "hook_0123456789abcdefghijkl");
    assert_eq!(acme.verbox_secret_key.as_ref().unwrap().expose(), "vsecret");
    assert!(err(&text).starts_with("integration[0].webhook_token_env:"), "{}", err(&text));
    let both = text.replace("webhook_token_env", "webhook_token = \"tok_0123456789abcdefghijkl\"\nwebhook_token_env");
    assert!(Integrations::from_toml(&both, &env).unwrap_err().to_string().contains("not both"));
}

#[test]
fn each_bad_key_is_named() {
    assert!(err(&SAMPLE.replace("acme-shop", "Acme Shop")).starts_with("integration[0].id:"));
    assert!(err(&SAMPLE.replace("tok_0123456789abcdefghijkl", "short")).starts_with("integration[0].webhook_token:"));
    assert!(err(&with("timezone = \"Mars/Base\"")).starts_with("integration[0].timezone:"));
    assert!(err(&SAMPLE.replace("{ campaign_id = 5001 }", "{ campaign_id = 1, site_id = 2 }"))
        .starts_with("integration[0].default:"));
    assert!(err(&SAMPLE.replace("{ campaign_id = 5001 }", "{ site_id = 2 }")).starts_with("integration[0].default:"));
    assert!(err(&SAMPLE.replace("{ campaign_id = 5001 }", "{ campaign_id = -1 }"))
        .starts_with("integration[0].default.campaign_id:"));
    assert!(err(&SAMPLE.replace("telegram =", "icq =")).starts_with("integration[0].messengers.icq:"));
    assert!(err(&SAMPLE.replace("employee_id = 101", "employee_id = 0")).starts_with("integration[0].employee_id:"));
    assert!(err(&with("chat_events = []")).starts_with("integration[0].chat_events:"));
    for key in ["", "a b", "x\\\"</script><script>alert(1)</script>", &"k".repeat(65)] {
        let line = format!("session_key = {}", toml::Value::String(key.into()));
        assert!(err(&with(&line)).starts_with("integration[0].session_key:"), "{key}");
    }
    assert!(Integrations::from_toml(&with(&format!("session_key = \"{}\"", "k".repeat(64))), &HashMap::new()).is_ok());
    assert!(err(&format!("{SAMPLE}\n{SAMPLE}")).starts_with("integration[1].id:"));
    assert!(err(&with("colour = \"red\"")).contains("colour"));
    assert!(
        err(&SAMPLE.replace("employee_id = 101", "employee_id = \"boss\"")).starts_with("integration[0].employee_id:")
    );
}

#[test]
fn default_event_filters() {
    let set = Integrations::from_toml(SAMPLE, &HashMap::new()).unwrap();
    let i = set.get("acme-shop").unwrap();
    assert!(i.accepts_event(EventKind::Chat, Some("dialogFinished")));
    assert!(i.accepts_event(EventKind::Chat, None));
    assert!(!i.accepts_event(EventKind::Chat, Some("newMessageFromClient")));
    assert!(!i.accepts_event(EventKind::Chat, Some("clientFillFormPhone")));
    assert!(i.accepts_event(EventKind::Offline, Some("newOfflineQuestion")));
    assert!(i.accepts_event(EventKind::Offline, None));
    assert!(!i.accepts_event(EventKind::Offline, Some("dialogFinished")));
}

#[test]
fn configured_event_filters_replace_the_defaults() {
    let set = Integrations::from_toml(&with("chat_events = [\"closed\"]"), &HashMap::new()).unwrap();
    let i = set.get("acme-shop").unwrap();
    assert!(i.accepts_event(EventKind::Chat, Some("closed")));
    assert!(!i.accepts_event(EventKind::Chat, Some("dialogFinished")));
    assert!(!i.accepts_event(EventKind::Chat, None));
}

mod applying {
    use super::*;
    use crate::integrations::store::tests::form;
    use crate::integrations::store::{version_of, Versioned};

    fn stored(form: IntegrationForm) -> Versioned {
        Versioned { version: version_of(&form), form }
    }

    fn needing(id: &str, var: &str) -> IntegrationForm {
        IntegrationForm { comagic_token: None, comagic_token_env: Some(var.into()), ..form(id, 2) }
    }

    #[test]
    fn one_invalid_integration_leaves_the_others_applied_and_is_reported_with_why() {
        let bad = stored(needing("beta", "BRIDGE_SECRET_BETA"));
        let set = Integrations::applying(
            vec![stored(form("acme", 1)), bad.clone()].into(),
            &HashMap::new(),
            &Default::default(),
        );
        assert!(set.get("acme").is_some());
        assert_eq!(set.version("acme"), Some(version_of(&form("acme", 1)).as_str()));
        assert!(set.get("beta").is_none(), "never good: absent");
        let refused: Vec<_> = set.refused().collect();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, "beta");
        assert_eq!(refused[0].1.version, bad.version);
        assert_eq!(refused[0].1.reason, "comagic_token_env: environment variable BRIDGE_SECRET_BETA is not set");
        let outright = set.refused_outright("beta").expect("refused with nothing to keep");
        assert_eq!(outright.webhook_token, form("beta", 2).webhook_token, "its webhook can still be recognised");
        assert!(set.refused_outright("acme").is_none() && set.refused_outright("gamma").is_none());

        // Refused for a token anyone could know: nothing to recognise a webhook by.
        let placeholder = IntegrationForm { webhook_token: Some(Secret::new("changeme")), ..form("gamma", 3) };
        let set = Integrations::applying(vec![stored(placeholder)].into(), &HashMap::new(), &Default::default());
        assert_eq!(set.refused_outright("gamma").unwrap().webhook_token, None);
    }

    #[test]
    fn a_refused_integration_stays_at_its_last_good_version() {
        let good = stored(form("beta", 2));
        let last_good = Integrations::applying(vec![good.clone()].into(), &HashMap::new(), &Default::default());
        let set = Integrations::applying(
            vec![stored(needing("beta", "BRIDGE_SECRET_BETA"))].into(),
            &HashMap::new(),
            &last_good,
        );
        assert_eq!(set.version("beta"), Some(good.version.as_str()));
        assert!(set.get("beta").unwrap().comagic_token.expose() == "ct-secret-token-42", "the old form runs");
        assert_eq!(set.refused().count(), 1);
        assert!(set.refused_outright("beta").is_none(), "in force at its last good version");
        let fixed = Integrations::applying(vec![good].into(), &HashMap::new(), &set);
        assert_eq!(fixed.refused().count(), 0, "a refusal ends with the fix");
    }

    #[test]
    fn an_id_stored_twice_is_refused_and_keeps_its_last_good_version() {
        let last_good =
            Integrations::applying(vec![stored(form("acme", 1))].into(), &HashMap::new(), &Default::default());
        let twice = vec![stored(form("acme", 3)), stored(form("acme", 4)), stored(form("beta", 2))];
        let set = Integrations::applying(twice.clone().into(), &HashMap::new(), &last_good);
        assert_eq!(set.version("acme"), last_good.version("acme"));
        assert!(set.refused().any(|(id, r)| id == "acme" && r.reason.contains("used twice")));
        assert!(set.get("beta").is_some());
        let fresh = Integrations::applying(twice.into(), &HashMap::new(), &Default::default());
        assert!(fresh.get("acme").is_none());
    }

    #[test]
    fn a_reason_is_a_label_short_of_quotes_and_line_breaks() {
        let mut odd = form("acme", 1);
        let name = format!("te\"le\ngram{}", "x".repeat(300));
        odd.messengers.insert(name, TargetForm { campaign_id: Some(1), site_id: None, source_id: None });
        let set = Integrations::applying(vec![stored(odd)].into(), &HashMap::new(), &Default::default());
        let (_, refused) = set.refused().next().unwrap();
        assert!(refused.reason.starts_with("messengers.te'le gram"), "{}", refused.reason);
        assert_eq!(refused.reason.chars().count(), REASON_MAX);
        assert!(!refused.reason.contains(['"', '\n', '\\']));
    }
}
