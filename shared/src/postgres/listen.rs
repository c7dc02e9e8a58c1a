//! LISTEN on a connection of its own. Waiting for a notification has no deadline (nothing may
//! happen for days), so the connection is asked a trivial statement every [`PING_EVERY`]: one that
//! gets no answer within the deadline ends the listener, and the caller reads and listens anew.
//! Keepalives alone would not do behind a proxy or a load balancer that keeps the TCP side alive.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_postgres::{AsyncMessage, NoTls};

use super::{Database, DbError, Live};

const PING_EVERY: Duration = Duration::from_secs(15);

/// The payloads notified on one channel, while the connection lasts.
pub struct Listener {
    live: Live,
    notifications: UnboundedReceiver<String>,
    ping: tokio::time::Interval,
    deadline: Duration,
}

impl Listener {
    /// The next payload; `None` once the connection is gone or stopped answering.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            tokio::select! {
                payload = self.notifications.recv() => return payload,
                _ = self.ping.tick() => {
                    let answer = tokio::time::timeout(self.deadline, self.live.client.simple_query("")).await;
                    if !matches!(answer, Ok(Ok(_))) {
                        return None;
                    }
                }
            }
        }
    }

    /// A payload already received, without waiting.
    pub fn try_next(&mut self) -> Option<String> {
        self.notifications.try_recv().ok()
    }
}

impl Database {
    /// A connection of its own that LISTENs on `channel`, within the deadline.
    pub async fn listen(&self, channel: &str) -> Result<Listener, DbError> {
        let deadline = self.0.deadline;
        let attempt = async {
            let (client, connection) = self.0.config.connect(NoTls).await?;
            let (driver, notifications) = forward_notifications(connection);
            let live = Live { client, driver };
            live.client.batch_execute(&format!("LISTEN {channel}")).await?;
            Ok::<_, DbError>((live, notifications))
        };
        let result = tokio::time::timeout(deadline, attempt).await.unwrap_or(Err(DbError::TimedOut(deadline)));
        match result {
            Ok((live, notifications)) => {
                self.0.status.answered();
                let mut ping = tokio::time::interval(PING_EVERY);
                ping.reset();
                Ok(Listener { live, notifications, ping, deadline })
            }
            Err(error) => {
                if !error.answered() {
                    self.0.status.silent(self, &error);
                }
                Err(error)
            }
        }
    }
}

/// Drives `connection`, sending each notification's payload; ends with the connection.
fn forward_notifications<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
) -> (tokio::task::AbortHandle, UnboundedReceiver<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
{
    let (sender, receiver) = unbounded_channel();
    let task = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if sender.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "listening connection ended");
                    return;
                }
            }
        }
    });
    (task.abort_handle(), receiver)
}
