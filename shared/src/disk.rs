//! Disk work of a request (the integrations file, the console's tokens file), off the async
//! workers and with a deadline. An fsync on a slow disk must not stall the workers serving other
//! requests, and a disk that stops answering (a hung network mount) must fail the request, not hold
//! it, and whatever lock its caller took, for as long as the disk hangs.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a caller waits for its disk work.
pub const DISK_WORK_FOR: Duration = Duration::from_secs(10);
/// How many of a store's jobs may still run after their callers stopped waiting before its new
/// work is refused at once.
pub const STRAGGLERS_MAX: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The work runs on: a write may still land (read before trying again).
    #[error("the disk did not answer within {}s (a save may still land: read it again before retrying)", DISK_WORK_FOR.as_secs())]
    Silent,
    /// A panic in the work: an error of the store, not of its caller.
    #[error("the disk work did not finish: {0}")]
    Panicked(String),
}

/// One store's disk work. Work its caller stopped waiting for still holds a thread of the
/// blocking pool until the disk answers; once [`STRAGGLERS_MAX`] of them do, the store's new work
/// is refused at once, so a hung disk takes neither every thread of the pool nor a queue of
/// requests behind it.
#[derive(Clone)]
pub struct Disk {
    stragglers: Arc<AtomicUsize>,
    deadline: Duration,
}

impl Default for Disk {
    fn default() -> Self {
        Disk { stragglers: Arc::default(), deadline: DISK_WORK_FOR }
    }
}

const RUNNING: u8 = 0;
const FINISHED: u8 = 1;
const ABANDONED: u8 = 2;

/// Marks a job finished when it ends, even by a panic; a straggler's end frees its place.
struct Finishing {
    state: Arc<AtomicU8>,
    stragglers: Arc<AtomicUsize>,
}

impl Drop for Finishing {
    fn drop(&mut self) {
        if self.state.swap(FINISHED, Ordering::SeqCst) == ABANDONED {
            self.stragglers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Disk {
    /// Runs `work` on the blocking pool and waits for it at most [`DISK_WORK_FOR`]. Work still
    /// running at the deadline runs on to its end: a caller that must not write beside it moves
    /// its lock into `work`.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, DiskError> {
        if self.stragglers.load(Ordering::SeqCst) >= STRAGGLERS_MAX {
            return Err(DiskError::Silent);
        }
        let state = Arc::new(AtomicU8::new(RUNNING));
        let finishing = Finishing { state: state.clone(), stragglers: self.stragglers.clone() };
        let job = tokio::task::spawn_blocking(move || {
            let _finishing = finishing;
            work()
        });
        match tokio::time::timeout(self.deadline, job).await {
            Err(_) => {
                // Counted before it is marked, so that its end never finds the count at zero.
                self.stragglers.fetch_add(1, Ordering::SeqCst);
                if state.swap(ABANDONED, Ordering::SeqCst) != RUNNING {
                    self.stragglers.fetch_sub(1, Ordering::SeqCst);
                }
                Err(DiskError::Silent)
            }
            Ok(Ok(done)) => Ok(done),
            Ok(Err(failed)) => Err(DiskError::Panicked(failed.to_string())),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs that hang (here on a channel nobody sends on yet) are given up at the deadline; past
    /// [`STRAGGLERS_MAX`] of them new work is refused without running, and their end frees it.
    #[tokio::test]
    async fn a_hung_disk_holds_at_most_a_bound_of_threads_and_frees_them_when_it_answers() {
        let disk = Disk { deadline: Duration::from_secs(1), ..Disk::default() };
        let (answer, hung) = std::sync::mpsc::channel::<()>();
        let hung = Arc::new(std::sync::Mutex::new(hung));
        // Each holds the receiver's lock or waits for it: all hang until `answer` goes.
        let hanging = (0..STRAGGLERS_MAX).map(|_| {
            let hung = hung.clone();
            disk.run(move || drop(hung.lock().map(|r| r.recv())))
        });
        for waited in futures_util::future::join_all(hanging).await {
            assert!(matches!(waited, Err(DiskError::Silent)));
        }
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        assert!(matches!(disk.run(move || flag.store(true, Ordering::SeqCst)).await, Err(DiskError::Silent)));
        assert!(!ran.load(Ordering::SeqCst), "refused without taking a thread");
        drop(answer);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while disk.stragglers.load(Ordering::SeqCst) > 0 {
            assert!(std::time::Instant::now() < deadline, "the stragglers ended");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(disk.run(|| 42).await.unwrap(), 42);
        let panicked = disk.run(|| panic!("a store's bug")).await;
        assert!(matches!(panicked, Err(DiskError::Panicked(_))));
    }
}
