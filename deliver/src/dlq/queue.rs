//! Reading the dead-letter queue without losing anything: each message is fetched unacknowledged and
//! held until the command either removes it (ack, after a confirmed replay or a purge) or releases
//! it (one `basic.nack` with `multiple` and `requeue` for everything still held). A command that
//! dies halfway leaves the held messages to the broker, which requeues them.
//!
//! A command sees a snapshot: at most the messages that were in the queue when it started, so a
//! replayed message that dies again during the same run is not replayed twice, and a dead-letter
//! storm cannot keep `list` going for ever.

use std::collections::BTreeSet;
use std::time::Duration;

use bridge_shared::amqp::session::{self, SessionError};
use bridge_shared::amqp::{declare_topology, Publisher, Topology};
use bridge_shared::settings::AmqpSettings;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use super::letter::{DeadLetter, Filter};
use super::progress::Progress;

/// Which messages a command applies to, and how many of them at most.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub filter: Filter,
    pub limit: Option<usize>,
}

pub struct DeadQueue {
    connection: Connection,
    channel: Channel,
    pub topology: Topology,
    /// Messages left in the snapshot.
    snapshot: u32,
    /// Delivery tags fetched and neither removed nor released.
    held: BTreeSet<u64>,
    pub scanned: usize,
    pub matched: usize,
    progress: Progress,
}

impl DeadQueue {
    /// Opens the queue for a command; `verb` names it in the progress line (`replaying`, ...).
    /// A broker that accepts the connection and never answers fails it after `BROKER_TIMEOUT`.
    pub async fn open(amqp: &AmqpSettings, verb: &'static str) -> Result<Self, SessionError> {
        let topology = Topology::new(&amqp.topology_prefix).with_quorum_replicas(amqp.quorum_replicas);
        let connection = session::connect_first(&amqp.nodes(), "verbox-bridge deliver dlq").await?;
        let (channel, snapshot) = session::within("open the dead-letter queue", async {
            declare_topology(&connection, &topology).await?;
            let channel = connection.create_channel().await?;
            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
            let queue = channel.queue_declare(topology.dead_queue().into(), passive, FieldTable::default()).await?;
            Ok((channel, queue.message_count()))
        })
        .await?;
        Ok(DeadQueue {
            connection,
            channel,
            topology,
            snapshot,
            held: BTreeSet::new(),
            scanned: 0,
            matched: 0,
            progress: Progress::new(verb, snapshot),
        })
    }

    /// A confirm-mode publisher on the same connection (for replay).
    pub async fn publisher(&self, timeout: Duration) -> lapin::Result<Publisher> {
        Publisher::new(&self.connection, 1, timeout).await
    }

    /// The next message of the snapshot that matches, held until removed or released; `None` when
    /// the snapshot is read or the limit is reached.
    pub async fn next_match(&mut self, selection: &Selection) -> lapin::Result<Option<(Delivery, DeadLetter)>> {
        while self.snapshot > 0 && selection.limit.is_none_or(|limit| self.matched < limit) {
            let queue = self.topology.dead_queue();
            let Some(message) = self.channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await? else {
                break;
            };
            self.snapshot -= 1;
            self.scanned += 1;
            let delivery = message.delivery;
            self.held.insert(delivery.delivery_tag);
            let letter = DeadLetter::read(&delivery);
            let matches = selection.filter.matches(&letter);
            self.matched += usize::from(matches);
            self.progress.tick(self.scanned, self.matched);
            if matches {
                return Ok(Some((delivery, letter)));
            }
        }
        Ok(None)
    }

    /// Removes a held message for good.
    pub async fn remove(&mut self, delivery: &Delivery) -> lapin::Result<()> {
        self.channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()).await?;
        self.held.remove(&delivery.delivery_tag);
        Ok(())
    }

    /// Puts every held message back and closes the connection. One multiple-nack: RabbitMQ does
    /// not count it as a failed delivery of each message, so listing never ages dead letters.
    pub async fn release(mut self) -> lapin::Result<()> {
        self.progress.finish();
        if let Some(&last) = self.held.last() {
            self.channel.basic_nack(last, BasicNackOptions { multiple: true, requeue: true }).await?;
            self.held.clear();
        }
        self.connection.close(200, "done".into()).await
    }
}
