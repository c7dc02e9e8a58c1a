//! One broker session: a named connection to one node of the cluster, with the topology declared
//! and a confirm-mode publisher pool, established with backoff until it works or the process stops.
//!
//! The nodes are tried in turn, starting after the one the last session was on: a node that
//! dropped us is the last one tried again. One round of failures waits a backoff step.
//!
//! Every broker operation is bounded by [`BROKER_TIMEOUT`]: an address that accepts TCP and never
//! answers (a half-dead node, a wrong port behind a load balancer) would otherwise wedge the
//! supervisor for good, with ingest spooling forever and deliver never consuming.

use std::future::Future;
use std::time::Duration;

use prometheus::IntCounter;

use super::{connect, declare_topology, node_address, redact_url, Publisher, Topology};
use crate::lifecycle::Shutdown;
use crate::retry_policy::reconnect_backoff;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The cluster's nodes (`[amqp] urls`, or `[amqp] url` alone); never empty.
    pub urls: Vec<String>,
    pub topology: Topology,
    pub channels: usize,
    pub publish_timeout: Duration,
    /// Shown in the broker's management UI.
    pub connection_name: &'static str,
    /// Counts failed attempts (`bridge_amqp_connect_failures_total`).
    pub connect_failures: IntCounter,
}

/// The longest any single broker operation (connect with its handshake, declare, qos, consume,
/// cancel, close) may take before it counts as failed.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("the broker did not answer `{0}` within {BROKER_TIMEOUT:?}")]
    TimedOut(&'static str),
}

/// Runs one broker operation, failing it after [`BROKER_TIMEOUT`].
pub async fn within<T>(what: &'static str, op: impl Future<Output = lapin::Result<T>>) -> Result<T, SessionError> {
    match tokio::time::timeout(BROKER_TIMEOUT, op).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SessionError::TimedOut(what)),
    }
}

/// Closes a connection, giving up after [`BROKER_TIMEOUT`] (the broker may be the thing that is
/// gone).
pub async fn close(connection: &lapin::Connection, reason: &str) {
    let _ = within("close", connection.close(200, reason.into())).await;
}

/// Closes a channel the same way. At shutdown every channel is closed so, before its connection: one
/// left for lapin to close when its last handle is dropped races with the connection's close and
/// logs a connection error.
pub async fn close_channel(channel: &lapin::Channel, reason: &str) {
    let _ = within("close a channel", channel.close(200, reason.into())).await;
}

/// Connects to the first of `urls` that answers, each given [`BROKER_TIMEOUT`]: for the operators'
/// one-shot commands, which report an error rather than wait for a node to come back.
pub async fn connect_first(urls: &[String], name: &str) -> Result<lapin::Connection, SessionError> {
    let mut last = SessionError::TimedOut("connect: no broker address");
    for url in urls {
        match within("connect", connect(url, name)).await {
            Ok(connection) => return Ok(connection),
            Err(error) => {
                tracing::warn!(node = %node_address(url), %error, "broker node unreachable; trying the next");
                last = error;
            }
        }
    }
    Err(last)
}

/// A live session on one node.
pub struct Session {
    pub connection: lapin::Connection,
    pub publisher: Publisher,
    /// Which of `SessionConfig::urls` it is on.
    pub index: usize,
    /// That node as `host:port`.
    pub node: String,
}

/// Connects to the first node that answers, trying them in turn from `first`, with a backoff step
/// after each round that failed, and declares the topology. `None` when `shutdown` fired first.
pub async fn establish(config: &SessionConfig, first: usize, shutdown: &Shutdown) -> Option<Session> {
    let mut backoff = reconnect_backoff();
    let nodes = config.urls.len().max(1);
    let mut attempt = 0;
    loop {
        let index = (first + attempt) % nodes;
        let url = &config.urls[index];
        match within("connect and declare the topology", try_establish(config, url)).await {
            Ok((connection, publisher)) => {
                let node = node_address(url);
                tracing::info!(broker = %redact_url(url), %node, "broker connected, topology declared");
                return Some(Session { connection, publisher, index, node });
            }
            Err(error) => {
                config.connect_failures.inc();
                attempt += 1;
                let round_failed = attempt % nodes == 0;
                let delay =
                    if round_failed { backoff.next_delay().unwrap_or(Duration::from_secs(5)) } else { Duration::ZERO };
                tracing::warn!(broker = %redact_url(url), %error, retry_in_ms = delay.as_millis() as u64, "broker node unreachable");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.stopped() => return None,
                }
            }
        }
    }
}

async fn try_establish(config: &SessionConfig, url: &str) -> lapin::Result<(lapin::Connection, Publisher)> {
    let connection = connect(url, config.connection_name).await?;
    declare_topology(&connection, &config.topology).await?;
    let publisher = Publisher::new(&connection, config.channels, config.publish_timeout).await?;
    Ok((connection, publisher))
}
