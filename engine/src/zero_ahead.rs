//! Space prepared ahead of the appends of the active segment (Dma backend): zeros written
//! ahead of small appends, blocks allocated ahead of large ones.
//!
//! Why: on ext4 an O_DIRECT write that extends a file cannot be issued without blocking, so
//! io_uring hands every such append to a kernel worker thread, and an fdatasync after it must
//! commit the journal (the size change). A write over blocks that already hold data is issued
//! inline and an fdatasync then only flushes data. So a background write of zeros keeps
//! written blocks ahead of small appends. For large appends the zeros would double the disk
//! writes; there a background `fallocate` keeps allocated (unwritten) blocks inside the file
//! size ahead of the appends instead. ext4 issues a write inline when its whole range is one
//! kind of block (`ext4_overwrite_io`), and an append starts by rewriting the partly filled
//! last block, which is written: so an append reaching into allocated blocks is written as two
//! writes, split where the written blocks end (`split_point`), each issued inline.
//!
//! The one rule that keeps data safe: a zero write and an append never cover the same block at
//! the same time. Zeros only go past everything an append has written or is writing, and an
//! append that reaches into a zero write still in flight waits for it first. Allocation never
//! changes a block that holds data, so it may run beside appends; sealing and truncation wait
//! for both (`settle`), so nothing lands past a cut.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Largest zero write; also the size of the per-core zero buffer of the largest class. For
/// logs that are flushed: every fdatasync waits for all writes anyway, and fewer, larger zero
/// writes cost less.
pub(crate) const ZERO_CHUNK_BYTES_MAX: u64 = 4 << 20;
/// Largest zero write for logs that are never flushed (acks=1). There an append's latency is
/// its own write's, and a zero write ahead of it in the device's queue delays it: with 4 MiB
/// chunks at 100,000 records/s, end-to-end p99 went from 8-10 to 37 ms and produce p99 from
/// 6-8 to 23-77 ms; with 256 KiB chunks produce p99 was 5-6 ms (BENCHMARKS.md, change 26).
pub(crate) const ZERO_CHUNK_BYTES_UNFLUSHED_MAX: u64 = 256 << 10;
/// Smallest zero write: below this, a partition writes too little for zeros to pay off.
pub(crate) const ZERO_CHUNK_BYTES_MIN: u64 = 64 << 10;
/// Zeros kept ahead, in chunks: the next chunk starts while the appends have this many left.
const CHUNKS_AHEAD: u64 = 4;
/// Largest allocation ahead: blocks are allocated up to two of these past the appends, so an
/// active segment holds at most 16 MiB of allocated blocks past its data (as with the zeros).
pub(crate) const ALLOCATE_CHUNK_BYTES_MAX: u64 = 8 << 20;

/// Per-segment state of the zeros written ahead.
#[derive(Debug)]
pub(crate) struct ZeroAhead {
    /// Every byte below this has been written at least once (data or zeros), or is being
    /// written by an append now.
    written_end: Cell<u64>,
    /// The zero write in flight, `[start, end)`.
    in_flight: Cell<Option<(u64, u64)>>,
    /// Appends waiting for the zero write in flight. Only the writer of the segment waits (it
    /// holds the log's write lock), so this stays at one or two entries.
    waiters: RefCell<Vec<Waker>>,
    /// Every byte below this lies within the file size, on allocated blocks (written or not).
    allocated_end: Cell<u64>,
    /// The file size the allocation in flight extends the file to.
    allocating: Cell<Option<u64>>,
    /// Appends told to split (counted for tests).
    split_appends: Cell<u64>,
    /// A zero write or an allocation failed (a full disk, a file system without `fallocate`):
    /// nothing more is prepared ahead in this segment, rather than one failing call per
    /// append. The next segment tries again.
    failed: Cell<bool>,
}

