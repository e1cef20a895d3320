//! Retention, DeleteRecords, truncation, timestamps, flush and concurrency, on both backends.

mod common;

use bytes::Bytes;
use common::{batch, small_config};
use gregor_engine::batch::BatchIter;
use gregor_engine::{BackendKind, Log, LogConfig, LogError, TimestampType, kafka_code};
use std::path::PathBuf;
use std::rc::Rc;

fn first_base(data: &[u8]) -> Option<i64> {
    BatchIter::new(data)
        .next()
        .map(|(h, _)| h.base_offset.get())
}

/// Append `n` 3-record batches with timestamps `ts0 + 10*i`.
async fn fill(log: &Log, n: usize, ts0: i64, now_ms: i64) {
    for i in 0..n {
        log.append(Bytes::from(batch(3, ts0 + 10 * i as i64, "f")), 0, now_ms)
            .await
            .unwrap();
    }
}

async fn retention_by_size(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    fill(&log, 1000, 0, 1000).await;
    let segs = log.segment_count();
    assert!(segs > 5);
    let size = log.size_bytes();
    log.set_config(LogConfig {
        retention_bytes: (size / 2) as i64,
        retention_ms: -1,
        ..small_config()
    });
    // Nothing is deleted above the high watermark.
    log.set_high_watermark(0);
    log.enforce_retention(1000).await.unwrap();
    assert_eq!(log.segment_count(), segs);
    log.set_high_watermark(log.log_end_offset());
    log.enforce_retention(1000).await.unwrap();
    assert!(log.size_bytes() >= size / 2, "deleted too much");
    assert!(
        log.size_bytes() < size / 2 + 8 * 1024,
        "kept too much: {}",
        log.size_bytes()
    );
    let start = log.log_start_offset();
    assert!(start > 0);
    assert_eq!(log.segment_base_offsets()[0], start);
    // Reads below the new start fail; at the start they work.
    let e = log.read(start - 1, 100, i64::MAX).await.unwrap_err();
    assert_eq!(e.kafka_error_code(), kafka_code::OFFSET_OUT_OF_RANGE);
    assert_eq!(
        first_base(&log.read(start, 100, i64::MAX).await.unwrap().data),
        Some(start)
    );
    // Survives reopen.
    drop(log);
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    assert_eq!(log.log_start_offset(), start);
    assert!(!dir.join(gregor_engine::segment_file_name(0)).exists());
}

async fn retention_by_time(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    fill(&log, 200, 0, 1000).await; // timestamps 0..2000
    fill(&log, 200, 100_000, 1000).await; // timestamps 100_000..102_000
    log.set_config(LogConfig {
        retention_ms: 50_000,
        ..small_config()
    });
    log.enforce_retention(120_000).await.unwrap();
    assert_eq!(
        log.log_start_offset(),
        0,
        "nothing is deleted above the high watermark"
    );
    log.set_high_watermark(log.log_end_offset());
    log.enforce_retention(120_000).await.unwrap(); // cutoff 70_000
    let start = log.log_start_offset();
    // All old batches (offsets < 600) are gone except possibly those sharing a segment with new.
    let r = log.read(start, 1, i64::MAX).await.unwrap();
    let (h, _) = BatchIter::new(&r.data).next().unwrap();
    assert!(start > 400, "start {start}");
    assert!(h.max_timestamp.get() >= 100_000 || h.last_offset() < 600);
    let first_new_segment_ok = log.segment_base_offsets()[0] <= 600;
    assert!(first_new_segment_ok, "deleted segments holding fresh data");
    // Everything expired: the active segment is rolled and deleted too; appends continue.
    log.enforce_retention(1_000_000).await.unwrap();
    assert_eq!(log.log_start_offset(), log.log_end_offset());
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.size_bytes(), 0);
    let info = log
        .append(Bytes::from(batch(1, 2_000_000, "n")), 0, 2_000_000)
        .await
        .unwrap();
    assert_eq!(info.base_offset, 1200);
    assert_eq!(
        first_base(&log.read(1200, 100, i64::MAX).await.unwrap().data),
        Some(1200)
    );
}

async fn segment_ms_roll(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(
        &dir,
        LogConfig {
            segment_ms: 1000,
            ..LogConfig::default()
        },
        backend,
    )
    .await
    .unwrap();
    fill(&log, 3, 0, 10_000).await;
    assert_eq!(log.segment_count(), 1);
    log.append(Bytes::from(batch(1, 0, "x")), 0, 11_000)
        .await
        .unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 9]);
    log.enforce_retention(12_500).await.unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 9, 10]);
    log.enforce_retention(12_600).await.unwrap();
    assert_eq!(log.segment_count(), 3, "empty active segment never rolls");
}

