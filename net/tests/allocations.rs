//! The broker allocates per request, never per record: a Produce or a tail Fetch of a batch of
//! 4,000 records costs its threads about as many heap allocations as one of a single record
//! (issue 6: "no allocation per record"). Counted by a global allocator on every thread but the test
//! client's; its own test binary, since the allocator is process-wide.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use common::*;
use kafka_protocol::records::Compression;

/// The broker's allocator, counting.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the test client's thread, whose allocations are not the broker's.
    static CLIENT_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.load(Ordering::Relaxed) && !CLIENT_THREAD.try_with(Cell::get).unwrap_or(true) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the broker's own allocator unchanged; counting touches
// only atomics and a const-initialized thread-local `Cell<bool>`, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { gregor_net::alloc::GuardedAlloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { gregor_net::alloc::GuardedAlloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `GuardedAlloc`) with this layout.
        unsafe { gregor_net::alloc::GuardedAlloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { gregor_net::alloc::GuardedAlloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A batch of `records` records holding 64 KiB of values in all.
fn sized_batch(records: usize) -> Bytes {
    let value = "v".repeat(65_536 / records);
    let records: Vec<(&str, &str, i64)> =
        (0..records).map(|i| ("k", &value[..], i as i64)).collect();
    batch(&records, Compression::None)
}

/// Broker allocations per Produce (acks=1) and per tail Fetch of one such batch, averaged
/// over 100 of each after 50 to warm up.
fn per_request(c: &mut Client, topic_id: uuid::Uuid, records: usize) -> (f64, f64) {
    let b = sized_batch(records);
    let (mut produce, mut fetch) = (0, 0);
    for i in 0..150 {
        let measured = i >= 50;
        COUNTING.store(measured, Ordering::SeqCst);
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        let (code, offset) = c.produce("alloc", 0, b.clone(), 1);
        let after_produce = ALLOCATIONS.load(Ordering::SeqCst);
        assert_eq!(code, 0);
        let p = c.fetch(13, "alloc", topic_id, 0, offset, 0, 1);
        let after_fetch = ALLOCATIONS.load(Ordering::SeqCst);
        COUNTING.store(false, Ordering::SeqCst);
        assert_eq!(p.error_code, 0);
        assert!(p.records.as_ref().is_some_and(|r| !r.is_empty()));
        if measured {
            produce += after_produce - before;
            fetch += after_fetch - after_produce;
        }
    }
    (produce as f64 / 100.0, fetch as f64 / 100.0)
}

#[test]
fn the_broker_allocates_per_request_not_per_record() {
    CLIENT_THREAD.with(|c| c.set(true));
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("alloc", 1).topics[0].error_code, 0);
    let topic_id = topic_id(&c.metadata(Some(vec!["alloc"]), false), "alloc");
    let (produce_one, fetch_one) = per_request(&mut c, topic_id, 1);
    let (produce_many, fetch_many) = per_request(&mut c, topic_id, 4000);
    eprintln!(
        "broker allocations per Produce {produce_one:.1} (1 record) / {produce_many:.1} (4000), per tail Fetch {fetch_one:.1} / {fetch_many:.1}"
    );
    // A per-record allocation would add 4,000 per request. The counts also hold glommio's
    // own (a timer source per reactor turn, on every core), which vary a little with how
    // long a request takes: about +16 for 4,000 records here.
    assert!(
        produce_many <= produce_one + 200.0,
        "Produce of 4000 records: {produce_many} allocations, of one: {produce_one}"
    );
    assert!(
        fetch_many <= fetch_one + 200.0,
        "Fetch of 4000 records: {fetch_many} allocations, of one: {fetch_one}"
    );
}