impl ZeroAhead {
    /// For a file whose first `file_bytes` bytes have been written.
    pub(crate) fn new(file_bytes: u64) -> ZeroAhead {
        ZeroAhead {
            written_end: Cell::new(file_bytes),
            in_flight: Cell::new(None),
            waiters: RefCell::new(Vec::new()),
            allocated_end: Cell::new(file_bytes),
            allocating: Cell::new(None),
            split_appends: Cell::new(0),
            failed: Cell::new(false),
        }
    }

    /// Before an append writes `[start, end)`: wait while a zero write overlaps it. On return
    /// the range is recorded as written, so no zero write is placed over it afterwards (the
    /// caller issues its write before its next await). Returns where to split the write so
    /// each part is issued inline (`split_point`), decided before that record.
    pub(crate) async fn before_append(&self, start: u64, end: u64) -> Option<u64> {
        poll_fn(|cx| match self.in_flight.get() {
            Some((s, e)) if s < end && start < e => {
                self.register(cx.waker());
                Poll::Pending
            }
            _ => Poll::Ready(()),
        })
        .await;
        let split = split_point(start, end, self.written_end.get(), self.allocated_end.get());
        self.written_end.set(self.written_end.get().max(end));
        if split.is_some() {
            self.split_appends.set(self.split_appends.get() + 1);
        }
        split
    }

    /// How many appends `before_append` told to split.
    pub(crate) fn split_appends(&self) -> u64 {
        self.split_appends.get()
    }