async fn delete_records(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    fill(&log, 300, 0, 1000).await;
    let leo = log.log_end_offset();
    log.truncate_to(leo).await.unwrap(); // no-op
    assert_eq!(
        log.high_watermark(),
        0,
        "open sets it to the log end, which was 0"
    );
    log.set_high_watermark(500);
    log.set_high_watermark(400);
    assert_eq!(log.high_watermark(), 500, "never moves backwards");
    let e = log.delete_records_before(501).await.unwrap_err();
    assert!(matches!(e, LogError::OffsetOutOfRange { .. }));
    assert_eq!(log.delete_records_before(250).await.unwrap(), 250);
    assert_eq!(log.log_start_offset(), 250);
    assert!(log.segment_base_offsets()[0] <= 250);
    assert!(log.segment_base_offsets().get(1).is_none_or(|&b| b > 250));
    // Offset 250 sits inside batch 249..251: the read returns that batch.
    let r = log.read(250, 1, i64::MAX).await.unwrap();
    assert_eq!(first_base(&r.data), Some(249));
    assert!(log.read(249, 1, i64::MAX).await.is_err());
    assert_eq!(
        log.delete_records_before(100).await.unwrap(),
        250,
        "never moves back"
    );
    assert_eq!(
        log.delete_records_before(-1).await.unwrap(),
        500,
        "-1 means the high watermark"
    );
    drop(log);
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    assert_eq!(log.log_start_offset(), 500);
    assert_eq!(log.log_end_offset(), leo);
}

async fn truncate(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    fill(&log, 300, 0, 1000).await;
    log.flush().await.unwrap();
    // Mid-batch: the batch 600..602 is removed whole.
    log.truncate_to(601).await.unwrap();
    assert_eq!(log.log_end_offset(), 600);
    assert!(log.flushed_offset() <= 600);
    assert!(log.segment_base_offsets().iter().all(|&b| b < 600));
    let info = log
        .append(Bytes::from(batch(2, 5, "t")), 3, 1000)
        .await
        .unwrap();
    assert_eq!(info.base_offset, 600);
    let r = log.read(597, 1 << 20, i64::MAX).await.unwrap();
    let ranges: Vec<(i64, i64)> = BatchIter::new(&r.data)
        .map(|(h, _)| (h.base_offset.get(), h.last_offset()))
        .collect();
    assert_eq!(ranges, vec![(597, 599), (600, 601)]);
    // Exactly at a segment base: the earlier segment becomes active again.
    let bases = log.segment_base_offsets();
    let b = bases[bases.len() / 2];
    log.truncate_to(b).await.unwrap();
    assert_eq!(log.log_end_offset(), b);
    assert_eq!(
        *log.segment_base_offsets().last().unwrap(),
        bases[bases.len() / 2 - 1]
    );
    fill(&log, 5, 0, 1000).await;
    drop(log);
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    assert_eq!(log.log_end_offset(), b + 15);
    let r = log.read(b, 1 << 20, i64::MAX).await.unwrap();
    assert_eq!(BatchIter::new(&r.data).count(), 5);
    // Below the log start: everything goes and the log restarts there.
    log.truncate_to(0).await.unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.size_bytes()
        ),
        (0, 0, 0)
    );
    fill(&log, 2, 0, 1000).await;
    assert_eq!(log.log_end_offset(), 6);
}

async fn log_append_time(backend: BackendKind, dir: PathBuf) {
    let config = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config, backend).await.unwrap();
    let produced = batch(3, 100, "l");
    let info = log
        .append(Bytes::from(produced.clone()), 0, 777_000)
        .await
        .unwrap();
    assert_eq!(info.log_append_time_ms, 777_000);
    let r = log.read(0, 1 << 20, i64::MAX).await.unwrap();
    let (h, b) = BatchIter::new(&r.data).next().unwrap();
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp.get(), 777_000);
    assert_eq!(
        h.first_timestamp.get(),
        100,
        "Kafka rewrites only maxTimestamp"
    );
    assert!(gregor_engine::batch::crc_ok(b), "CRC recomputed");
    assert_eq!(&b[61..], &produced[61..], "records untouched");
    assert_eq!(
        log.offset_for_timestamp(500).await.unwrap(),
        Some((0, 777_000))
    );
    assert_eq!(log.max_timestamp(), Some((777_000, 0)));
    // A producer may not send LogAppendTime batches.
    let mut bad = batch(1, 1, "x");
    bad[22] |= 0x08;
    let crc = gregor_engine::batch::compute_crc(&bad);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    let e = log.append(Bytes::from(bad), 0, 1).await.unwrap_err();
    assert_eq!(e.kafka_error_code(), kafka_code::INVALID_TIMESTAMP);
}

