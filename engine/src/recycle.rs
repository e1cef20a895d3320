//! Retired segment files reused as new segments (Dma backend).
//!
//! Why: deleting old segments and allocating new ones both happen at the write rate once
//! retention runs. On ext4 with online `discard`, freed extents are trimmed inside journal
//! commits that extending appends wait for (the soak test measured p99 in seconds), and the
//! new segment needs zeros written ahead of its appends (`zero_ahead.rs`), which doubles the
//! disk writes. A recycled file costs neither: appends overwrite blocks that hold old data.
//!
//! A retired `.log` is renamed `*.deleted`, as before, but kept in its log's spare list
//! instead of going to the deleter. At the next roll, a spare whose `file.delete.delay.ms`
//! has passed and that no reader holds any more is renamed to the new segment's name.
//!
//! Why the stale bytes past the new data are harmless: reads stop at the segment's logical
//! size, sealing cuts the file to its data, and crash recovery stops at the first stale batch,
//! because it carries an offset below the new segment's base offset. That holds because only
//! segments removed below the log start are kept, each log keeps its own, and a truncation
//! (which can move the log end below old offsets) deletes every spare first.

use crate::deleter;
use crate::segment::Segment;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// Most spares one log keeps (ready or not); beyond it, retired files are deleted as before.
const SPARES_MAX: usize = 256;
/// Most ready spares kept unused; older ready ones are deleted.
const READY_SPARES_MAX: usize = 2;
/// A ready spare unused for this long is deleted, so an idle partition gives its disk back.
const READY_KEEP: Duration = Duration::from_secs(60);
/// Smaller files are not worth keeping: most of a new segment would extend them anyway.
const SPARE_BYTES_MIN: u64 = 1 << 20;

/// A retired segment's files, renamed `*.deleted`. The index files come along so that the
/// new segment's indexes overwrite their blocks too: deleting them frees blocks at every roll.
pub(crate) struct SpareFileSet {
    pub log: PathBuf,
    pub index: Option<PathBuf>,
    pub time_index: Option<PathBuf>,
}

impl SpareFileSet {
    /// Hands every file to the deleter, after `delay`.
    pub(crate) fn delete(self, delay: Duration) {
        for path in [Some(self.log), self.index, self.time_index]
            .into_iter()
            .flatten()
        {
            deleter::schedule(path, delay);
        }
    }
}

struct Spare {
    files: SpareFileSet,
    /// When `file.delete.delay.ms` has passed.
    ready_at: Instant,
    /// Readers of the old segment hold an `Rc` while they read through it.
    segment: Weak<Segment>,
    /// Zero-copy sends in flight hold the buffered descriptor.
    send_file: Option<std::sync::Weak<std::fs::File>>,
}

impl Spare {
    fn in_use(&self) -> bool {
        self.segment.strong_count() > 0
            || self
                .send_file
                .as_ref()
                .is_some_and(|f| f.strong_count() > 0)
    }

    fn delete(self, now: Instant) {
        let delay = self.ready_at.saturating_duration_since(now);
        self.files.delete(delay);
    }
}

/// Renames `path` to `path.deleted`; `None` if that failed (the file stays where it is).
fn rename_retired(path: &std::path::Path) -> Option<PathBuf> {
    let mut retired = path.as_os_str().to_owned();
    retired.push(deleter::DELETED_SUFFIX);
    let retired = PathBuf::from(retired);
    std::fs::rename(path, &retired).ok()?;
    Some(retired)
}

/// One log's retired `.log` files waiting to be reused.
#[derive(Default)]
pub(crate) struct SpareFiles {
    spares: VecDeque<Spare>,
}

impl SpareFiles {
    /// Keeps `segment`'s files (renamed `*.deleted`) as a spare, usable after `delay`.
    /// `false` if they are not worth keeping or the rename failed: the caller retires them as
    /// usual.
    pub(crate) fn keep(&mut self, segment: &Rc<Segment>, delay: Duration) -> bool {
        let file_bytes = std::fs::metadata(&segment.log_path).map_or(0, |m| m.len());
        if file_bytes < SPARE_BYTES_MIN || self.spares.len() >= SPARES_MAX {
            return false;
        }
        let Some(log) = rename_retired(&segment.log_path) else {
            tracing::debug!(path = %segment.log_path.display(), "could not keep segment file as a spare");
            return false;
        };
        let files = SpareFileSet {
            log,
            index: rename_retired(&segment.index_path),
            time_index: rename_retired(&segment.time_index_path),
        };
        self.spares.push_back(Spare {
            files,
            ready_at: Instant::now() + delay,
            segment: Rc::downgrade(segment),
            send_file: segment.send_file.get().map(std::sync::Arc::downgrade),
        });
        true
    }

    /// Takes a spare for a new segment: one whose delay has passed and that no reader holds.
    pub(crate) fn take(&mut self, now: Instant) -> Option<SpareFileSet> {
        let i = self
            .spares
            .iter()
            .take_while(|s| s.ready_at <= now)
            .position(|s| !s.in_use())?;
        self.spares.remove(i).map(|s| s.files)
    }

    /// Deletes ready spares beyond the newest `READY_SPARES_MAX`, and any left unused for
    /// `READY_KEEP`. A spare a reader still holds stays until the next trim: deleting shrinks
    /// the file first, under the reader.
    pub(crate) fn trim(&mut self, now: Instant) {
        let ready = self.spares.iter().take_while(|s| s.ready_at <= now).count();
        let mut kept = 0;
        for i in (0..ready).rev() {
            let spare = &self.spares[i];
            if spare.in_use() {
                continue;
            }
            if spare.ready_at + READY_KEEP > now && kept < READY_SPARES_MAX {
                kept += 1;
                continue;
            }
            if let Some(spare) = self.spares.remove(i) {
                spare.delete(now);
            }
        }
    }

    /// Deletes every spare (each after what is left of its delay).
    pub(crate) fn clear(&mut self) {
        let now = Instant::now();
        for s in self.spares.drain(..) {
            s.delete(now);
        }
    }

    /// Forgets every spare without deleting it (its directory is being deleted whole).
    pub(crate) fn forget(&mut self) {
        self.spares.clear();
    }

    pub(crate) fn count(&self) -> usize {
        self.spares.len()
    }
}
