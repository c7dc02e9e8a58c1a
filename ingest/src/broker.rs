//! The broker link: a supervisor keeps one connection with a pool of confirm-mode channels,
//! reconnecting with backoff and re-declaring the topology whenever the connection is lost.

use std::sync::Arc;
use std::time::Duration;

use bridge_shared::amqp::{self, declare_topology, Publisher, Topology};
use bridge_shared::retry_policy::reconnect_backoff;
use futures_util::StreamExt;
use prometheus::IntGauge;
use tokio::sync::{watch, Notify};

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub url: String,
    pub topology: Topology,
    pub channels: usize,
    pub publish_timeout: Duration,
}

pub struct BrokerLink {
    publisher: watch::Sender<Option<Arc<Publisher>>>,
    broken: Notify,
    connected: IntGauge,
}

impl BrokerLink {
    pub fn new(connected: IntGauge) -> Arc<Self> {
        connected.set(0);
        Arc::new(BrokerLink { publisher: watch::channel(None).0, broken: Notify::new(), connected })
    }

    /// The publisher while the broker is connected.
    pub fn publisher(&self) -> Option<Arc<Publisher>> {
        self.publisher.borrow().clone()
    }

    /// Waits until the broker is connected.
    pub async fn connected(&self) -> Arc<Publisher> {
        let mut rx = self.publisher.subscribe();
        let guard = rx.wait_for(Option::is_some).await.expect("the sender lives as long as self");
        guard.clone().expect("waited for Some")
    }

    /// A publish through `failed` went wrong: drop that connection and build a new one. Reports
    /// about a publisher that was already replaced are ignored.
    pub fn report_failure(&self, failed: &Arc<Publisher>) {
        if self.publisher().is_some_and(|current| Arc::ptr_eq(&current, failed)) {
            self.broken.notify_one();
        }
    }

    pub async fn supervise(self: Arc<Self>, config: BrokerConfig, mut shutdown: watch::Receiver<bool>) {
        let redacted = amqp::redact_url(&config.url);
        loop {
            let mut backoff = reconnect_backoff();
            let (connection, publisher) = loop {
                match connect(&config).await {
                    Ok(ready) => break ready,
                    Err(error) => {
                        let delay = backoff.next_delay().unwrap_or(Duration::from_secs(5));
                        tracing::warn!(broker = %redacted, %error, retry_in_ms = delay.as_millis() as u64, "broker unreachable; events go to the spool");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.wait_for(|stop| *stop) => return,
                        }
                    }
                }
            };
            tracing::info!(broker = %redacted, "broker connected, topology declared");
            let mut events = connection.events_listener();
            self.publisher.send_replace(Some(Arc::new(publisher)));
            self.connected.set(1);
            let mut health = tokio::time::interval(Duration::from_millis(500));
            let stopping = loop {
                tokio::select! {
                    event = events.next() => if matches!(event, Some(lapin::Event::Error(_)) | None) { break false },
                    _ = self.broken.notified() => break false,
                    _ = health.tick() => if !connection.status().connected() { break false },
                    _ = shutdown.wait_for(|stop| *stop) => break true,
                }
            };
            self.publisher.send_replace(None);
            self.connected.set(0);
            let _ = connection.close(200, "bye".into()).await;
            if stopping {
                return;
            }
            tracing::warn!(broker = %redacted, "broker connection lost; reconnecting");
        }
    }
}

async fn connect(config: &BrokerConfig) -> lapin::Result<(lapin::Connection, Publisher)> {
    let connection = amqp::connect(&config.url, "verbox-bridge ingest").await?;
    let channel = connection.create_channel().await?;
    declare_topology(&channel, &config.topology).await?;
    let _ = channel.close(200, "declared".into()).await;
    let publisher = Publisher::new(&connection, config.channels, config.publish_timeout).await?;
    Ok((connection, publisher))
}