async fn timestamps_at_every_boundary(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    assert_eq!(log.offset_for_timestamp(0).await.unwrap(), None);
    assert_eq!(log.max_timestamp(), None);
    // Record i has timestamp 1000 + 2*i (batches of 3 with ts0 = 1000 + 6*k).
    for k in 0..200 {
        log.append(Bytes::from(common_batch_ts(1000 + 6 * k)), 0, 1)
            .await
            .unwrap();
    }
    check_timestamps(&log).await;
    log.close().await.unwrap();
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    check_timestamps(&log).await;
    drop(log);
    // Rebuilt indexes (crash recovery of the active segment) answer the same.
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    check_timestamps(&log).await;
}

/// Record i of the log written by `timestamps_at_every_boundary` has timestamp 1000 + 2*i.
async fn check_timestamps(log: &Log) {
    for target in [0, 999, 1000, 1001, 1002, 1003, 1500, 1501, 2197, 2198, 2199] {
        let found = log.offset_for_timestamp(target).await.unwrap();
        let expected = if target > 1000 + 2 * 599 {
            None
        } else {
            let i = ((target - 1000).max(0) + 1) / 2;
            Some((i, 1000 + 2 * i))
        };
        assert_eq!(found, expected, "target {target}");
    }
    for i in (0..600).step_by(7) {
        let ts = 1000 + 2 * i;
        assert_eq!(log.offset_for_timestamp(ts).await.unwrap(), Some((i, ts)));
    }
    assert_eq!(log.max_timestamp(), Some((1000 + 2 * 599, 599)));
}

/// Three records with timestamps ts, ts+2, ts+4.
fn common_batch_ts(ts: i64) -> Vec<u8> {
    use gregor_engine::batch::{SimpleRecord, encode_batch};
    let recs: Vec<SimpleRecord<'_>> = (0..3)
        .map(|i| SimpleRecord {
            timestamp_ms: ts + 2 * i,
            key: None,
            value: Some(b"v"),
        })
        .collect();
    encode_batch(&recs)
}

async fn flush_policy_and_group_commit(backend: BackendKind, dir: PathBuf) {
    let log = Rc::new(
        Log::open(
            &dir,
            LogConfig {
                flush_messages: 10,
                ..LogConfig::default()
            },
            backend,
        )
        .await
        .unwrap(),
    );
    fill(&log, 3, 0, 1).await; // 9 offsets: below flush.messages
    assert_eq!(log.flushed_offset(), 0);
    fill(&log, 1, 0, 1).await; // 12 >= 10
    assert_eq!(log.flushed_offset(), 12);
    fill(&log, 2, 0, 1).await;
    // Concurrent flushes all see everything written before they started.
    let futures: Vec<_> = (0..8).map(|_| log.flush()).collect();
    for f in futures {
        assert_eq!(f.await.unwrap(), 18);
    }
    assert_eq!(log.flushed_offset(), 18);
}

async fn concurrent_appends_and_reads(backend: BackendKind, dir: PathBuf) {
    use futures_lite::future;
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    // Interleave many appends and reads in one task set; offsets stay unique and contiguous.
    let appends = (0..64).map(|i| log.append(Bytes::from(batch(1 + i % 4, i as i64, "c")), 0, 1));
    let mut results = Vec::new();
    let mut pending: Vec<_> = appends.map(Box::pin).collect();
    // Poll them all together.
    while !pending.is_empty() {
        let mut still = Vec::new();
        for mut f in pending {
            match future::poll_once(&mut f).await {
                Some(r) => results.push(r.unwrap()),
                None => still.push(f),
            }
        }
        pending = still;
        let _ = log.read(0, 1000, i64::MAX).await.unwrap();
        future::yield_now().await;
    }
    results.sort_by_key(|r| r.base_offset);
    let mut next = 0;
    for r in &results {
        assert_eq!(r.base_offset, next);
        next = r.last_offset + 1;
    }
    assert_eq!(log.log_end_offset(), next);
}

