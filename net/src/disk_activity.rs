//! When any core last appended produced records, seen by every core.
//!
//! Why: reading ahead of a catch-up consumer (`page_cache::start_reads`) keeps the disk busy
//! between its fetches (catch-up consume: median 2,450 against 2,100 MB/s in alternating
//! runs, noisy; docs/BENCHMARKS.md, change 23). But with acks=1 every append is a write the
//! disk serves synchronously (it extends the file), and it waits behind every read the disk
//! has queued: producers on the same broker saw their end-to-end p99 rise 2-5x during a
//! catch-up with read-ahead. So cold ranges are read ahead only while no records have been
//! appended for a while; otherwise the catch-up reads what it asks for, as before. The disk
//! is shared by all cores, hence one clock for all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// No appends for this long, and the disk is the catch-up's to use.
pub const READ_AHEAD_QUIET_MS: u64 = 500;

/// The time of the latest append, in ms since the broker started (shared by all cores).
#[derive(Debug)]
pub struct AppendActivity {
    started: Instant,
    /// 0: no append yet; otherwise ms since `started`, plus 1.
    last_append_ms: AtomicU64,
}

impl AppendActivity {
    /// No appends yet.
    pub fn new() -> std::sync::Arc<AppendActivity> {
        std::sync::Arc::new(AppendActivity {
            started: Instant::now(),
            last_append_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// Records an append starting now. Writes the shared line at most once per ms per core,
    /// so cores appending at high rates do not bounce it between them.
    pub fn note_append(&self) {
        let now = self.now_ms();
        if self.last_append_ms.load(Ordering::Relaxed) < now {
            self.last_append_ms.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Whether no append has started for at least `quiet_ms`.
    pub fn quiet_for(&self, quiet_ms: u64) -> bool {
        let last = self.last_append_ms.load(Ordering::Relaxed);
        last == 0 || self.now_ms().saturating_sub(last) >= quiet_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_until_an_append_then_after_the_interval() {
        let activity = AppendActivity::new();
        assert!(activity.quiet_for(READ_AHEAD_QUIET_MS), "no append yet");
        activity.note_append();
        assert!(!activity.quiet_for(50));
        std::thread::sleep(std::time::Duration::from_millis(80));
        assert!(activity.quiet_for(50), "80 ms after the last append");
        assert!(!activity.quiet_for(10_000));
        activity.note_append();
        assert!(!activity.quiet_for(50), "a new append");
    }
}
