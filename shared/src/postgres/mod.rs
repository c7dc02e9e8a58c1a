//! PostgreSQL, for the state several machines share (deliver's ledger, the integrations store):
//! one connection per use, re-made when it drops, and migrations applied once under a lock.
//!
//! Every operation has a deadline (`postgres_timeout`, connecting included), because a database
//! whose packets are dropped neither answers nor resets: without one, each caller waits for the
//! kernel (some 15 minutes) while the process looks healthy. The statements are only reachable
//! through [`Database`]'s methods, which apply it, so no caller can forget it. The server is told
//! the same deadline (`statement_timeout`), and TCP keepalives are on for the idle LISTEN
//! connection. A connection that ran out of time is dropped, never reused: a half-dead socket
//! would swallow the next statement too. One connect runs at a time; while the database is known
//! not to answer, other callers fail at once instead of queueing behind it.

mod listen;
mod status;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row};

use crate::settings::format_duration;

pub use self::listen::Listener;
use self::status::Status;
pub use self::status::{Postgres, Role};

/// The deadline of one operation when the settings name none (`postgres_timeout`).
pub use crate::settings::DEFAULT_POSTGRES_TIMEOUT as DEFAULT_TIMEOUT;

/// Keepalives: an idle connection whose peer vanished is noticed within about half a minute.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
/// Data sent and not acknowledged for this long closes the connection.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The advisory lock deliver's ledger and journey tables are made under.
pub const LEDGER_MIGRATION_LOCK: i64 = 0x7665_7262_6f78;

/// Rows one statement of [`Database::delete_in_chunks`] removes at most.
pub const DELETE_CHUNK: i64 = 5_000;

/// Statement parameters, as tokio-postgres takes them.
pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// What went wrong with an operation; the message never holds the URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no answer within {}", format_duration(*.0))]
    TimedOut(Duration),
    #[error("it does not answer (another attempt to connect is under way)")]
    Unavailable,
}

impl DbError {
    /// The server answered (a refused statement is an answer), except to say it ran out of time.
    fn answered(&self) -> bool {
        match self {
            DbError::Postgres(error) => error.as_db_error().is_some_and(|db| *db.code() != SqlState::QUERY_CANCELED),
            DbError::TimedOut(_) | DbError::Unavailable => false,
        }
    }
}

/// One connection, and the task that drives it: aborted when the connection is given up, so the
/// statements still waiting on it fail at once.
struct Live {
    client: Client,
    driver: AbortHandle,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A database of one [`Role`]; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct Database(Arc<Inner>);

struct Inner {
    config: Config,
    deadline: Duration,
    current: Mutex<Option<Arc<Live>>>,
    /// Held while connecting: one attempt at a time.
    connecting: tokio::sync::Mutex<()>,
    status: Status,
}

impl Database {
    fn new(url: &str, deadline: Duration, status: Status) -> Result<Self, DbError> {
        let mut config: Config = url.parse()?;
        let timeout = format!("-c statement_timeout={}", deadline.as_millis());
        let options = match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {timeout}"),
            _ => timeout,
        };
        config
            .options(options)
            .connect_timeout(deadline)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES)
            .tcp_user_timeout(TCP_USER_TIMEOUT);
        let inner = Inner { config, deadline, current: Mutex::new(None), connecting: Default::default(), status };
        Ok(Database(Arc::new(inner)))
    }

    pub fn role(&self) -> Role {
        self.0.status.role()
    }

    /// How long one operation may take (`postgres_timeout`), waiting for a connection included.
    pub fn deadline(&self) -> Duration {
        self.0.deadline
    }

    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, DbError> {
        self.run(|c| async move { c.client.query(sql, params).await }).await
    }

    pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, DbError> {
        self.run(|c| async move { c.client.query_opt(sql, params).await }).await
    }

    /// The number of rows the statement changed.
    pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, DbError> {
        self.run(|c| async move { c.client.execute(sql, params).await }).await
    }

    /// Runs `sql`, a DELETE whose last parameter is the most rows it removes at once, until it
    /// removes fewer than [`DELETE_CHUNK`]; returns how many in all. A long backlog in one
    /// statement would outlast the deadline and hold the connection others share.
    pub async fn delete_in_chunks(&self, sql: &str, params: Params<'_>) -> Result<u64, DbError> {
        let mut with_limit: Vec<&(dyn ToSql + Sync)> = params.to_vec();
        with_limit.push(&DELETE_CHUNK);
        let mut removed = 0;
        loop {
            let chunk = self.execute(sql, &with_limit).await?;
            removed += chunk;
            if chunk < DELETE_CHUNK as u64 {
                return Ok(removed);
            }
        }
    }

    pub async fn batch_execute(&self, sql: &str) -> Result<(), DbError> {
        self.run(|c| async move { c.client.batch_execute(sql).await }).await
    }

    /// Applies an idempotent migration. Processes starting together would race on `CREATE TABLE
    /// IF NOT EXISTS` (PostgreSQL lets two of them collide), so it runs under a
    /// transaction-scoped advisory lock.
    pub async fn migrate(&self, lock: i64, sql: &str) -> Result<(), DbError> {
        self.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({lock}); {sql} COMMIT;")).await
    }

    /// Runs `op` on a connection within the deadline (waiting for a connection included), gives
    /// up a connection that failed without an answer, and notes whether the database answered.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, DbError>
    where
        F: FnOnce(Arc<Live>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let mut used = None;
        let attempt = async {
            let live = self.connection().await?;
            used = Some(live.clone());
            Ok(op(live).await?)
        };
        let result =
            tokio::time::timeout(self.0.deadline, attempt).await.unwrap_or(Err(DbError::TimedOut(self.0.deadline)));
        match &result {
            Ok(_) => self.0.status.answered(),
            Err(error) if error.answered() => self.0.status.answered(),
            Err(error) => {
                if let Some(live) = used {
                    self.discard(&live);
                }
                self.0.status.silent(self, error);
            }
        }
        result
    }

    /// The open connection, or a new one.
    async fn connection(&self) -> Result<Arc<Live>, DbError> {
        if let Some(live) = self.open() {
            return Ok(live);
        }
        let _turn = match self.0.connecting.try_lock() {
            Ok(turn) => turn,
            Err(_) if !self.0.status.is_up() => return Err(DbError::Unavailable),
            Err(_) => self.0.connecting.lock().await,
        };
        if let Some(live) = self.open() {
            return Ok(live);
        }
        let (client, connection) = self.0.config.connect(NoTls).await?;
        let role = self.role().as_str();
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, database = role, "database connection ended");
            }
        })
        .abort_handle();
        let live = Arc::new(Live { client, driver });
        *self.0.current.lock().expect("never poisoned") = Some(live.clone());
        Ok(live)
    }

    fn open(&self) -> Option<Arc<Live>> {
        self.0.current.lock().expect("never poisoned").as_ref().filter(|l| !l.client.is_closed()).cloned()
    }

    /// Gives up `live`: its statements fail now, and the next use connects anew.
    fn discard(&self, live: &Arc<Live>) {
        live.driver.abort();
        let mut current = self.0.current.lock().expect("never poisoned");
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, live)) {
            *current = None;
        }
    }
}
