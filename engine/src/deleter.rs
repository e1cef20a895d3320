//! Background file deletion, off the executor threads.
//!
//! Deleting a segment frees its disk blocks, and on ext4 under write load one `unlink` (or
//! the last `close` of an unlinked file) measured 15-70 ms; a retention pass deleting a few
//! segments stalled every partition of its core for up to 2 s (the soak test found it).
//! So a log only *renames* a retired file to `<name>.deleted` (a metadata change, microseconds)
//! and hands the path to this module's single thread, which unlinks it after
//! `file.delete.delay.ms` (as Kafka does; the delay also lets in-flight reads of the segment
//! finish on their open descriptors). Files still waiting when the process dies keep their
//! `.deleted` suffix, and [`crate::Log::open`] schedules them again.
//!
//! The queue is bounded: when it is full, the caller deletes inline (slow, but nothing grows).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Suffix of a retired file (or directory) waiting for deletion.
pub const DELETED_SUFFIX: &str = ".deleted";

/// Most deletions queued at once; beyond it, callers delete inline.
const QUEUE_CAPACITY: usize = 65_536;

struct Job {
    due: Instant,
    /// What to delete; `None` for a `wait_idle` marker.
    path: Option<PathBuf>,
    /// Signalled when the thread reaches this job.
    done: Option<SyncSender<()>>,
}

static SENDER: OnceLock<Mutex<Option<SyncSender<Job>>>> = OnceLock::new();

fn sender() -> Option<SyncSender<Job>> {
    let slot = SENDER.get_or_init(|| {
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let spawned = std::thread::Builder::new()
            .name("gregor-deleter".into())
            .spawn(move || run(rx));
        match spawned {
            Ok(_) => Mutex::new(Some(tx)),
            Err(e) => {
                tracing::warn!(error = %e, "no deleter thread; files are deleted inline");
                Mutex::new(None)
            }
        }
    });
    slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Renames `path` to `path.deleted` and schedules its deletion after `delay`. A file that
/// does not exist is ignored. Returns the error of a failed rename (the file stays in place).
pub(crate) fn retire(path: &Path, delay: Duration) -> std::io::Result<()> {
    let mut retired = path.as_os_str().to_owned();
    retired.push(DELETED_SUFFIX);
    let retired = PathBuf::from(retired);
    match std::fs::rename(path, &retired) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    schedule(retired, delay);
    Ok(())
}

/// Deletes `path` (a file or a directory tree) after `delay`, on the deleter thread.
pub(crate) fn schedule(path: PathBuf, delay: Duration) {
    let job = Job {
        due: Instant::now() + delay,
        path: Some(path),
        done: None,
    };
    let job = match sender() {
        Some(tx) => match tx.try_send(job) {
            Ok(()) => return,
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => job,
        },
        None => job,
    };
    if let Some(path) = &job.path {
        remove(path);
    }
}

/// Blocks until every deletion queued so far whose delay has already passed is done, for at
/// most `timeout`; returns whether it got there. For tests, and for tools that want the disk
/// space back now.
pub fn wait_idle(timeout: Duration) -> bool {
    let Some(tx) = sender() else { return true };
    let (done_tx, done_rx) = sync_channel::<()>(1);
    let marker = Job {
        due: Instant::now(),
        path: None,
        done: Some(done_tx),
    };
    if tx.send(marker).is_err() {
        return true;
    }
    done_rx.recv_timeout(timeout).is_ok()
}

fn run(rx: Receiver<Job>) {
    // Ordered by (due, arrival), so equal deadlines keep their order.
    let mut pending: BTreeMap<(Instant, u64), Job> = BTreeMap::new();
    let mut arrival = 0u64;
    loop {
        let now = Instant::now();
        while pending
            .first_key_value()
            .is_some_and(|((due, _), _)| *due <= now)
        {
            let Some((_, job)) = pending.pop_first() else {
                break;
            };
            if let Some(path) = &job.path {
                remove(path);
            }
            if let Some(done) = job.done {
                let _ = done.send(());
            }
        }
        let received = match pending.first_key_value() {
            Some(((due, _), _)) => rx.recv_timeout(due.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(job) => {
                arrival += 1;
                pending.insert((job.due, arrival), job);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Bytes freed per step when shrinking a big file before its unlink, and the pause between
/// steps. Freeing a whole 64 MiB segment's blocks in one call held the filesystem journal long
/// enough to stall the broker's concurrent O_DIRECT appends for seconds (ext4, soak test);
/// in steps, appends interleave with the freeing.
const SHRINK_STEP_BYTES: u64 = 4 << 20;
const SHRINK_PAUSE: Duration = Duration::from_millis(2);

fn remove(path: &Path) {
    let result = if path.is_dir() {
        remove_dir_gradually(path)
    } else {
        remove_file_gradually(path)
    };
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not delete retired file")
        }
    }
}

fn remove_file_gradually(path: &Path) -> std::io::Result<()> {
    let len = std::fs::metadata(path)?.len();
    if len > SHRINK_STEP_BYTES {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        let mut size = len;
        while size > SHRINK_STEP_BYTES {
            size -= SHRINK_STEP_BYTES;
            file.set_len(size)?;
            std::thread::sleep(SHRINK_PAUSE);
        }
    }
    std::fs::remove_file(path)
}

fn remove_dir_gradually(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            remove_dir_gradually(&path)?;
        } else {
            remove_file_gradually(&path)?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Retires a whole directory (a deleted partition): renames it to
/// `<dir>.<unix nanos>.deleted`, so a topic re-created at once gets a fresh directory, and
/// deletes it on the deleter thread. Returns the rename's error (the directory stays).
pub fn retire_dir(dir: &Path) -> std::io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut retired = dir.as_os_str().to_owned();
    retired.push(format!(".{nanos}{DELETED_SUFFIX}"));
    let retired = PathBuf::from(retired);
    std::fs::rename(dir, &retired)?;
    schedule(retired, Duration::ZERO);
    Ok(())
}

/// Schedules the deletion of every `*.deleted` entry directly in `dir`: what a previous
/// process retired but did not get to delete before it stopped.
pub fn sweep_retired(dir: &Path) -> std::io::Result<usize> {
    let mut swept = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(DELETED_SUFFIX)
        {
            schedule(entry.path(), Duration::ZERO);
            swept += 1;
        }
    }
    Ok(swept)
}