/// An append takes its place in the log on its first poll, before it waits for anything:
/// the broker relies on this to keep pipelined Produce requests in request order (it polls
/// each request's appends once, in order, before reading the next request).
async fn append_order_is_fixed_at_first_poll(backend: BackendKind, dir: PathBuf) {
    use futures_lite::future;
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    // A write in progress (on the O_DIRECT backend), so the appends below queue behind it.
    let mut busy = Box::pin(log.append(Bytes::from(batch(1, 0, "w")), 0, 1));
    let mut busy_done = future::poll_once(&mut busy).await.is_some();
    let mut appends: Vec<_> = (0..6)
        .map(|i| Box::pin(log.append(Bytes::from(batch(1 + i % 3, i as i64, "p")), 0, 1)))
        .collect();
    // First polls in a scrambled order: that order, not creation order, is the log order.
    let first_polls = [3usize, 0, 5, 1, 4, 2];
    let mut offsets: Vec<Option<i64>> = vec![None; appends.len()];
    for &i in &first_polls {
        if let Some(r) = future::poll_once(&mut appends[i]).await {
            offsets[i] = Some(r.unwrap().base_offset);
        }
    }
    // Then drive them all together (a lock holder must be polled to finish its write), the
    // last created first.
    while offsets.iter().any(Option::is_none) || !busy_done {
        for i in (0..appends.len()).rev() {
            if offsets[i].is_none()
                && let Some(r) = future::poll_once(&mut appends[i]).await
            {
                offsets[i] = Some(r.unwrap().base_offset);
            }
        }
        if !busy_done && let Some(r) = future::poll_once(&mut busy).await {
            r.unwrap();
            busy_done = true;
        }
        future::yield_now().await;
    }
    let offsets: Vec<i64> = offsets.into_iter().flatten().collect();
    let mut by_offset: Vec<usize> = (0..appends.len()).collect();
    by_offset.sort_by_key(|&i| offsets[i]);
    assert_eq!(by_offset, first_polls, "base offsets {offsets:?}");
}

async fn record_list_too_large(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(
        &dir,
        LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        },
        backend,
    )
    .await
    .unwrap();
    let mut big = Vec::new();
    for _ in 0..3 {
        big.extend_from_slice(&common::sized_batch(1500, 1));
    }
    let e = log.append(Bytes::from(big), 0, 1).await.unwrap_err();
    assert_eq!(e.kafka_error_code(), kafka_code::RECORD_LIST_TOO_LARGE);
}

both_backends!(
    retention_by_size,
    retention_by_time,
    segment_ms_roll,
    delete_records,
    truncate,
    log_append_time,
    timestamps_at_every_boundary,
    flush_policy_and_group_commit,
    concurrent_appends_and_reads,
    append_order_is_fixed_at_first_poll,
    record_list_too_large,
);

async fn cancelled_append_is_withdrawn(backend: BackendKind, dir: PathBuf) {
    use futures_lite::future;
    let log = Log::open(&dir, LogConfig::default(), backend)
        .await
        .unwrap();
    log.append(Bytes::from(batch(1, 1, "a")), 0, 1)
        .await
        .unwrap();
    // Queue three appends behind a fourth that holds the write lock, then cancel the middle one.
    let mut f1 = Box::pin(log.append(Bytes::from(batch(2, 2, "b")), 0, 1));
    let mut f2 = Box::pin(log.append(Bytes::from(batch(3, 3, "c")), 0, 1));
    let f3 = Box::pin(log.append(Bytes::from(batch(4, 4, "d")), 0, 1));
    let r1 = future::poll_once(&mut f1).await;
    let r2 = future::poll_once(&mut f2).await;
    if r1.is_some() || r2.is_some() {
        // The Std backend completes writes synchronously: nothing queues, nothing to cancel.
        assert_eq!(backend, BackendKind::Std);
        f3.await.unwrap();
        assert_eq!(log.log_end_offset(), 10);
        return;
    }
    drop(f2);
    let i1 = f1.await.unwrap();
    let i3 = f3.await.unwrap();
    assert_eq!((i1.base_offset, i1.last_offset), (1, 2));
    assert_eq!(
        (i3.base_offset, i3.last_offset),
        (3, 6),
        "the cancelled request was not written"
    );
    let r = log.read(0, 1 << 20, i64::MAX).await.unwrap();
    assert_eq!(BatchIter::new(&r.data).count(), 3);
}

