//! Disk work of a request (the integrations file, the console's tokens file), off the async
//! workers and with a deadline. An fsync on a slow disk must not stall the workers serving other
//! requests, and a disk that stops answering (a hung network mount) must fail the request, not hold
//! it, and whatever lock its caller took, for as long as the disk hangs.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// How long a caller waits for its disk work.
pub const DISK_WORK_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The work runs on: a write may still land (read before trying again).
    #[error("the disk did not answer within {}s (a save may still land: read it again before retrying)", DISK_WORK_FOR.as_secs())]
    Silent,
    /// A panic in the work: an error of the store, not of its caller.
    #[error("the disk work did not finish: {0}")]
    Panicked(String),
}

/// Runs `work` on the blocking pool and waits for it at most [`DISK_WORK_FOR`]. Work still running
/// at the deadline runs on to its end: a caller that must not write beside it moves its lock into
/// `work`.
pub async fn off_the_workers<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, DiskError> {
    match tokio::time::timeout(DISK_WORK_FOR, tokio::task::spawn_blocking(work)).await {
        Err(_) => Err(DiskError::Silent),
        Ok(Ok(done)) => Ok(done),
        Ok(Err(failed)) => Err(DiskError::Panicked(failed.to_string())),
    }
}

/// Replaces `path` with `parts`: written into a temporary file (readable by its owner only: it
/// holds tokens), fsynced, renamed over it, the directory fsynced.
pub fn replace(path: &Path, temporary_extension: &str, parts: &[&[u8]]) -> std::io::Result<()> {
    let temporary = path.with_extension(temporary_extension);
    {
        let mut out =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
        for part in parts {
            out.write_all(part)?;
        }
        out.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    // A bare file name's directory is the working directory.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    Ok(())
}
