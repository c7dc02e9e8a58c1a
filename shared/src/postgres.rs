//! PostgreSQL, for the state several machines share (deliver's ledger, the integrations store):
//! one connection per use, re-made when it drops, and migrations applied once under a lock.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

/// A connection that is re-made on the next use after it drops. The URL (it may hold a
/// password) is never logged.
pub struct Database {
    url: String,
    client: Mutex<Option<Arc<Client>>>,
}

impl Database {
    pub fn new(url: &str) -> Self {
        Database { url: url.to_owned(), client: Mutex::new(None) }
    }

    pub async fn client(&self) -> Result<Arc<Client>, tokio_postgres::Error> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "database connection ended");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Applies an idempotent migration. Processes starting together would race on `CREATE TABLE
    /// IF NOT EXISTS` (PostgreSQL lets two of them collide), so it runs under a
    /// transaction-scoped advisory lock.
    pub async fn migrate(&self, lock: i64, sql: &str) -> Result<(), tokio_postgres::Error> {
        let client = self.client().await?;
        client.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({lock}); {sql} COMMIT;")).await
    }
}

impl Database {
    /// A connection of its own that LISTENs on `channel`: the receiver yields each notification's
    /// payload and ends when the connection does (keep the client alive meanwhile).
    pub async fn listen(
        &self,
        channel: &str,
    ) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<String>), tokio_postgres::Error> {
        use futures_util::StreamExt;
        let (client, mut connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        if sender.send(n.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "database connection ended");
                        return;
                    }
                }
            }
        });
        client.batch_execute(&format!("LISTEN {channel}")).await?;
        Ok((client, receiver))
    }
}