both_backends!(cancelled_append_is_withdrawn);

async fn clean_shutdown_marker_and_preallocation(backend: BackendKind, dir: PathBuf) {
    let config = LogConfig {
        preallocate: true,
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config.clone(), backend).await.unwrap();
    fill(&log, 10, 0, 1).await;
    let marker = dir.join(gregor_engine::CLEAN_SHUTDOWN_FILE);
    assert!(!marker.exists());
    let seg = dir.join(gregor_engine::segment_file_name(0));
    if backend == BackendKind::Dma {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&seg).unwrap();
        assert!(
            meta.blocks() * 512 >= 1 << 20,
            "preallocated: {} blocks",
            meta.blocks()
        );
        assert!(meta.len() < 1 << 20, "preallocation keeps the size");
    }
    log.close().await.unwrap();
    assert!(marker.exists());
    // After close the .log holds exactly the data (O_DIRECT padding and preallocation cut).
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), log.size_bytes());
    assert!(
        log.append(Bytes::from(batch(1, 1, "z")), 0, 1)
            .await
            .is_err(),
        "closed"
    );
    let log = Log::open(&dir, config, backend).await.unwrap();
    assert!(!marker.exists(), "open consumes the marker");
    assert_eq!(log.log_end_offset(), 30);
}

both_backends!(clean_shutdown_marker_and_preallocation);

async fn cancelled_group_writer_hands_over(backend: BackendKind, dir: PathBuf) {
    use futures_lite::future;
    let log = Log::open(&dir, LogConfig::default(), backend)
        .await
        .unwrap();
    let mut f1 = Box::pin(log.append(Bytes::from(batch(1, 1, "a")), 0, 1));
    if future::poll_once(&mut f1).await.is_some() {
        return; // Std: synchronous writes, nothing in flight to cancel.
    }
    // f1 writes; f2 and f3 queue behind it and will form one group.
    let mut f2 = Box::pin(log.append(Bytes::from(batch(2, 2, "b")), 0, 1));
    let mut f3 = Box::pin(log.append(Bytes::from(batch(3, 3, "c")), 0, 1));
    assert!(future::poll_once(&mut f2).await.is_none());
    assert!(future::poll_once(&mut f3).await.is_none());
    f1.await.unwrap();
    // f2 takes the lock and writes the group {f2, f3}; cancel it mid-I/O.
    assert!(future::poll_once(&mut f2).await.is_none());
    drop(f2);
    let i3 = f3
        .await
        .expect("a group member must not inherit the cancelled writer's fate");
    let r = log.read(0, 1 << 20, i64::MAX).await.unwrap();
    let ranges: Vec<(i64, i64)> = BatchIter::new(&r.data)
        .map(|(h, _)| (h.base_offset.get(), h.last_offset()))
        .collect();
    // Whether the cancelled request was withdrawn or written, the log is contiguous and ends
    // with f3's batch.
    assert_eq!(ranges.last(), Some(&(i3.base_offset, i3.last_offset)));
    assert!(
        ranges == vec![(0, 0), (1, 3)] || ranges == vec![(0, 0), (1, 2), (3, 5)],
        "{ranges:?}"
    );
    assert_eq!(log.log_end_offset(), i3.last_offset + 1);
    drop(log);
    let log = Log::open(&dir, LogConfig::default(), backend)
        .await
        .unwrap();
    assert_eq!(log.log_end_offset(), i3.last_offset + 1);
}

