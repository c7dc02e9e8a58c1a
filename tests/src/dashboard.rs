//! The Grafana dashboard's panels as tests read them: a title and the PromQL of each target.

use std::path::PathBuf;

use serde_json::Value;

pub struct Panel {
    pub title: String,
    pub exprs: Vec<String>,
}

/// Every panel that queries something, in the dashboard's order.
pub fn panels() -> Vec<Panel> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards/verbox-bridge.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("the dashboard")).unwrap();
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|p| {
            let targets = p["targets"].as_array()?;
            let exprs = targets.iter().map(|t| t["expr"].as_str().expect("every target has an expr").to_owned());
            Some(Panel { title: p["title"].as_str().unwrap_or_default().to_owned(), exprs: exprs.collect() })
        })
        .collect()
}
