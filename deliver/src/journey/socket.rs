//! The local journey (sled) can be opened by one process only, deliver's: the console and
//! `deliver events` ask deliver for it over a Unix socket in the ledger's directory. The socket is
//! the directory's (readable by deliver's user only, as the ledger is), and speaks one JSON line
//! each way: a [`Request`], then its [`Answer`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bridge_shared::lifecycle::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::query::{Page, Query, MAX_LIMIT};
use super::{Journey, Store};

/// A request is one line of at most this many bytes.
const REQUEST_AT_MOST: u64 = 16 << 10;
/// An answer is read up to this many bytes (a page of [`MAX_LIMIT`] journeys fits many times over).
const ANSWER_AT_MOST: u64 = 64 << 20;
/// Each side's deadline for the whole exchange.
pub const SOCKET_DEADLINE: Duration = Duration::from_secs(10);
/// Requests answered at once at most; more wait for a turn.
const AT_ONCE: usize = 8;

pub fn socket_path(ledger_dir: &Path) -> PathBuf {
    ledger_dir.join("journey.sock")
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Find(Query),
    Get(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Page(Page),
    Journey(Option<Box<Journey>>),
    Failed(String),
}

/// Answers on `path` until `stop`; a stale socket file of an earlier run is replaced.
pub async fn serve_socket(store: Store, path: PathBuf, stop: Shutdown) {
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, path = %path.display(), "the journey socket could not be opened; the console cannot read this deliver's journeys");
            return stop.stopped().await;
        }
    };
    // Whoever may write the socket may read every journey: deliver's user only.
    if let Err(error) = std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)) {
        tracing::warn!(%error, "the journey socket's mode could not be set to 0600");
    }
    let turns = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.stopped() => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (store, turns) = (store.clone(), turns.clone());
        tokio::spawn(async move {
            let Ok(_turn) = turns.acquire_owned().await else { return };
            if tokio::time::timeout(SOCKET_DEADLINE, answer(&store, stream)).await.is_err() {
                tracing::debug!("a journey request ran out of time");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer(store: &Store, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read.take(REQUEST_AT_MOST)).read_line(&mut line).await.is_err() {
        return;
    }
    let answer = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Find(mut q)) => {
            q.limit = q.limit.clamp(1, MAX_LIMIT);
            store.find(q).await.map(Answer::Page)
        }
        Ok(Request::Get(id)) => store.get(id).await.map(|j| Answer::Journey(j.map(Box::new))),
        Err(error) => Ok(Answer::Failed(format!("not a journey request: {error}"))),
    };
    let answer = answer.unwrap_or_else(|error| Answer::Failed(error.to_string()));
    let mut bytes = serde_json::to_vec(&answer).unwrap_or_default();
    bytes.push(b'\n');
    let _ = write.write_all(&bytes).await;
}

/// Asks the deliver whose ledger is in `ledger_dir`.
pub async fn ask(ledger_dir: &Path, request: &Request) -> Result<Answer, String> {
    let path = socket_path(ledger_dir);
    let exchange = async {
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|e| format!("deliver does not answer on its journey socket: {e}"))?;
        let (read, mut write) = stream.into_split();
        let mut bytes = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        write.write_all(&bytes).await.map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(read.take(ANSWER_AT_MOST)).read_line(&mut line).await.map_err(|e| e.to_string())?;
        serde_json::from_str(&line).map_err(|e| format!("deliver's journey answer does not read: {e}"))
    };
    tokio::time::timeout(SOCKET_DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| Err("deliver's journey socket did not answer in time".into()))
}
