//! Scripted faults: what a test asks the sandbox to do instead of answering normally.

use std::time::Duration;

use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rpc::RpcError;
use super::Shared;

/// A scripted fault, applied to the next `calls` calls (all calls while `calls` is absent) of the
/// account named `account` (of every account when absent).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub account: Option<String>,
    pub kind: FaultKind,
    pub calls: Option<u64>,
    /// For `latency`: the added delay; for `answer_lost`: how long the answer is held before it
    /// is lost; for `stored_late`: how long the call hangs before it is carried out.
    #[serde(default)]
    pub latency_ms: u64,
    /// For `error`: the mnemonic to answer with (its documented code is used), the field, and the
    /// message (CoMagic's own text otherwise; real ones may quote what was sent).
    pub mnemonic: Option<String>,
    pub field: Option<String>,
    pub message: Option<String>,
    /// For `body`: the JSON answered with HTTP 200 instead of the real result (an odd answer,
    /// e.g. a success whose `metadata.limits` makes no sense); nothing is stored.
    pub body: Option<Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    #[default]
    Latency,
    Http500,
    Hang,
    Error,
    Body,
    /// The call is carried out (an upload is stored), then its answer is lost: HTTP 502 after
    /// `latency_ms`, as a gateway that timed out waiting for CoMagic would answer.
    AnswerLost,
    /// The call hangs for `latency_ms`, then is carried out (an upload is stored) whether or not
    /// the client is still waiting, as CoMagic may finish a request its client gave up on.
    StoredLate,
}

/// What the handler does after the faults were consulted.
pub(super) enum Faulted {
    None,
    Respond(HttpResponse, &'static str),
    Error(RpcError),
    /// Carry the call out, then answer 502 after this long.
    LoseAnswer(Duration),
    /// Carry the call out after this long, the client gone or not.
    StoreLate(Duration),
}

/// Consumes one call of each matching fault; latency faults add up, the first other fault wins.
pub(super) fn take_faults(state: &Shared, account: Option<&str>) -> (Duration, Faulted) {
    let mut state = state.lock().unwrap();
    let mut latency = Duration::ZERO;
    let mut faulted = Faulted::None;
    for fault in state.faults.iter_mut() {
        let applies = fault.calls != Some(0) && fault.account.as_deref().is_none_or(|a| Some(a) == account);
        if !applies || (fault.kind != FaultKind::Latency && !matches!(faulted, Faulted::None)) {
            continue;
        }
        if let Some(n) = fault.calls.as_mut() {
            *n -= 1;
        }
        match fault.kind {
            FaultKind::Latency => latency += Duration::from_millis(fault.latency_ms),
            FaultKind::Http500 => {
                faulted = Faulted::Respond(HttpResponse::InternalServerError().body("injected 500"), "http_500")
            }
            FaultKind::AnswerLost => faulted = Faulted::LoseAnswer(Duration::from_millis(fault.latency_ms)),
            FaultKind::StoredLate => faulted = Faulted::StoreLate(Duration::from_millis(fault.latency_ms)),
            FaultKind::Hang => faulted = Faulted::Respond(HttpResponse::Ok().finish(), "hang"),
            FaultKind::Body => {
                let body = fault.body.clone().unwrap_or(Value::Null);
                faulted = Faulted::Respond(HttpResponse::Ok().json(body), "body");
            }
            FaultKind::Error => {
                let mnemonic = fault.mnemonic.as_deref().unwrap_or("internal_error");
                let mut e = RpcError::by_mnemonic(mnemonic)
                    .unwrap_or_else(|| RpcError::new("internal_error", "unknown injected mnemonic"));
                e.field = fault.field.clone();
                if let Some(message) = &fault.message {
                    e.message = message.clone();
                }
                faulted = Faulted::Error(e);
            }
        }
    }
    state.faults.retain(|f| f.calls != Some(0));
    (latency, faulted)
}
