//! Confirmed publishing over a small pool of confirm-mode channels on one connection: a channel
//! waits for each confirm in order, so several let concurrent webhooks wait side by side, and one
//! connection keeps the broker's view of the process simple. A publish succeeds only when the
//! broker has acked it and it was routed to a queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for the message (returned as unroutable)")]
    Unroutable,
    #[error("no confirm from the broker within {0:?}")]
    Timeout(Duration),
}

#[derive(Debug)]
pub struct Publisher {
    channels: Vec<Channel>,
    next: AtomicUsize,
    timeout: Duration,
}

impl Publisher {
    pub async fn new(connection: &Connection, channels: usize, timeout: Duration) -> lapin::Result<Self> {
        let mut pool = Vec::with_capacity(channels);
        for _ in 0..channels.max(1) {
            let channel = connection.create_channel().await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            pool.push(channel);
        }
        Ok(Publisher { channels: pool, next: AtomicUsize::new(0), timeout })
    }

    /// Closes the channels (at shutdown, before the connection).
    pub async fn close(&self) {
        for channel in &self.channels {
            super::session::close_channel(channel, "shutdown").await;
        }
    }

    /// Publishes a persistent message and waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: FieldTable,
    ) -> Result<(), PublishError> {
        let channel = &self.channels[self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len()];
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers);
        let publish = async {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    body,
                    properties,
                )
                .await?;
            Ok::<_, PublishError>(confirm.await?)
        };
        match tokio::time::timeout(self.timeout, publish).await {
            Err(_) => Err(PublishError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable),
            // NotRequested cannot happen on a confirm-mode channel; never take it for an ack.
            Ok(Ok(Confirmation::Nack(_) | Confirmation::NotRequested)) => Err(PublishError::Nacked),
        }
    }
}
