//! `ingest setup`: the URLs to paste into Verbox and a site script that is correct JavaScript.

use std::process::Command;

use bridge_tests::fixtures::WEBHOOK_TOKEN;

use crate::helpers::write_config;

fn setup_output(integration: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let config =
        write_config(dir.path(), "amqp://127.0.0.1:5672/%2f", "unused", "public_url = \"https://hooks.example.com/\"");
    let output = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["--config", config.to_str().unwrap(), "setup", integration])
        .output()
        .unwrap();
    (output.status.success(), String::from_utf8(output.stdout).unwrap() + &String::from_utf8(output.stderr).unwrap())
}

#[test]
fn prints_both_urls_and_the_steps() {
    let (ok, out) = setup_output("acme");
    assert!(ok, "{out}");
    assert!(out.contains(&format!("https://hooks.example.com/v1/verbox/acme/chat/{WEBHOOK_TOKEN}")), "{out}");
    assert!(out.contains(&format!("https://hooks.example.com/v1/verbox/acme/offline/{WEBHOOK_TOKEN}")));
    assert!(out.contains("Диалог завершен") && out.contains("Новый оффлайн вопрос"));
    let (ok, guarded) = setup_output("guarded");
    assert!(ok);
    assert!(!guarded.contains("/offline/"), "offline is off for guarded");
    let (ok, unknown) = setup_output("nobody");
    assert!(!ok && unknown.contains("no integration `nobody`"));
}

/// Runs the generated script in node with stub `Comagic` and `Verbox` objects, loaded in either
/// order, and checks the `setClientInfo` calls.
#[test]
fn the_site_script_runs_in_node_with_either_load_order() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("site.js");
    std::fs::write(&script, bridge_shared::setup::site_script("comagic_session_id")).unwrap();
    let check = Command::new("node")
        .arg("--check")
        .arg(&script)
        .output()
        .expect("node is installed (scripts/test.sh installs it)");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let harness = dir.path().join("harness.js");
    std::fs::write(&harness, include_str!("site_script_harness.js")).unwrap();
    for order in ["comagic-first", "verbox-first", "neither"] {
        let run = Command::new("node").arg(&harness).arg(&script).arg(order).output().unwrap();
        assert!(
            run.status.success(),
            "{order}: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}
