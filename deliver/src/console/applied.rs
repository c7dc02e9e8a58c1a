//! Whether a save reached every running process. Each ingest and deliver process exports the
//! store's version of each integration it runs (`bridge_integration_version`) and each version it
//! refused and why (`bridge_integration_invalid`); "Saved" only says the store took it. A save is
//! applied when every process's page says it runs that version; a page that cannot be read is
//! "unknown", never "applied".

use std::collections::HashMap;

use serde_json::{json, Value};

/// What one process's metrics page said, or that it could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    pub page: String,
    /// `None`: the page did not answer.
    pub seen: Option<Versions>,
}

/// Versions of one process: integration → the version it runs; and → (version refused, why).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Versions {
    running: HashMap<String, String>,
    refused: HashMap<String, (String, String)>,
}

impl Versions {
    /// Takes one sample of a metrics page; samples of other metrics are ignored.
    pub fn add(&mut self, name: &str, labels: &HashMap<&str, &str>, value: f64) {
        let (Some(id), Some(version)) = (labels.get("integration"), labels.get("version")) else { return };
        if value <= 0.0 {
            return;
        }
        match name {
            "bridge_integration_version" => {
                self.running.insert(id.to_string(), version.to_string());
            }
            "bridge_integration_invalid" => {
                let reason = labels.get("reason").unwrap_or(&"").to_string();
                self.refused.insert(id.to_string(), (version.to_string(), reason));
            }
            _ => {}
        }
    }
}

/// `applied` of an integration's view: how many processes run `version` of `id`, and each that
/// does not, with the version it runs (null: none) and why (the refusal's reason; "unknown" for a
/// page that could not be read; null while it has simply not re-read the store yet). A tenant is
/// not shown where the pages are nor a refusal's reason (it names the operator's variables): only
/// that there is one.
pub fn applied(processes: &[Process], id: &str, version: &str, to_tenant: bool) -> Value {
    let mut behind = Vec::new();
    for process in processes {
        let Some(seen) = &process.seen else {
            behind.push(json!({"page": process.page, "version": null, "reason": "unknown: the page did not answer"}));
            continue;
        };
        let running = seen.running.get(id);
        if running.is_some_and(|v| v == version) {
            continue;
        }
        let reason = seen.refused.get(id).filter(|(refused, _)| refused == version).map(|(_, why)| why.as_str());
        let reason = reason.map(|why| if to_tenant { TOLD } else { why });
        behind.push(json!({"page": process.page, "version": running, "reason": reason}));
    }
    if to_tenant {
        behind.iter_mut().filter_map(Value::as_object_mut).for_each(|b| drop(b.remove("page")));
    }
    json!({
        "version": version,
        "processes": processes.len(),
        "have_it": processes.len() - behind.len(),
        "applied": !processes.is_empty() && behind.is_empty(),
        "behind": behind,
    })
}

/// A refusal's reason as a tenant reads it.
const TOLD: &str = "refused by that process: the operator is told (a setting only they can change)";

#[cfg(test)]
mod tests {
    use super::*;

    fn process(page: &str, running: &[(&str, &str)], refused: &[(&str, &str, &str)]) -> Process {
        let mut seen = Versions::default();
        for (id, v) in running {
            seen.add("bridge_integration_version", &HashMap::from([("integration", *id), ("version", *v)]), 1.0);
        }
        for (id, v, why) in refused {
            let labels = HashMap::from([("integration", *id), ("version", *v), ("reason", *why)]);
            seen.add("bridge_integration_invalid", &labels, 1.0);
        }
        Process { page: page.into(), seen: Some(seen) }
    }

    #[test]
    fn applied_only_when_every_process_runs_the_version() {
        let all = [process("i", &[("acme", "v2")], &[]), process("d", &[("acme", "v2")], &[])];
        let view = applied(&all, "acme", "v2", false);
        assert_eq!(view["applied"], true);
        assert_eq!(view["have_it"], 2);
        assert_eq!(applied(&[], "acme", "v2", false)["applied"], false, "no process read: not applied");
    }

    #[test]
    fn a_process_behind_says_what_it_runs_and_why_and_an_unread_page_is_unknown() {
        let all = [
            process("i", &[("acme", "v1")], &[("acme", "v2", "comagic_token_env: environment variable X is not set")]),
            process("d", &[("acme", "v1")], &[]),
            Process { page: "gone".into(), seen: None },
            process("d2", &[("acme", "v2")], &[]),
        ];
        let view = applied(&all, "acme", "v2", false);
        assert_eq!(view["applied"], false);
        assert_eq!((view["processes"].as_u64(), view["have_it"].as_u64()), (Some(4), Some(1)));
        let behind = view["behind"].as_array().unwrap();
        assert_eq!(
            behind[0],
            json!({"page": "i", "version": "v1", "reason": "comagic_token_env: environment variable X is not set"})
        );
        assert_eq!(behind[1], json!({"page": "d", "version": "v1", "reason": null}), "not re-read yet");
        assert!(behind[2]["reason"].as_str().unwrap().starts_with("unknown"));
        let to_tenant = applied(&all, "acme", "v2", true);
        let behind = to_tenant["behind"].as_array().unwrap();
        assert_eq!(behind[0], json!({"version": "v1", "reason": TOLD}), "no page, no variable's name");
        assert_eq!(behind[1], json!({"version": "v1", "reason": null}));
        assert_eq!(to_tenant["have_it"], view["have_it"]);
    }
}
