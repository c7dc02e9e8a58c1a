//! One broker session: a named connection with the topology declared and a confirm-mode publisher
//! pool, established with backoff until it works or the process stops.
//!
//! Every broker operation is bounded by [`BROKER_TIMEOUT`]: an address that accepts TCP and never
//! answers (a half-dead node, a wrong port behind a load balancer) would otherwise wedge the
//! supervisor for good, with ingest spooling forever and deliver never consuming.

use std::future::Future;
use std::time::Duration;

use prometheus::IntCounter;

use super::{connect, declare_topology, redact_url, Publisher, Topology};
use crate::lifecycle::Shutdown;
use crate::retry_policy::reconnect_backoff;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub url: String,
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

/// Connects (retrying with backoff) and declares the topology. `None` when `shutdown` fired first.
pub async fn establish(config: &SessionConfig, shutdown: &Shutdown) -> Option<(lapin::Connection, Publisher)> {
    let mut backoff = reconnect_backoff();
    loop {
        match within("connect and declare the topology", try_establish(config)).await {
            Ok(ready) => {
                tracing::info!(broker = %redact_url(&config.url), "broker connected, topology declared");
                return Some(ready);
            }
            Err(error) => {
                config.connect_failures.inc();
                let delay = backoff.next_delay().unwrap_or(Duration::from_secs(5));
                tracing::warn!(broker = %redact_url(&config.url), %error, retry_in_ms = delay.as_millis() as u64, "broker unreachable");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.stopped() => return None,
                }
            }
        }
    }
}

async fn try_establish(config: &SessionConfig) -> lapin::Result<(lapin::Connection, Publisher)> {
    let connection = connect(&config.url, config.connection_name).await?;
    let channel = connection.create_channel().await?;
    declare_topology(&channel, &config.topology).await?;
    let _ = channel.close(200, "declared".into()).await;
    let publisher = Publisher::new(&connection, config.channels, config.publish_timeout).await?;
    Ok((connection, publisher))
}
