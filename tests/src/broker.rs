//! A real RabbitMQ for tests: each test gets its own topology prefix so tests run in parallel on one
//! broker, and reads what arrived in its queues over a real connection.

use std::sync::atomic::{AtomicU64, Ordering};

use bridge_shared::amqp::{connect, declare_topology, topology::RETRY_TIERS, Publisher, Topology};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::Channel;

pub fn amqp_url() -> String {
    std::env::var("BRIDGE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A topology prefix no other test (or earlier run) uses.
pub fn unique_prefix(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
    format!("t.{test}.{}.{nanos}.{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// `rabbitmqctl ARGS` on the local node (needs the node's Erlang cookie: root, or the rabbitmq user).
async fn rabbitmqctl(args: &'static [&'static str]) {
    let status =
        tokio::task::spawn_blocking(move || std::process::Command::new("rabbitmqctl").arg("-q").args(args).status())
            .await
            .unwrap()
            .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?}: {status}");
}

/// Stops the local broker's application, as an operator would: every connection drops, the durable
/// queues stay on disk.
pub async fn stop_broker() {
    rabbitmqctl(&["stop_app"]).await;
}

/// Starts the local broker's application after [`stop_broker`] and waits until it serves.
pub async fn start_broker() {
    rabbitmqctl(&["start_app"]).await;
    rabbitmqctl(&["await_startup"]).await;
}

/// A message read from a queue.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub headers: FieldTable,
    pub persistent: bool,
}

pub struct TestBroker {
    pub url: String,
    pub prefix: String,
    pub topology: Topology,
    channel: Channel,
    connection: lapin::Connection,
}

impl TestBroker {
    pub async fn new(test: &str) -> Self {
        Self::on(amqp_url(), test).await
    }

    /// The same on the broker (node) at `url`.
    pub async fn on(url: String, test: &str) -> Self {
        let prefix = unique_prefix(test);
        let topology = Topology::new(&prefix);
        let connection =
            connect(&url, "verbox-bridge tests").await.expect("RabbitMQ answers (run scripts/ensure-rabbitmq.sh)");
        declare_topology(&connection, &topology).await.expect("the topology declares");
        let channel = connection.create_channel().await.expect("a channel");
        TestBroker { url, prefix, topology, channel, connection }
    }

    /// A new connection after the broker was restarted (the old one died with it); the topology
    /// survived, being durable.
    pub async fn reconnect(&mut self) {
        self.connection = connect(&self.url, "verbox-bridge tests").await.expect("RabbitMQ answers again");
        self.channel = self.connection.create_channel().await.expect("a channel");
    }

    /// A confirm-mode publisher on the test's connection, to put messages where a test needs them.
    pub async fn publisher(&self) -> Publisher {
        Publisher::new(&self.connection, 1, std::time::Duration::from_secs(10)).await.expect("a publisher")
    }

    /// Takes the next message of `queue` and hands it back unprocessed, `times` times: what a
    /// consumer that keeps crashing on it does (quorum queues count each return).
    pub async fn bounce(&self, queue: &str, times: usize) {
        for _ in 0..times {
            let m = self.channel.basic_get(queue.into(), BasicGetOptions::default()).await.expect("basic.get");
            let m = m.expect("a message to bounce");
            m.delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
        }
    }

    /// Messages ready in `queue` now.
    pub async fn depth(&self, queue: &str) -> u32 {
        let q = self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("the queue exists");
        q.message_count()
    }

    /// Messages ready in the event queues and every retry queue: what still waits to be delivered
    /// (unacked ones in a consumer's hands are not counted).
    pub async fn waiting(&self) -> u32 {
        let t = &self.topology;
        let mut queues = vec![t.deliver_queue(), t.large_deliver_queue()];
        queues.extend(RETRY_TIERS.iter().map(|(tier, _)| t.retry_queue(tier)));
        let mut total = 0;
        for q in queues {
            total += self.depth(&q).await;
        }
        total
    }

    /// Drops every message ready in `queue`.
    pub async fn purge(&self, queue: &str) {
        self.channel.queue_purge(queue.into(), QueuePurgeOptions::default()).await.expect("queue.purge");
    }

    /// Takes every message ready in `queue` (acknowledging them).
    pub async fn take_all(&self, queue: &str) -> Vec<Received> {
        let mut out = Vec::new();
        while let Some(m) = self.channel.basic_get(queue.into(), BasicGetOptions::default()).await.expect("basic.get") {
            let delivery = &m.delivery;
            out.push(Received {
                routing_key: delivery.routing_key.to_string(),
                body: delivery.data.clone(),
                headers: delivery.properties.headers().clone().unwrap_or_default(),
                persistent: *delivery.properties.delivery_mode() == Some(2),
            });
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
        }
        out
    }

    /// Deletes one of this test's queues (its messages with it): an outage of that queue.
    pub async fn delete_queue(&self, queue: &str) {
        self.channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await.expect("queue.delete");
    }

    /// Declares the test's topology again, bringing back what [`Self::delete_queue`] removed.
    pub async fn declare(&self) {
        declare_topology(&self.connection, &self.topology).await.expect("the topology declares");
    }

    /// Deletes this test's queues and exchanges (call at the end of a test that passed).
    pub async fn cleanup(self) {
        let t = &self.topology;
        let mut queues = vec![t.deliver_queue(), t.large_deliver_queue(), t.dead_queue()];
        queues.extend(RETRY_TIERS.iter().map(|(tier, _)| t.retry_queue(tier)));
        for q in queues {
            let _ = self.channel.queue_delete(q.into(), QueueDeleteOptions::default()).await;
        }
        for e in [t.events_exchange(), t.retry_exchange(), t.dead_exchange()] {
            let _ = self.channel.exchange_delete(e.into(), ExchangeDeleteOptions::default()).await;
        }
    }
}
