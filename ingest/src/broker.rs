//! The broker link: a supervisor keeps one connection with a pool of confirm-mode channels,
//! reconnecting with backoff and re-declaring the topology whenever the connection is lost.

use std::sync::Arc;
use std::time::Duration;

use bridge_shared::amqp::session::{self, SessionConfig};
use bridge_shared::amqp::{self, Publisher};
use bridge_shared::lifecycle::Shutdown;
use futures_util::StreamExt;
use prometheus::IntGauge;
use tokio::sync::{watch, Notify};

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

    /// Keeps a session up until `shutdown`; while there is none, events go to the spool.
    pub async fn supervise(self: Arc<Self>, config: SessionConfig, shutdown: Shutdown) {
        let redacted = amqp::redact_url(&config.url);
        loop {
            let Some((connection, publisher)) = session::establish(&config, &shutdown).await else { return };
            let mut events = connection.events_listener();
            self.publisher.send_replace(Some(Arc::new(publisher)));
            self.connected.set(1);
            let mut health = tokio::time::interval(Duration::from_millis(500));
            let stopping = loop {
                tokio::select! {
                    event = events.next() => if matches!(event, Some(lapin::Event::Error(_)) | None) { break false },
                    _ = self.broken.notified() => break false,
                    _ = health.tick() => if !connection.status().connected() { break false },
                    _ = shutdown.stopped() => break true,
                }
            };
            self.publisher.send_replace(None);
            self.connected.set(0);
            session::close(&connection, "bye").await;
            if stopping {
                return;
            }
            tracing::warn!(broker = %redacted, "broker connection lost; reconnecting");
        }
    }
}
