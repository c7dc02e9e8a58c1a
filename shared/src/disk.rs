//! Disk work of a request (the integrations file, the console's tokens file), off the async
//! workers and with a deadline. An fsync on a slow disk must not stall the workers serving other
//! requests, and a disk that stops answering (a hung network mount) must fail the request, not hold
//! it, and whatever lock its caller took, for as long as the disk hangs.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// How long a caller waits for its disk work.
pub const DISK_WORK_FOR: Duration = Duration::from_secs(10);
/// How many threads of the blocking pool one store's disk work holds at most, including work
/// its callers stopped waiting for (it runs on until the disk answers).
pub const THREADS_MAX: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The work may run on: a write may still land (read before trying again).
    #[error("the disk did not answer within {}s (a save may still land: read it again before retrying)", DISK_WORK_FOR.as_secs())]
    Silent,
    /// A panic in the work: an error of the store, not of its caller.
    #[error("the disk work did not finish: {0}")]
    Panicked(String),
}

/// One store's disk work: at most [`THREADS_MAX`] threads of the blocking pool at once. A job
/// holds its thread until it ends, even after its caller gave up on it, so a hung disk (a hung
/// network mount) takes neither every thread of the pool nor more than its share: work beyond
/// waits for a thread within the same deadline, and fails with it.
#[derive(Clone)]
pub struct Disk {
    threads: Arc<Semaphore>,
    deadline: Duration,
}

impl Default for Disk {
    fn default() -> Self {
        Disk { threads: Arc::new(Semaphore::new(THREADS_MAX)), deadline: DISK_WORK_FOR }
    }
}

impl Disk {
    /// Runs `work` on the blocking pool and waits for it (and for a thread) at most
    /// [`DISK_WORK_FOR`]. Work still running at the deadline runs on to its end: a caller that
    /// must not write beside it moves its lock into `work`.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, DiskError> {
        let threads = self.threads.clone();
        let job = async move {
            let thread = threads.acquire_owned().await.map_err(|_| DiskError::Silent)?;
            let job = tokio::task::spawn_blocking(move || {
                let _thread = thread;
                work()
            });
            job.await.map_err(|failed| DiskError::Panicked(failed.to_string()))
        };
        tokio::time::timeout(self.deadline, job).await.unwrap_or(Err(DiskError::Silent))
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

    /// Jobs that hang (here on a channel nobody sends on yet) are given up at the deadline and
    /// hold their threads; past [`THREADS_MAX`] of them new work waits, and fails at the deadline
    /// without running; their end frees the threads.
    #[tokio::test]
    async fn a_hung_disk_holds_at_most_a_bound_of_threads_and_frees_them_when_it_answers() {
        let disk = Disk { deadline: Duration::from_secs(1), ..Disk::default() };
        let (answer, hung) = std::sync::mpsc::channel::<()>();
        let hung = Arc::new(std::sync::Mutex::new(hung));
        // Each holds the receiver's lock or waits for it: all hang until `answer` goes.
        let hanging = (0..THREADS_MAX).map(|_| {
            let hung = hung.clone();
            disk.run(move || drop(hung.lock().map(|r| r.recv())))
        });
        for waited in futures_util::future::join_all(hanging).await {
            assert!(matches!(waited, Err(DiskError::Silent)));
        }
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let refused = disk.run(move || flag.store(true, std::sync::atomic::Ordering::SeqCst)).await;
        assert!(matches!(refused, Err(DiskError::Silent)));
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "it waited for a thread and never ran");
        drop(answer);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while disk.threads.available_permits() < THREADS_MAX {
            assert!(std::time::Instant::now() < deadline, "the hung jobs ended");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(disk.run(|| 42).await.unwrap(), 42);
        let panicked = disk.run(|| panic!("a store's bug")).await;
        assert!(matches!(panicked, Err(DiskError::Panicked(_))));
        assert_eq!(disk.threads.available_permits(), THREADS_MAX, "a panic frees its thread");
    }
}
