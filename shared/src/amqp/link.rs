//! The broker link both services keep: one supervisor that holds a session on some node of the
//! cluster, says which node in readiness, logs and `bridge_amqp_node`, and moves to the next node
//! when a connection or node drops. What a service does with a session (ingest publishes, deliver
//! also consumes) is the `serve` future it hands to [`BrokerLink::supervise`].

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use lapin::Connection;
use prometheus::{IntGauge, IntGaugeVec};
use tokio::sync::{watch, Notify};

use super::session::{self, SessionConfig};
use super::Publisher;
use crate::lifecycle::Shutdown;

/// How a service's work on one session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The process is stopping: the supervisor returns the connection, still open, so what is in
    /// hand can still be acked or published; the caller [`BrokerLink::close`]s it.
    Stopping,
    /// The session is no good any more (its consumer ended): reconnect, to the next node.
    Lost,
}

/// The `serve` of a process that only publishes: nothing to do with a session but keep it until
/// the process stops (the link holds its publisher).
pub fn until_stopped(stop: Shutdown) -> impl FnMut(Arc<Connection>) -> BoxFuture<'static, Ended> {
    move |_| {
        let stop = stop.clone();
        Box::pin(async move {
            stop.stopped().await;
            Ended::Stopping
        })
    }
}

pub struct BrokerLink {
    publisher: watch::Sender<Option<Arc<Publisher>>>,
    node: Mutex<Option<String>>,
    broken: Notify,
    connected: IntGauge,
    nodes: IntGaugeVec,
}

impl BrokerLink {
    /// `connected` is `bridge_amqp_connected`; `nodes` is `bridge_amqp_node{node}`.
    pub fn new(connected: IntGauge, nodes: IntGaugeVec) -> Arc<Self> {
        connected.set(0);
        Arc::new(BrokerLink {
            publisher: watch::channel(None).0,
            node: Mutex::new(None),
            broken: Notify::new(),
            connected,
            nodes,
        })
    }

    /// The publisher while a session is up.
    pub fn publisher(&self) -> Option<Arc<Publisher>> {
        self.publisher.borrow().clone()
    }

    /// The publisher as it changes, for tasks that keep a receiver.
    pub fn publishers(&self) -> watch::Receiver<Option<Arc<Publisher>>> {
        self.publisher.subscribe()
    }

    /// Waits until a session is up.
    pub async fn connected(&self) -> Arc<Publisher> {
        let mut rx = self.publisher.subscribe();
        let guard = rx.wait_for(Option::is_some).await.expect("the sender lives as long as self");
        guard.clone().expect("waited for Some")
    }

    /// The node (`host:port`) the session is on, while there is one.
    pub fn node(&self) -> Option<String> {
        self.node.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A publish through `failed` went wrong: drop that session and build a new one. Reports about
    /// a publisher that was already replaced are ignored.
    pub fn report_failure(&self, failed: &Arc<Publisher>) {
        if self.publisher().is_some_and(|current| Arc::ptr_eq(&current, failed)) {
            self.broken.notify_one();
        }
    }

    /// Publishes the new session (or none); returns the publisher it replaces.
    fn set(&self, session: Option<(Publisher, String)>) -> Option<Arc<Publisher>> {
        let (publisher, node) = session.map_or((None, None), |(p, n)| (Some(Arc::new(p)), Some(n)));
        self.nodes.reset();
        if let Some(node) = &node {
            self.nodes.with_label_values(&[node]).set(1);
        }
        self.connected.set(node.is_some().into());
        *self.node.lock().unwrap_or_else(PoisonError::into_inner) = node;
        self.publisher.send_replace(publisher)
    }

    /// Keeps a session up until `serve` says the process is stopping, and returns its connection
    /// then (`None` if the process stopped while no node answered). `serve` runs once per session
    /// and must return [`Ended::Stopping`] once `shutdown` fires.
    pub async fn supervise<S, F>(
        self: Arc<Self>,
        config: SessionConfig,
        shutdown: Shutdown,
        mut serve: S,
    ) -> Option<Arc<Connection>>
    where
        S: FnMut(Arc<Connection>) -> F,
        F: Future<Output = Ended>,
    {
        let mut first = 0;
        loop {
            let session = session::establish(&config, first, &shutdown).await?;
            let connection = Arc::new(session.connection);
            let mut events = connection.events_listener();
            self.set(Some((session.publisher, session.node.clone())));
            let serving = serve(connection.clone());
            tokio::pin!(serving);
            let mut health = tokio::time::interval(Duration::from_millis(500));
            let ended = loop {
                tokio::select! {
                    ended = &mut serving => break ended,
                    event = events.next() => if matches!(event, Some(lapin::Event::Error(_)) | None) { break Ended::Lost },
                    _ = self.broken.notified() => break Ended::Lost,
                    _ = health.tick() => if !connection.status().connected() { break Ended::Lost },
                }
            };
            if ended == Ended::Stopping {
                return Some(connection);
            }
            self.set(None);
            // Whatever was unacked on this connection is redelivered, to this process or another.
            session::close(&connection, "reconnect").await;
            first = session.index + 1;
            tracing::warn!(node = %session.node, "broker connection lost; trying the next node");
        }
    }

    /// Ends the session [`Self::supervise`] returned at shutdown.
    pub async fn close(&self, connection: &Connection) {
        if let Some(publisher) = self.set(None) {
            publisher.close().await;
        }
        session::close(connection, "shutdown").await;
    }
}