both_backends!(cancelled_group_writer_hands_over);

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Removed segments are renamed `*.deleted` at once and deleted later by the background
/// thread (after `file_delete_delay_ms`); leftovers of a stopped process are deleted by the
/// next open, and the log's data is unaffected throughout.
async fn delayed_file_deletion(backend: BackendKind, dir: PathBuf) {
    let config = LogConfig {
        file_delete_delay_ms: 3_600_000,
        ..small_config()
    };
    let log = Log::open(&dir, config.clone(), backend).await.unwrap();
    fill(&log, 300, 0, 1000).await;
    log.set_high_watermark(log.log_end_offset());
    let start = log
        .delete_records_before(log.log_end_offset() / 2)
        .await
        .unwrap();
    assert!(start > 0);
    // Retired, not deleted: an hour's delay.
    let names = names_in(&dir);
    let retired = names.iter().filter(|n| n.ends_with(".deleted")).count();
    assert!(retired >= 3, "{names:?}");
    assert!(!dir.join(gregor_engine::segment_file_name(0)).exists());
    assert!(gregor_engine::wait_for_deletions(
        std::time::Duration::from_secs(10)
    ));
    assert_eq!(
        names_in(&dir)
            .iter()
            .filter(|n| n.ends_with(".deleted"))
            .count(),
        retired,
        "deleted before its delay"
    );
    let end = log.log_end_offset();
    log.close().await.unwrap();

    // The next open deletes what the previous process left retired, keeps everything else.
    let log = Log::open(&dir, config, backend).await.unwrap();
    assert!(gregor_engine::wait_for_deletions(
        std::time::Duration::from_secs(10)
    ));
    let names = names_in(&dir);
    assert!(!names.iter().any(|n| n.ends_with(".deleted")), "{names:?}");
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(
        first_base(&log.read(start, 1 << 20, end).await.unwrap().data),
        Some(start)
    );

    // With no delay, retention's files are gone once the thread has run.
    log.set_config(LogConfig {
        file_delete_delay_ms: 0,
        retention_bytes: 0,
        retention_ms: -1,
        ..small_config()
    });
    log.enforce_retention(1000).await.unwrap();
    assert!(gregor_engine::wait_for_deletions(
        std::time::Duration::from_secs(10)
    ));
    let names = names_in(&dir);
    assert!(!names.iter().any(|n| n.ends_with(".deleted")), "{names:?}");
    assert_eq!(log.segment_count(), 1);
}

both_backends!(delayed_file_deletion);

/// Reads for sending: data out of the tail cache comes back as a file range of whole batches,
/// byte for byte what `read` returns; the cached tail comes back in memory; reads at every
/// offset agree with `read`.
async fn read_for_send_ranges(backend: BackendKind, dir: PathBuf) {
    use gregor_engine::SendData;
    use std::os::unix::fs::FileExt;
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    fill(&log, 400, 0, 1000).await;
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    let mut files = 0;
    let mut offset = 0;
    while offset < end {
        let sent = log.read_for_send(offset, 3000, end).await.unwrap();
        let bytes = match &sent.data {
            SendData::Memory(b) => b.clone(),
            SendData::Pieces(pieces) => Bytes::from(pieces.concat()),
            SendData::File(range) => {
                files += 1;
                let mut buf = vec![0u8; range.len];
                range.file.read_exact_at(&mut buf, range.position).unwrap();
                Bytes::from(buf)
            }
        };
        assert!(!bytes.is_empty(), "nothing at {offset}");
        // Whole batches, the first one holding `offset`, matching what `read` returns.
        let read = log.read(offset, 3000, end).await.unwrap().data;
        assert_eq!(&read[..bytes.len()], &bytes[..], "at {offset}");
        let mut tiled = 0;
        let mut last = offset;
        for (h, b) in BatchIter::new(&bytes) {
            tiled += b.len();
            last = h.base_offset.get() + h.last_offset_delta.get() as i64;
        }
        assert_eq!(tiled, bytes.len(), "partial batch at {offset}");
        assert!(first_base(&bytes).unwrap() <= offset && last >= offset);
        offset = last + 1;
    }
    assert!(files > 10, "only {files} reads came from files");
    // The newest data is in the tail cache and comes back in memory.
    let tail = log.read_for_send(end - 1, 3000, end).await.unwrap();
    assert!(matches!(tail.data, SendData::Memory(_)));
    // Nothing past the high watermark.
    log.set_high_watermark(3);
    let capped = log.read_for_send(0, 1 << 20, 3).await.unwrap();
    assert!(matches!(capped.data, SendData::Memory(ref b) if first_base(b) == Some(0)));
    assert_eq!(
        capped.data.len(),
        BatchIter::new(&log.read(0, 1 << 20, 3).await.unwrap().data)
            .map(|(_, b)| b.len())
            .sum::<usize>()
    );
}

both_backends!(read_for_send_ranges);

/// Appends `count` batches of one record each, `value` as the record's value, one append each.
async fn append_single_record_batches(log: &Log, value: &[u8], count: i64) {
    use gregor_engine::batch::{SimpleRecord, encode_batch};
    for i in 0..count {
        let records = [SimpleRecord {
            timestamp_ms: i,
            key: None,
            value: Some(value),
        }];
        log.append(Bytes::from(encode_batch(&records)), 0, 1000)
            .await
            .unwrap();
    }
}

