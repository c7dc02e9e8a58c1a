//! One broker session: a named connection with the topology declared and a confirm-mode publisher
//! pool, established with backoff until it works or the process stops.

use std::time::Duration;

use tokio::sync::watch;

use super::{connect, declare_topology, redact_url, Publisher, Topology};
use crate::retry_policy::reconnect_backoff;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub url: String,
    pub topology: Topology,
    pub channels: usize,
    pub publish_timeout: Duration,
    /// Shown in the broker's management UI.
    pub connection_name: &'static str,
}

/// Connects (retrying with backoff) and declares the topology. `None` when `shutdown` fired first.
pub async fn establish(
    config: &SessionConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(lapin::Connection, Publisher)> {
    let mut backoff = reconnect_backoff();
    loop {
        match try_establish(config).await {
            Ok(ready) => {
                tracing::info!(broker = %redact_url(&config.url), "broker connected, topology declared");
                return Some(ready);
            }
            Err(error) => {
                let delay = backoff.next_delay().unwrap_or(Duration::from_secs(5));
                tracing::warn!(broker = %redact_url(&config.url), %error, retry_in_ms = delay.as_millis() as u64, "broker unreachable");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return None,
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
