//! `deliver check`: each misconfiguration of an integration, found against the sandbox's accounts.

use bridge_tests::fixtures::{integration, WEBHOOK_TOKEN};
use bridge_tests::sandbox::{Account, Sandbox, SandboxConfig};

use crate::helpers::{comagic_token, deliver_command, write_config};

/// Integration `id` on account `id`, with `extra` lines; `token` overrides the CoMagic token.
fn entry(api: &str, id: &str, token: Option<&str>, extra: &str) -> String {
    integration(id, WEBHOOK_TOKEN, api, token.unwrap_or(&comagic_token(id)), extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misconfiguration_gets_its_own_line_and_exit_code_one() {
    let names = ["clean", "badtoken", "inactive", "noemployee", "nosite", "zone", "nocomponent"];
    let mut accounts: Vec<Account> = names.iter().map(|n| Account::sample(n, &comagic_token(n))).collect();
    accounts[2].campaigns[0].status = "inactive".into();
    accounts[3].employees[0].id = 102;
    accounts[5].timezone = "Asia/Yekaterinburg".into();
    accounts[6].components = vec!["upload_offline_messages".into()];
    let sandbox = Sandbox::start(SandboxConfig { account: accounts }).await.unwrap();
    let api = sandbox.url();
    let dir = tempfile::tempdir().unwrap();
    let integrations = [
        entry(api, "clean", None, "[integration.messengers]\ntelegram = { campaign_id = 5002 }"),
        entry(api, "badtoken", Some("ct-nobody-0123456789"), ""),
        entry(api, "inactive", None, ""),
        entry(api, "noemployee", None, ""),
        entry(api, "nosite", None, "default = { site_id = 79, source_id = 12 }"),
        entry(api, "zone", None, ""),
        entry(api, "nocomponent", None, ""),
    ]
    .concat();
    std::fs::write(dir.path().join("integrations.toml"), integrations).unwrap();
    let config = write_config(dir.path(), "amqp://127.0.0.1:1/%2f", "unused", 100, "");

    let all = deliver_command(&config, &["check", "--all"]).await;
    assert_eq!(all.code, 1, "{}{}", all.stdout, all.stderr);
    let line = |id: &str| -> Vec<String> {
        all.stdout.lines().filter(|l| l.starts_with(&format!("{id}:"))).map(str::to_owned).collect()
    };
    assert_eq!(line("clean"), ["clean: ok"]);
    let expect = [
        ("badtoken", "token was refused"),
        ("inactive", "default campaign 5001 (Site chats) is inactive"),
        ("noemployee", "employee_id = 101 is not an employee of the account: set it to one of 102 (Olga Operator)"),
        ("nosite", "default site 79 does not exist: use one of 77 (shop.example), 78 (blog.example)"),
        ("zone", "time zone is Asia/Yekaterinburg but timezone = \"Europe/Moscow\""),
        ("nocomponent", "component upload_chats is off"),
    ];
    let mut seen = std::collections::HashSet::new();
    for (id, says) in expect {
        let lines = line(id);
        assert_eq!(lines.len(), 1, "{id}: exactly one problem line: {lines:?}");
        assert!(lines[0].contains(says), "{id}: {}", lines[0]);
        assert!(seen.insert(lines[0].split_once(": ").unwrap().1.to_owned()), "distinct lines");
    }
    assert!(!all.stdout.contains(&comagic_token("clean")), "no token in the output");

    let clean = deliver_command(&config, &["check", "clean"]).await;
    assert_eq!((clean.code, clean.stdout.as_str()), (0, "clean: ok\n"), "{}", clean.stderr);

    let list = deliver_command(&config, &["check", "--list", "clean"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    for shown in ["Europe/Moscow", "Olga Operator", "Site chats", "shop.example", "Organic"] {
        assert!(list.stdout.contains(shown), "{shown} in {}", list.stdout);
    }
    sandbox.stop().await;
}

/// Operators' flags and settings out of range are refused with a message naming them (exit 2),
/// never a panic; an export that cannot reach the broker leaves no
/// file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_input_out_of_range_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("integrations.toml"), "").unwrap();
    let config = write_config(dir.path(), "amqp://127.0.0.1:1/%2f", "unused", 100, "");
    for (args, says) in [
        (&["dlq", "replay", "--rate", "1e-300"][..], "--rate"),
        (&["dlq", "replay", "--rate", "inf"][..], "--rate"),
        (&["dlq", "list", "--since", "99999999999999999d"][..], "--since"),
        (&["dlq", "list", "--since", "36500d"][..], "--since"),
    ] {
        let run = deliver_command(&config, args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(says) && !run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
    }
    let out = dir.path().join("dead.jsonl");
    let export = deliver_command(&config, &["dlq", "export", "--out", out.to_str().unwrap()]).await;
    assert_eq!(export.code, 1, "{}", export.stderr);
    assert!(!out.exists(), "no file before the broker answered");

    let bad = write_config(dir.path(), "amqp://127.0.0.1:1/%2f", "unused", 100, "ledger_keep = \"99999999999999d\"");
    let run = deliver_command(&bad, &["check", "--all"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("deliver.ledger_keep") && !run.stderr.contains("panicked"), "{}", run.stderr);
}