/// A cold range handed out for sending offers the data after it for reading ahead: 4 MiB
/// while the segment has that much more to send, and never past what may be sent from the
/// file (with the Dma backend, the active segment's last 16 MiB may still be rewritten).
async fn cold_send_offers_read_ahead(backend: BackendKind, dir: PathBuf) {
    use gregor_engine::SendData;
    use gregor_engine::batch::{SimpleRecord, encode_batch};
    use std::collections::HashMap;
    use std::os::unix::fs::FileExt;
    let config = LogConfig {
        segment_bytes: 32 << 20,
        index_interval_bytes: 4096,
        tail_cache_bytes: 64 << 10,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config, backend).await.unwrap();
    // 64 KiB batches, 56 MiB: a closed segment of 32 MiB, then an active one of 24 MiB.
    let value = vec![7u8; 64 << 10];
    append_single_record_batches(&log, &value, 896).await;
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    // Every range sent from a file, with the file's identity.
    let mut ranges = Vec::new();
    let mut offset = 0;
    while offset < end {
        let sent = log.read_for_send(offset, 1 << 20, end).await.unwrap();
        let bytes = match &sent.data {
            SendData::Memory(b) => b.clone(),
            SendData::Pieces(pieces) => Bytes::from(pieces.concat()),
            SendData::File(range) => {
                let mut buf = vec![0u8; range.len];
                range.file.read_exact_at(&mut buf, range.position).unwrap();
                ranges.push(range.clone());
                Bytes::from(buf)
            }
        };
        let (header, _) = BatchIter::new(&bytes).last().expect("a batch");
        offset = header.base_offset.get() + header.last_offset_delta.get() as i64 + 1;
    }
    // Where the file ranges of each file end: as far as the file may be sent from.
    let mut sent_end: HashMap<*const std::fs::File, u64> = HashMap::new();
    for r in &ranges {
        let e = sent_end.entry(std::sync::Arc::as_ptr(&r.file)).or_default();
        *e = (*e).max(r.position + r.len as u64);
    }
    let files = sent_end.len();
    assert_eq!(files, 2, "both segments send from their files");
    // The sendable end lies inside the batch after the last one sent.
    let batch_bytes = encode_batch(&[SimpleRecord {
        timestamp_ms: 0,
        key: None,
        value: Some(&value),
    }])
    .len() as u64;
    let mut full = 0;
    for r in &ranges {
        let sent = sent_end[&std::sync::Arc::as_ptr(&r.file)];
        let after = r.position + r.len as u64;
        let ahead_end = after + r.read_ahead_bytes as u64;
        assert!(
            ahead_end < sent + batch_bytes,
            "read ahead of [{}, {after}) ends at {ahead_end}, past the sendable data ({sent})",
            r.position,
        );
        if after + (4 << 20) <= sent {
            assert_eq!(r.read_ahead_bytes, 4 << 20, "at {}", r.position);
            full += 1;
        } else {
            assert!(
                ahead_end >= sent,
                "read ahead of [{}, {after}) stops short",
                r.position
            );
        }
    }
    assert!(full > 20, "only {full} ranges with a full read-ahead");
}

both_backends!(cold_send_offers_read_ahead);

/// A batch with `n` records of `value_bytes` each.
fn big_batch(n: usize, value_bytes: usize, ts: i64) -> Vec<u8> {
    use gregor_engine::batch::{SimpleRecord, encode_batch};
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| vec![(ts as usize + i) as u8; value_bytes])
        .collect();
    let records: Vec<SimpleRecord<'_>> = values
        .iter()
        .map(|v| SimpleRecord {
            timestamp_ms: ts,
            key: None,
            value: Some(v),
        })
        .collect();
    encode_batch(&records)
}

