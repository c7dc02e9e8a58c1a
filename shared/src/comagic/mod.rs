//! The CoMagic / UIS Data API client: JSON-RPC 2.0 over one pooled reqwest client, `access_token`
//! inside `params`, every answer classified (see [`outcome`]).

pub mod limits;
pub mod mnemonics;
pub mod outcome;
pub mod report;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

pub use limits::Limits;
pub use outcome::{classify, Failure, QuotaWindow, Success};
pub use report::Uploaded;

use crate::event::EventKind;
use crate::mapping::Item;
use crate::secret::Secret;
use crate::telemetry::ComagicMetrics;

/// The real endpoints. Tests and demos point integrations at the sandbox instead.
pub const COMAGIC_URL: &str = "https://dataapi.comagic.ru/v2.0";
pub const UIS_URL: &str = "https://dataapi.uiscom.ru/v2.0";

/// CoMagic's cap on items per upload request.
pub const MAX_ITEMS_PER_CALL: usize = 50;

/// The most of an answer's body that is read: an upload's answer is a few kilobytes and a report
/// page of one batch's window well under a megabyte, so a longer body is not CoMagic speaking
/// (a proxy's error page, a hostile endpoint streaming for ever) and must not fill the memory.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

pub fn upload_method(kind: EventKind) -> (&'static str, &'static str) {
    match kind {
        EventKind::Chat => ("upload.chats", "chats"),
        EventKind::Offline => ("upload.offline_messages", "offline_messages"),
    }
}

#[derive(Debug, Clone)]
pub struct ComagicClient {
    http: reqwest::Client,
    metrics: ComagicMetrics,
    next_id: std::sync::Arc<AtomicU64>,
}

impl ComagicClient {
    pub fn new(timeout: Duration, metrics: ComagicMetrics) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .pool_max_idle_per_host(32)
            // The token travels in the body, which a 307 would carry to wherever it points: an
            // address is called as configured, or not at all.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("verbox-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend initialises");
        ComagicClient { http, metrics, next_id: std::sync::Arc::new(AtomicU64::new(1)) }
    }

    /// Uploads one batch (at most [`MAX_ITEMS_PER_CALL`] items) of one kind.
    pub async fn upload(
        &self,
        endpoint: &str,
        token: &Secret,
        kind: EventKind,
        items: &[&Item],
    ) -> Result<Success, Failure> {
        debug_assert!(items.len() <= MAX_ITEMS_PER_CALL);
        let (method, key) = upload_method(kind);
        self.metrics.batch_items.with_label_values(&[method]).observe(items.len() as f64);
        let mut params = Map::new();
        params.insert(key.into(), serde_json::to_value(items).expect("items serialize"));
        self.call(endpoint, token, method, params, Some(key)).await
    }

    /// One JSON-RPC call. `items_key` names the params array whose index an error's `field` refers to.
    pub async fn call(
        &self,
        endpoint: &str,
        token: &Secret,
        method: &'static str,
        mut params: Map<String, Value>,
        items_key: Option<&str>,
    ) -> Result<Success, Failure> {
        params.insert("access_token".into(), Value::String(token.expose().to_owned()));
        let body = json!({
            "jsonrpc": "2.0",
            "id": self.next_id.fetch_add(1, Ordering::Relaxed),
            "method": method,
            "params": params,
        });
        let started = Instant::now();
        let outcome = self.send(endpoint, &body, items_key).await;
        self.metrics.request_duration.with_label_values(&[method]).observe(started.elapsed().as_secs_f64());
        let result = match &outcome {
            Ok(_) => "ok",
            Err(failure) => failure.label(),
        };
        self.metrics.requests.with_label_values(&[method, result]).inc();
        outcome
    }

    async fn send(&self, endpoint: &str, body: &Value, items_key: Option<&str>) -> Result<Success, Failure> {
        let transport = |e: reqwest::Error| Failure::Transient {
            label: if e.is_connect() { outcome::CONNECT_FAILED } else { "transport" },
            // without_url: the URL is config, not a secret, but keep errors short and uniform.
            reason: e.without_url().to_string(),
        };
        let response = self
            .http
            .post(endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json; charset=UTF-8")
            .body(serde_json::to_vec(body).expect("a JSON value serializes"))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let bytes = read_bounded(response, MAX_ANSWER_BYTES).await.map_err(|e| match e {
            BodyError::Transport(e) => transport(e),
            BodyError::TooLarge => Failure::Transient {
                label: "bad_response",
                reason: format!("HTTP {status} with a body of more than {MAX_ANSWER_BYTES} bytes"),
            },
        })?;
        classify(status, &bytes, items_key)
    }
}

enum BodyError {
    Transport(reqwest::Error),
    TooLarge,
}

/// The body, chunk by chunk, refused past `limit` bytes (a `Content-Length` over it is refused
/// before any is read).
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
