//! The local journey (sled) can be opened by one process only, deliver's: the console and
//! `deliver events` ask deliver for it over a Unix socket in a directory of the ledger's that
//! deliver makes for it, 0700 (only deliver's user may connect, as only it may read the ledger).
//! One JSON line each way: a [`Request`], then its [`Answer`]. What is never shown (a journey's
//! lookup keys, a skipped event's webhook) is stripped here, but for [`Request::GetWhole`].

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
    ledger_dir.join("journey").join("journey.sock")
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Find(Query),
    Get(String),
    /// With what is never shown: a skipped event's webhook, to send it again.
    GetWhole(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Page(Page),
    Journey(Option<Box<Journey>>),
    Failed(String),
}

/// The socket's directory, made 0700 whatever the umask; a path there that is not a directory of
/// ours (a link planted in its place) is refused.
fn private_directory(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let Some(dir) = path.parent() else { return Ok(()) };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(dir)?;
            if !meta.is_dir() {
                return Err(std::io::Error::other("the journey socket's directory is not a directory"));
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
    }
}

fn inode(path: &Path) -> Option<u64> {
    std::os::unix::fs::MetadataExt::ino(&std::fs::symlink_metadata(path).ok()?).into()
}

/// Answers on `path` until `stop`; a stale socket file of an earlier run is replaced, and at the
/// stop the socket is removed only if it is still this process's (a newer one may have bound it).
pub async fn serve_socket(store: Store, path: PathBuf, stop: Shutdown) {
    let bound = private_directory(&path).and_then(|()| {
        let _ = std::fs::remove_file(&path);
        UnixListener::bind(&path)
    });
    let listener = match bound {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, path = %path.display(), "the journey socket could not be opened; the console cannot read this deliver's journeys");
            return stop.stopped().await;
        }
    };
    let ours = inode(&path);
    let turns = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.stopped() => break,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors, say: give the others a moment rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Busy: the asker is told at once (its deadline would pass in the queue anyway).
        let Ok(turn) = turns.clone().try_acquire_owned() else { continue };
        let store = store.clone();
        tokio::spawn(async move {
            let _turn = turn;
            if tokio::time::timeout(SOCKET_DEADLINE, answer(&store, stream)).await.is_err() {
                tracing::debug!("a journey request ran out of time");
            }
        });
    }
    if ours.is_some() && inode(&path) == ours {
        let _ = std::fs::remove_file(&path);
    }
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
            store.find(q).await.map(|mut page| {
                page.events.iter_mut().for_each(Journey::hide_private);
                Answer::Page(page)
            })
        }
        Ok(Request::Get(id)) => store.get(id).await.map(|j| {
            Answer::Journey(j.map(|mut j| {
                j.hide_private();
                Box::new(j)
            }))
        }),
        Ok(Request::GetWhole(id)) => store.get(id).await.map(|j| Answer::Journey(j.map(Box::new))),
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