/// The cached tail goes out as pieces of the appended buffers themselves: whole batches,
/// byte for byte what `read` returns, the same memory on every read (no copy), and readable
/// and droppable on another thread while the log goes on appending and serving.
async fn tail_reads_reference_appended_buffers(backend: BackendKind, dir: PathBuf) {
    use gregor_engine::SendData;
    let config = LogConfig {
        segment_bytes: 1 << 20,
        tail_cache_bytes: 1 << 20,
        ..small_config()
    };
    let log = Log::open(&dir, config, backend).await.unwrap();
    // 3 KB batches: each append's write buffer is cached as it is (not copied out).
    let append_3kb_batches = async |batches: std::ops::Range<i64>| {
        for i in batches {
            log.append(Bytes::from(big_batch(1, 3000, i)), 0, 1000)
                .await
                .unwrap();
        }
        let end = log.log_end_offset();
        log.set_high_watermark(end);
        end
    };
    let end = append_3kb_batches(0..40).await;
    let pieces = |data: &SendData| match data {
        SendData::Pieces(p) => p.clone(),
        SendData::Memory(b) => panic!("one {} B piece, expected several", b.len()),
        SendData::File(f) => panic!("a {} B file range, expected the cache", f.len),
    };
    let first = pieces(&log.read_for_send(0, 64 << 10, end).await.unwrap().data);
    assert!(first.len() > 10, "{} pieces", first.len());
    let joined = first.concat();
    let read = log.read(0, 64 << 10, end).await.unwrap().data;
    assert_eq!(&read[..joined.len()], &joined[..]);
    for p in &first {
        let tiled: usize = BatchIter::new(p).map(|(_, b)| b.len()).sum();
        assert_eq!(tiled, p.len(), "a piece holds a partial batch");
    }
    let again = pieces(&log.read_for_send(0, 64 << 10, end).await.unwrap().data);
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(a.as_ptr(), b.as_ptr(), "the cache was copied");
    }
    // Capped by the high watermark: only batches below it.
    let in_memory = |data: &SendData| match data {
        SendData::Memory(b) => b.to_vec(),
        SendData::Pieces(p) => p.concat(),
        SendData::File(_) => panic!("tail data as a file range"),
    };
    let capped_bytes = in_memory(&log.read_for_send(0, 64 << 10, 5).await.unwrap().data);
    let last = BatchIter::new(&capped_bytes).last().unwrap().0;
    assert_eq!(last.base_offset.get(), 4);
    // Another thread checks and drops them (as a connection on another core would).
    let local: Vec<u32> = first.iter().map(|p| crc32c::crc32c(p)).collect();
    let far = std::thread::spawn(move || {
        let sums: Vec<u32> = first.iter().map(|p| crc32c::crc32c(p)).collect();
        drop(first);
        drop(again);
        sums
    })
    .join()
    .unwrap();
    assert_eq!(far, local);
    let end = append_3kb_batches(40..80).await;
    log.enforce_retention(1000).await.unwrap();
    let tail = in_memory(&log.read_for_send(60, 64 << 10, end).await.unwrap().data);
    let read = log.read(60, 64 << 10, end).await.unwrap().data;
    assert_eq!(&read[..tail.len()], &tail[..]);
    assert_eq!(
        BatchIter::new(&tail).next().unwrap().0.base_offset.get(),
        60
    );
}

both_backends!(tail_reads_reference_appended_buffers);

/// The tail cache charges each kept write buffer what it holds in memory. A Dma buffer may
/// sit in glommio's registered region, a buddy allocator of power-of-two blocks, so a write of
/// just over 256 KiB counts as 512 KiB there: a 1 MiB cache keeps the last two such writes.
/// Heap buffers (Std backend) count their length, so the same cache keeps three.
async fn tail_cache_charges_the_buffer_footprint(backend: BackendKind, dir: PathBuf) {
    use gregor_engine::SendData;
    let config = LogConfig {
        segment_bytes: 64 << 20,
        tail_cache_bytes: 1 << 20,
        // Each append in one buffer: written in two parts, it would be cached as two chunks.
        allocate_ahead: false,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config, backend).await.unwrap();
    let appends = 6;
    append_single_record_batches(&log, &vec![3u8; (256 << 10) + 100], appends).await;
    let end = log.log_end_offset();
    assert_eq!(end, appends);
    log.set_high_watermark(end);
    let mut cached = Vec::new();
    for offset in 0..end {
        // The cache hands out its own buffers, the same memory on every read; a disk read is
        // a file range or (near an O_DIRECT segment's write position) a fresh copy.
        let memory = async || match log.read_for_send(offset, 1, end).await.unwrap().data {
            SendData::Memory(b) => Some(b),
            _ => None,
        };
        let (first, again) = (memory().await, memory().await);
        cached.push(matches!((first, again), (Some(a), Some(b)) if a.as_ptr() == b.as_ptr()));
    }
    let expected_cached = match backend {
        BackendKind::Dma => 2,
        BackendKind::Std => 3,
    };
    let mut expected = vec![false; (appends - expected_cached) as usize];
    expected.extend(vec![true; expected_cached as usize]);
    assert_eq!(
        cached, expected,
        "which offsets the tail cache still serves"
    );
}

both_backends!(tail_cache_charges_the_buffer_footprint);
