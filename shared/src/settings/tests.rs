use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn empty_file_gives_the_contract_defaults() {
    let s = Settings::from_toml("", &env(&[])).unwrap();
    assert_eq!(s.amqp.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
    assert_eq!(s.ingest.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(s.ingest.max_body_bytes, 1 << 20);
    assert_eq!(s.deliver.listen.to_string(), "0.0.0.0:9091");
    assert_eq!(s.deliver.batch_max, 50);
    assert_eq!(s.deliver.retry_for, Duration::from_secs(86_400));
    assert_eq!(s.deliver.park_for, Duration::from_secs(7 * 86_400));
    assert_eq!(s.integrations, PathBuf::from("integrations.toml"));
    assert_eq!(s.postgres_timeout, Duration::from_secs(5));
}

#[test]
fn environment_overrides_the_file() {
    let s = Settings::from_toml(
        "[amqp]\nurl = \"amqp://file\"\n[deliver]\nprefetch = 10\n",
        &env(&[("BRIDGE__AMQP__URL", "amqp://env"), ("BRIDGE__DELIVER__BATCH_MAX", "20"), ("OTHER", "x")]),
    )
    .unwrap();
    assert_eq!(s.amqp.url, "amqp://env");
    assert_eq!(s.deliver.batch_max, 20);
    assert_eq!(s.deliver.prefetch, 10);
}

#[test]
fn the_broker_is_one_url_or_a_list_of_nodes_from_the_file_or_the_environment() {
    let s = Settings::from_toml("[amqp]\nurl = \"amqp://one\"", &env(&[])).unwrap();
    assert_eq!(s.amqp.nodes(), vec!["amqp://one"]);
    let s = Settings::from_toml("[amqp]\nurls = [\"amqp://a\", \"amqps://b\"]", &env(&[])).unwrap();
    assert_eq!(s.amqp.nodes(), vec!["amqp://a", "amqps://b"]);
    let s = Settings::from_toml("", &env(&[("BRIDGE__AMQP__URLS", "amqp://u:p@a, amqp://u:p@b,")])).unwrap();
    assert_eq!(s.amqp.nodes(), vec!["amqp://u:p@a", "amqp://u:p@b"]);
    let e = Settings::from_toml("[amqp]\nurls = [\"amqp://a\", \"http://secret@b\"]", &env(&[])).unwrap_err();
    assert!(e.to_string().starts_with("amqp.urls[1]:"), "{e}");
    assert!(!e.to_string().contains("secret"), "{e}");
}

#[test]
fn errors_name_the_bad_key() {
    let err = |toml: &str, e: &[(&str, &str)]| Settings::from_toml(toml, &env(e)).unwrap_err().to_string();
    assert!(err("[deliver]\nbatch_max = 51", &[]).starts_with("deliver.batch_max:"));
    assert!(err("", &[("BRIDGE__DELIVER__BATCH_MAX", "0")]).starts_with("deliver.batch_max:"));
    assert!(err("[deliver]\nretry_for = \"forever\"", &[]).starts_with("deliver.retry_for:"));
    assert!(err("[amqp]\nurl = \"http://x\"", &[]).starts_with("amqp.url:"));
    assert!(err("[ingest]\nlisten = \"nowhere\"", &[]).starts_with("ingest.listen:"));
    assert!(err("[deliver]\nprefetch = \"many\"", &[]).starts_with("deliver.prefetch:"));
    assert!(err("[amqp]\nuri = \"amqp://x\"", &[]).contains("uri"));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("h").is_err());
    assert!(parse_duration("99999999999999999d").is_err(), "no overflow");
    assert!(parse_duration("3651d").is_err());
    assert_eq!(format_duration(Duration::from_secs(5400)), "90m");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
}

/// Every key `bridge.toml` takes, as `section.key`, from the defaults written back as TOML.
fn every_key() -> Vec<String> {
    let defaults = toml::Table::try_from(Settings::default()).expect("the defaults serialize");
    let mut keys = Vec::new();
    for (name, value) in defaults {
        match value {
            toml::Value::Table(section) => keys.extend(section.keys().map(|k| format!("{name}.{k}"))),
            _ => keys.push(name),
        }
    }
    keys
}

/// `bridge.example.toml` is the reference of the settings: it names every key, each with its
/// default (and a comment saying what it is and may be).
#[test]
fn the_example_file_holds_every_key_at_its_default() {
    let example: toml::Table = include_str!("../../../bridge.example.toml").parse().expect("the example parses");
    let defaults = toml::Table::try_from(Settings::default()).expect("the defaults serialize");
    assert!(every_key().len() >= 20);
    for key in every_key() {
        let (found, default) = match key.split_once('.') {
            Some((section, name)) => (example.get(section).and_then(|s| s.get(name)), &defaults[section][name]),
            None => (example.get(&key), &defaults[&key]),
        };
        assert_eq!(found, Some(default), "bridge.example.toml: `{key}` is missing or not its default");
    }
    assert_eq!(example, defaults, "bridge.example.toml holds a key the settings do not");
    Settings::from_toml(include_str!("../../../bridge.example.toml"), &HashMap::new()).expect("and loads");
}

#[test]
fn every_duration_size_and_count_is_range_checked_naming_its_key() {
    let cases = [
        "[amqp]\npublish_channels = 0",
        "[amqp]\npublish_timeout = \"11m\"",
        "[ingest]\nmax_body_bytes = 0",
        "[ingest]\nspool_max_bytes = 0",
        "[ingest]\nworkers = 100000",
        "[deliver]\nbatch_linger = \"2m\"",
        "[deliver]\nconcurrency = 0",
        "[deliver]\nretry_for = \"0s\"",
        "[deliver]\nretry_for = \"90d\"",
        "[deliver]\nledger_keep = \"1h\"",
        "[deliver]\npause_initial = \"500ms\"",
        "[deliver]\npause_max = \"1s\"",
        "[deliver]\npark_for = \"9s\"",
        "[deliver]\nledger_keep = \"99999999999999d\"",
        "postgres_timeout = \"100ms\"",
        "postgres_timeout = \"2m\"",
    ];
    for toml in cases {
        let key = match toml.trim_start_matches('[').split_once("]\n") {
            Some((section, rest)) => format!("{section}.{}", rest.split(" =").next().unwrap()),
            None => toml.split(" =").next().unwrap().to_owned(),
        };
        let error = Settings::from_toml(toml, &env(&[])).unwrap_err().to_string();
        assert!(error.starts_with(&format!("{key}:")), "{toml} gave {error}");
    }
}

#[test]
fn the_consoles_secret_prefix_never_covers_its_own_variables() {
    let with_prefix =
        |prefix: &str| Settings::from_toml(&format!("[console]\nsecret_env_prefix = \"{prefix}\"\n"), &env(&[]));
    for refused in ["BRIDGE_", "BRIDGE__", "BRIDGE_ADMIN", "BRI", "bridge_secret_", "A B_"] {
        let error = with_prefix(refused).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("console.secret_env_prefix"), "{refused}: {error}");
    }
    assert!(with_prefix("TENANT_SECRET_").is_ok());
    let defaults = Settings::from_toml("", &env(&[])).unwrap().console;
    assert!(defaults.env_name_allowed("BRIDGE_SECRET_ACME") && !defaults.env_name_allowed("BRIDGE_ADMIN_TOKENS"));
}
