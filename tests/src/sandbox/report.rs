//! `get.chats_report` and `get.offline_messages_report`: the items the sandbox stored, filtered as
//! our reading of the documentation has it (dates required, `filter` of `{field, operator, value}`
//! conditions, alone or joined by `condition`). Strict, so a client that strays from that reading
//! gets an error, not a silent empty report.

use std::time::Duration;

use chrono::NaiveDateTime;
use serde_json::{json, Map, Value};

use super::rpc::RpcError;
use super::validate::{Upload, DATE_FORMAT as DATE_TIME};
use super::AccountState;

const PARAMS: [&str; 8] = ["access_token", "user_id", "date_from", "date_till", "fields", "filter", "limit", "offset"];

fn date(params: &Map<String, Value>, key: &str) -> Result<NaiveDateTime, RpcError> {
    let text = params.get(key).ok_or_else(|| RpcError::missing(key))?.as_str().unwrap_or("");
    NaiveDateTime::parse_from_str(text, DATE_TIME)
        .map_err(|_| RpcError::new("invalid_date_time", "Expected YYYY-MM-DD hh:mm:ss").at(key))
}

/// The ext_ids a filter accepts (`None`: every item).
fn wanted_ext_ids(filter: Option<&Value>) -> Result<Option<Vec<String>>, RpcError> {
    let Some(filter) = filter else { return Ok(None) };
    let bad = |message: &str| RpcError::invalid_value("filter", message);
    let conditions: Vec<&Value> = match filter.get("filters") {
        Some(Value::Array(list)) => {
            if filter.get("condition").and_then(Value::as_str) != Some("or") && list.len() > 1 {
                return Err(bad("several ext_id conditions only make sense joined by condition \"or\""));
            }
            list.iter().collect()
        }
        Some(_) => return Err(bad("filters must be an array")),
        None => vec![filter],
    };
    conditions
        .into_iter()
        .map(|c| match (c.get("field").and_then(Value::as_str), c.get("operator").and_then(Value::as_str)) {
            (Some("ext_id"), Some("=")) => {
                c.get("value").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| bad("value must be a string"))
            }
            _ => Err(bad("the sandbox filters by {\"field\": \"ext_id\", \"operator\": \"=\"} only")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

pub(super) fn report(account: &AccountState, kind: Upload, params: &Map<String, Value>) -> Result<Value, RpcError> {
    if let Some(unexpected) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(
            RpcError::new("unexpected_parameters", format!("Unexpected parameter {unexpected}")).at(unexpected.clone())
        );
    }
    let (from, till) = (date(params, "date_from")?, date(params, "date_till")?);
    if from > till {
        return Err(RpcError::invalid_value("date_till", "date_till is before date_from"));
    }
    let wanted = wanted_ext_ids(params.get("filter"))?;
    // A report may list an upload only some time after it was stored (`report_lag_ms`).
    let lag = Duration::from_millis(account.config.report_lag_ms);
    let date_key = match kind {
        Upload::Chats => "start_date_time",
        Upload::OfflineMessages => "date_time",
    };
    let rows = account
        .stored
        .iter()
        .filter(|(k, at, _)| *k == kind && at.elapsed() >= lag)
        .filter(|(_, _, item)| {
            let at = item
                .get(date_key)
                .and_then(Value::as_str)
                .and_then(|t| NaiveDateTime::parse_from_str(t, DATE_TIME).ok());
            at.is_some_and(|at| from <= at && at <= till)
        })
        .filter(|(_, _, item)| {
            let ext_id = item.get("ext_id").and_then(Value::as_str);
            wanted.as_ref().is_none_or(|w| ext_id.is_some_and(|id| w.iter().any(|x| x == id)))
        })
        .map(|(_, _, item)| json!({"id": item["id"], "ext_id": item.get("ext_id"), date_key: item[date_key]}))
        .collect();
    Ok(Value::Array(rows))
}
