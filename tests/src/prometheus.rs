//! A real Prometheus (Debian's `prometheus`) for the live dashboard test: scrapes the given targets
//! every second with the project's alert rules loaded, and answers queries over its HTTP API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::wait_for;

/// One scrape job: its name (the `job` label the rules and panels use), `host:port` and path.
pub struct Target<'a> {
    pub job: &'a str,
    pub address: String,
    pub path: &'a str,
}

pub struct LocalPrometheus {
    pub url: String,
    child: Child,
    http: reqwest::Client,
}

impl LocalPrometheus {
    /// Starts Prometheus on a free loopback port with `rules` loaded, its data in `dir`.
    pub async fn start(targets: &[Target<'_>], rules: &Path, dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let jobs: String = targets
            .iter()
            .map(|t| {
                format!(
                    "  - job_name: {}\n    metrics_path: {}\n    static_configs:\n      - targets: [\"{}\"]\n",
                    t.job, t.path, t.address
                )
            })
            .collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n{jobs}",
                rules.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("prometheus runs (Debian's prometheus package; scripts/check-deploy.sh installs it)");
        let prometheus =
            LocalPrometheus { url: format!("http://127.0.0.1:{port}"), child, http: reqwest::Client::new() };
        wait_for("Prometheus to answer", Duration::from_secs(30), || async {
            let r = prometheus.http.get(format!("{}/-/ready", prometheus.url)).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        prometheus
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.url), query).expect("a valid URL");
        let r = self.http.get(url).send().await.expect("Prometheus answers");
        let body: Value = r.json().await.expect("a JSON answer");
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The series an instant query returns now (an error in the query fails the test).
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        self.get("/api/v1/query", &[("query", expr)]).await["result"].as_array().cloned().unwrap_or_default()
    }

    /// Each active alert's name and state (`pending` or `firing`).
    pub async fn alerts(&self) -> Vec<(String, String)> {
        let data = self.get("/api/v1/alerts", &[]).await;
        data["alerts"]
            .as_array()
            .map(|alerts| {
                alerts
                    .iter()
                    .map(|a| {
                        let name = a["labels"]["alertname"].as_str().unwrap_or_default().to_owned();
                        (name, a["state"].as_str().unwrap_or_default().to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The names of every rule loaded, so a test knows the rules file was read.
    pub async fn rule_names(&self) -> Vec<String> {
        let data = self.get("/api/v1/rules", &[]).await;
        data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until the alert `name` is pending or firing.
    pub async fn wait_alert(&self, name: &str, deadline: Duration) {
        wait_for(&format!("alert {name} pending or firing"), deadline, || async {
            self.alerts().await.iter().any(|(n, _)| n == name).then_some(())
        })
        .await;
    }
}

impl Drop for LocalPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
