//! The append and tail-fetch paths allocate per request and per write, never per record: a
//! batch of 1,000 records costs the heap as many allocations as a batch of one (issue 6:
//! "no allocation per record"). Counted by a global allocator on the executor's thread only;
//! its own test binary, since the allocator is process-wide.

mod common;

use bytes::Bytes;
use gregor_engine::batch::{SimpleRecord, encode_batch};
use gregor_engine::{BackendKind, Log, LogConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

struct Counting;

thread_local! {
    /// Allocations made on this thread while counting is on (`None`: off).
    static ALLOCATIONS: Cell<Option<u64>> = const { Cell::new(None) };
}

// SAFETY: every call is forwarded to `System` unchanged; the counter is a thread-local `Cell`
// of a `Copy` type with a const initializer, which never allocates or re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get().map(|n| n + 1)));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get().map(|n| n + 1)));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations `f` makes on this thread.
async fn allocations<T>(f: impl AsyncFnOnce() -> T) -> (u64, T) {
    ALLOCATIONS.with(|c| c.set(Some(0)));
    let out = f().await;
    let n = ALLOCATIONS.with(|c| c.replace(None)).unwrap_or(0);
    (n, out)
}

/// A batch of `records` records holding 64 KiB of values in all.
fn batch(records: usize, ts: i64) -> Vec<u8> {
    let value = vec![0x5a; 65_536 / records];
    let recs: Vec<SimpleRecord<'_>> = (0..records)
        .map(|i| SimpleRecord {
            timestamp_ms: ts + i as i64,
            key: None,
            value: Some(&value),
        })
        .collect();
    encode_batch(&recs)
}

/// Allocations per append and per tail read of a batch, at steady state (medians of 30).
async fn per_batch(log: &Log, records: usize) -> (u64, u64) {
    let batches: Vec<Bytes> = (0..60).map(|i| Bytes::from(batch(records, i))).collect();
    let (mut appends, mut reads) = (Vec::new(), Vec::new());
    for (i, b) in batches.into_iter().enumerate() {
        let (n, info) = allocations(async || log.append(b, 0, 1).await.unwrap()).await;
        log.set_high_watermark(log.log_end_offset());
        let (m, read) =
            allocations(async || log.read_for_send(info.base_offset, 1 << 20, i64::MAX).await)
                .await;
        assert!(!read.unwrap().data.is_empty());
        // The first appends warm up (segment state, the zero buffers, the reactor's tables).
        if i >= 30 {
            appends.push(n);
            reads.push(m);
        }
    }
    appends.sort();
    reads.sort();
    (appends[appends.len() / 2], reads[reads.len() / 2])
}

async fn no_allocation_per_record(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(&dir, LogConfig::default(), backend)
        .await
        .unwrap();
    let (append_one, read_one) = per_batch(&log, 1).await;
    let (append_many, read_many) = per_batch(&log, 1000).await;
    eprintln!(
        "{backend:?}: allocations per append {append_one} (1 record) / {append_many} (1000), per tail read {read_one} / {read_many}"
    );
    // A per-record allocation would add at least 1,000.
    assert!(
        append_many <= append_one + 2,
        "appending 1000 records: {append_many} allocations, one record: {append_one}"
    );
    assert!(
        read_many <= read_one + 2,
        "reading 1000 records: {read_many} allocations, one record: {read_one}"
    );
    // And per request only a few.
    assert!(append_one <= 40, "{append_one} allocations per append");
    assert!(read_one <= 20, "{read_one} allocations per tail read");
}

#[test]
fn no_allocation_per_record_both_backends() {
    common::run(BackendKind::Std, no_allocation_per_record);
    common::run(BackendKind::Dma, no_allocation_per_record);
}