    /// Wait until no zero write or allocation is in flight (before the file is truncated or
    /// sealed, so that nothing lands past the new end afterwards).
    pub(crate) async fn settle(&self) {
        poll_fn(|cx| {
            if self.in_flight.get().is_some() || self.allocating.get().is_some() {
                self.register(cx.waker());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }

    /// Adds a waiter, once per task: a task that polls a waiting future again before it is
    /// woken (a join of several appends does) must not add a waker each time. The list would
    /// grow with every poll, and glommio panics once a task has 32,767 wakers alive.
    fn register(&self, waker: &Waker) {
        let mut waiters = self.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
    }

    /// The file was cut to `file_bytes` (caller settled first).
    pub(crate) fn truncated(&self, file_bytes: u64) {
        debug_assert!(self.in_flight.get().is_none() && self.allocating.get().is_none());
        self.written_end.set(file_bytes);
        // Blocks past the new size are freed with it.
        self.allocated_end.set(file_bytes);
    }

    /// Claims the next allocation, if one is due: the appends have come within one chunk of
    /// the allocated end. Returns the file size to allocate up to: two chunks past
    /// `append_end`, a chunk being about a quarter of `data_bytes` (as for zeros) up to
    /// `plan.allocate_chunk_max_bytes`, never past `plan.limit_bytes`.
    pub(crate) fn claim_allocation(
        &self,
        append_end: u64,
        data_bytes: u64,
        plan: ZeroPlan,
    ) -> Option<u64> {
        if self.allocating.get().is_some() || self.failed.get() {
            return None;
        }
        let chunk = chunk_bytes(data_bytes, plan.allocate_chunk_max_bytes)?;
        let allocated = self.allocated_end.get();
        if allocated >= append_end + chunk {
            return None;
        }
        let to = (append_end + 2 * chunk).min(plan.limit_bytes);
        if to <= allocated || to <= append_end {
            return None;
        }
        self.allocating.set(Some(to));
        Some(to)
    }

    /// The claimed allocation finished (`allocated`: it succeeded).
    pub(crate) fn allocation_finished(&self, to: u64, allocated: bool) {
        debug_assert_eq!(self.allocating.get(), Some(to));
        self.allocating.set(None);
        if allocated {
            self.allocated_end.set(self.allocated_end.get().max(to));
        } else {
            self.failed.set(true);
        }
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Claims the next zero write, if one is due: the appends have reached within
    /// `CHUNKS_AHEAD` chunks of the written end. `data_bytes` (bytes of data in the segment)
    /// sizes the chunk, up to `plan.chunk_max_bytes`, so a slow partition only zeroes about as
    /// much as it writes; nothing goes past `plan.limit_bytes` (the segment's size limit).
    pub(crate) fn claim(
        &self,
        append_end: u64,
        data_bytes: u64,
        plan: ZeroPlan,
    ) -> Option<(u64, u64)> {
        let limit_bytes = plan.limit_bytes;
        if self.in_flight.get().is_some() || self.failed.get() {
            return None;
        }
        let chunk = chunk_bytes(data_bytes, plan.chunk_max_bytes)?;
        let start = self.written_end.get().max(append_end);
        if start >= append_end + CHUNKS_AHEAD * chunk || start + chunk > limit_bytes {
            return None;
        }
        self.in_flight.set(Some((start, start + chunk)));
        Some((start, start + chunk))
    }

    /// The claimed zero write finished (`written`: it succeeded).
    pub(crate) fn finished(&self, start: u64, end: u64, written: bool) {
        debug_assert_eq!(self.in_flight.get(), Some((start, end)));
        self.in_flight.set(None);
        if written {
            self.written_end.set(self.written_end.get().max(end));
        } else {
            self.failed.set(true);
        }
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

/// How far zeros may go ahead of an append, and in what size of write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ZeroPlan {
    /// Zeros may go up to this file size (the segment's size limit); 0: no zeros.
    pub limit_bytes: u64,
    /// Largest zero write (`ZERO_CHUNK_BYTES_MAX` or `ZERO_CHUNK_BYTES_UNFLUSHED_MAX`); 0: no
    /// zeros.
    pub chunk_max_bytes: u64,
    /// Largest allocation ahead (`ALLOCATE_CHUNK_BYTES_MAX`); 0: none.
    pub allocate_chunk_max_bytes: u64,
}

impl ZeroPlan {
    /// Nothing prepared ahead of this append.
    pub(crate) const NONE: ZeroPlan = ZeroPlan {
        limit_bytes: 0,
        chunk_max_bytes: 0,
        allocate_chunk_max_bytes: 0,
    };
}

/// Where to split an append writing `[start, end)` so that each part is one kind of block:
/// at `written_end` when the range starts in written blocks and runs into allocated, unwritten
/// ones (the usual large append: it rewrites the partly filled last block, then fills
/// allocated blocks). `None`: one write (all one kind already, or reaching past the
/// allocation, where ext4 blocks whatever the split).
pub(crate) fn split_point(
    start: u64,
    end: u64,
    written_end: u64,
    allocated_end: u64,
) -> Option<u64> {
    let aligned = written_end.is_multiple_of(crate::io::BLOCK_BYTES);
    (start < written_end && written_end < end && end <= allocated_end && aligned)
        .then_some(written_end)
}

/// The zero write size for a segment holding `data_bytes`: a power of two from
/// `ZERO_CHUNK_BYTES_MIN` to `chunk_max_bytes`, about a quarter of the data, so the zeros
/// kept ahead never exceed the data already written. `None` below the minimum.
pub(crate) fn chunk_bytes(data_bytes: u64, chunk_max_bytes: u64) -> Option<u64> {
    let quarter = data_bytes / CHUNKS_AHEAD;
    if quarter < ZERO_CHUNK_BYTES_MIN || chunk_max_bytes < ZERO_CHUNK_BYTES_MIN {
        return None;
    }
    let pow2 = 1u64 << (63 - quarter.leading_zeros());
    Some(pow2.min(chunk_max_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    const PLAN: ZeroPlan = ZeroPlan {
        limit_bytes: 1 << 30,
        chunk_max_bytes: ZERO_CHUNK_BYTES_MAX,
        allocate_chunk_max_bytes: 0,
    };

    #[test]
    fn chunk_sizes() {
        let max = ZERO_CHUNK_BYTES_MAX;
        assert_eq!(chunk_bytes(0, max), None);
        assert_eq!(chunk_bytes(4 * ZERO_CHUNK_BYTES_MIN - 1, max), None);
        assert_eq!(
            chunk_bytes(4 * ZERO_CHUNK_BYTES_MIN, max),
            Some(ZERO_CHUNK_BYTES_MIN)
        );
        assert_eq!(chunk_bytes(3 << 20, max), Some(512 << 10));
        assert_eq!(chunk_bytes(1 << 30, max), Some(ZERO_CHUNK_BYTES_MAX));
        // Logs that are not flushed zero in smaller steps.
        let small = ZERO_CHUNK_BYTES_UNFLUSHED_MAX;
        assert_eq!(chunk_bytes(3 << 20, small), Some(256 << 10));
        assert_eq!(chunk_bytes(1 << 30, small), Some(256 << 10));
        assert_eq!(chunk_bytes(1 << 30, 0), None);
    }

    #[test]
    fn a_waiting_append_polled_again_keeps_one_waker() {
        let z = ZeroAhead::new(0);
        block_on(async {
            let (s, e) = z.claim(0, 64 << 20, PLAN).expect("due");
            let mut waiting = Box::pin(z.before_append(s, s + 4096));
            let mut settling = Box::pin(z.settle());
            for _ in 0..1000 {
                assert!(poll_once(&mut waiting).await.is_none());
                assert!(poll_once(&mut settling).await.is_none());
            }
            // Both futures belong to this one task.
            assert_eq!(z.waiters.borrow().len(), 1);
            z.finished(s, e, true);
            assert!(z.waiters.borrow().is_empty());
            assert!(poll_once(&mut waiting).await.is_some());
            assert!(poll_once(&mut settling).await.is_some());
        });
    }

    #[test]
    fn appends_split_where_written_blocks_meet_allocated_ones() {
        const B: u64 = crate::io::BLOCK_BYTES;
        // Rewrites the written partial block, then fills allocated blocks: split after it.
        assert_eq!(split_point(8 * B, 72 * B, 9 * B, 1 << 20), Some(9 * B));
        // All written, all unwritten, or reaching past the allocation: one write.
        assert_eq!(split_point(8 * B, 72 * B, 72 * B, 1 << 20), None);
        assert_eq!(split_point(8 * B, 72 * B, 8 * B, 1 << 20), None);
        assert_eq!(split_point(8 * B, 72 * B, 9 * B, 71 * B), None);
        // A written end inside a block (a truncated or recycled file) gives no clean split.
        assert_eq!(split_point(8 * B, 72 * B, 9 * B + 100, 1 << 20), None);
    }

    #[test]
    fn allocation_runs_ahead_once_at_a_time_and_stops_at_truncation() {
        let plan = ZeroPlan {
            limit_bytes: 64 << 20,
            chunk_max_bytes: 0,
            allocate_chunk_max_bytes: ALLOCATE_CHUNK_BYTES_MAX,
        };
        let z = ZeroAhead::new(0);
        // Too little data for a chunk: nothing allocated.
        assert_eq!(z.claim_allocation(4096, 100 << 10, plan), None);
        // A quarter of the data per chunk, two chunks past the appends.
        let to = z.claim_allocation(1 << 20, 4 << 20, plan).expect("due");
        assert_eq!(to, (1 << 20) + 2 * (1 << 20));
        assert_eq!(
            z.claim_allocation(1 << 20, 4 << 20, plan),
            None,
            "one at a time"
        );
        // Settling waits for it.
        block_on(async {
            let mut settling = Box::pin(z.settle());
            assert!(poll_once(&mut settling).await.is_none());
            z.allocation_finished(to, true);
            assert!(poll_once(&mut settling).await.is_some());
        });
        // Not due again until the appends come within a chunk (1 MiB) of the allocated end.
        assert_eq!(z.claim_allocation(2 << 20, 4 << 20, plan), None);
        let next = z.claim_allocation(5 << 19, 4 << 20, plan).expect("due");
        assert_eq!(next, (5 << 19) + (2 << 20));
        // A failed allocation leaves the allocated end where it was, and none follows in
        // this segment (a full disk: not one failing call per append).
        z.allocation_finished(next, false);
        assert_eq!(z.allocated_end.get(), 3 << 20);
        assert_eq!(z.claim_allocation(5 << 19, 4 << 20, plan), None);
        assert_eq!(z.claim(5 << 19, 4 << 20, PLAN), None, "no zeros either");
        // Capped at the segment's size limit; a truncation drops what lay past it.
        let z = ZeroAhead::new(0);
        let big = z.claim_allocation(63 << 20, 1 << 30, plan).expect("due");
        assert_eq!(big, 64 << 20);
        z.allocation_finished(big, true);
        z.truncated(1 << 20);
        assert_eq!(
            split_point(0, 2 << 20, 1 << 20, z.allocated_end.get()),
            None
        );
    }

    #[test]
    fn zeros_never_overlap_an_append() {
        let z = ZeroAhead::new(0);
        let data = 64 << 20;
        block_on(async {
            z.before_append(0, 4096).await;
            let (s, e) = z.claim(4096, data, PLAN).expect("due");
            assert_eq!((s, e), (4096, 4096 + ZERO_CHUNK_BYTES_MAX));
            // One in flight at a time.
            assert!(z.claim(4096, data, PLAN).is_none());
            // An append below the zeros proceeds; one reaching into them waits.
            assert!(poll_once(z.before_append(0, 4096)).await.is_some());
            let mut reaching = Box::pin(z.before_append(4096, 8192));
            assert!(poll_once(&mut reaching).await.is_none());
            z.finished(s, e, true);
            assert!(poll_once(&mut reaching).await.is_some());
            // The next chunk starts at the written end, past the append.
            let (s2, _) = z.claim(8192, data, PLAN).expect("due");
            assert_eq!(s2, e);
            z.finished(s2, s2 + ZERO_CHUNK_BYTES_MAX, false);
            // A failed write leaves the written end where it was, and no zero write follows
            // in this segment (a full disk: not one failing write per append).
            assert_eq!(z.written_end.get(), e);
            assert_eq!(z.claim(8192, data, PLAN), None);
        });
    }

    #[test]
    fn appends_past_the_zeros_move_them_on() {
        let z = ZeroAhead::new(0);
        block_on(z.before_append(0, 100 << 20));
        let (s, _) = z.claim(100 << 20, 100 << 20, PLAN).expect("due");
        assert_eq!(s, 100 << 20);
        z.finished(s, s + ZERO_CHUNK_BYTES_MAX, true);
        // Chunks follow one another until CHUNKS_AHEAD of them lie ahead, then none is due.
        for _ in 1..CHUNKS_AHEAD {
            let (s, e) = z.claim(100 << 20, 100 << 20, PLAN).expect("due");
            z.finished(s, e, true);
        }
        assert!(z.claim(100 << 20, 100 << 20, PLAN).is_none());
        // Nothing past the limit.
        let z = ZeroAhead::new(0);
        let short = ZeroPlan {
            limit_bytes: ZERO_CHUNK_BYTES_MAX - 1,
            ..PLAN
        };
        assert!(z.claim(0, 100 << 20, short).is_none());
        // Logs that are not flushed zero ahead in small chunks, still CHUNKS_AHEAD of them.
        let z = ZeroAhead::new(0);
        let unflushed = ZeroPlan {
            chunk_max_bytes: ZERO_CHUNK_BYTES_UNFLUSHED_MAX,
            ..PLAN
        };
        for i in 0..CHUNKS_AHEAD {
            let (s, e) = z.claim(0, 100 << 20, unflushed).expect("due");
            assert_eq!((s, e - s), (i * (256 << 10), 256 << 10));
            z.finished(s, e, true);
        }
        assert!(z.claim(0, 100 << 20, unflushed).is_none());
    }
}
