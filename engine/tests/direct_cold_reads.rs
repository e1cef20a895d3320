//! Cold reads with O_DIRECT and reads ahead (`LogConfig::direct_cold_reads`, Dma backend):
//! what a fetch gets is byte for byte what the log holds, whole batches from the one holding
//! the offset, never past the limit, at either pace; a truncated log never serves bytes read
//! ahead of the truncation.

mod common;

use bytes::Bytes;
use gregor_engine::batch::{BatchIter, SimpleRecord, encode_batch, validate_records};
use gregor_engine::{BackendKind, ColdReadPace, Log, LogConfig, SendData};
use std::path::PathBuf;

/// A batch of `records` records whose values (`len` bytes each) derive from `seed`.
fn batch(seed: usize, records: usize, len: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records)
        .map(|r| {
            (0..len)
                .map(|i| ((seed * 31 + r * 7 + i) % 251) as u8)
                .collect()
        })
        .collect();
    let records: Vec<SimpleRecord> = values
        .iter()
        .map(|v| SimpleRecord {
            timestamp_ms: seed as i64,
            key: None,
            value: Some(v),
        })
        .collect();
    encode_batch(&records)
}

fn direct_config(read_ahead_bytes: usize) -> LogConfig {
    LogConfig {
        segment_bytes: 3 << 20,
        index_interval_bytes: 4096,
        // Nothing cached: every read is cold.
        tail_cache_bytes: 0,
        direct_cold_reads: true,
        read_ahead_bytes,
        ..LogConfig::default()
    }
}

/// Appends batches of 1 to 3 records, 300 B to 90 KB each, seeded from `seed0`, until the
/// log holds `bytes`.
async fn fill(log: &Log, seed0: usize, bytes: usize) {
    let mut written = 0;
    let mut i = 0;
    while written < bytes {
        let len = [300, 9_000, 45_000, 30_000][i % 4];
        let b = batch(seed0 + i, 1 + i % 3, len);
        written += b.len();
        log.append(Bytes::from(b), 0, 1000).await.unwrap();
        i += 1;
    }
}

/// A Dma log with direct cold reads and `read_ahead_bytes` of budget, filled to `bytes`
/// (see [`fill`]), its high watermark at the end; with that end.
async fn filled_log(dir: &std::path::Path, read_ahead_bytes: usize, bytes: usize) -> (Log, i64) {
    let log = Log::open(dir, direct_config(read_ahead_bytes), BackendKind::Dma)
        .await
        .unwrap();
    fill(&log, 0, bytes).await;
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    (log, end)
}

fn memory_bytes(data: &SendData) -> Bytes {
    match data {
        SendData::Memory(b) => b.clone(),
        SendData::Pieces(pieces) => Bytes::from(pieces.concat()),
        SendData::File(_) => panic!("a file range with direct cold reads"),
    }
}

/// Reads from `offset` to `end` as a consumer does, checking each response against `read`;
/// returns the bytes sent.
async fn consume(
    log: &Log,
    mut offset: i64,
    end: i64,
    max_bytes: usize,
    pace: ColdReadPace,
) -> u64 {
    let mut sent = 0u64;
    while offset < end {
        let r = log
            .read_for_send_paced(offset, max_bytes, end, pace)
            .await
            .unwrap();
        let bytes = memory_bytes(&r.data);
        assert!(!bytes.is_empty(), "nothing at {offset}");
        validate_records(&bytes, 8 << 20).expect("whole, intact batches");
        let reference = log.read(offset, max_bytes, end).await.unwrap().data;
        let common = bytes.len().min(reference.len());
        assert!(
            bytes[..common] == reference[..common],
            "other bytes at {offset}"
        );
        let (first, _) = BatchIter::new(&bytes).next().unwrap();
        let (last, _) = BatchIter::new(&bytes).last().unwrap();
        assert!(first.base_offset.get() <= offset && offset <= first.last_offset());
        assert!(last.last_offset() < end);
        offset = last.last_offset() + 1;
        sent += bytes.len() as u64;
    }
    sent
}

async fn reads_match_the_log(_: BackendKind, dir: PathBuf) {
    let (log, end) = filled_log(&dir, 4 << 20, 10 << 20).await;
    assert!(log.segment_count() >= 3);
    let size = log.size_bytes();
    for (pace, max_bytes) in [
        (ColdReadPace::Ahead, 1 << 20),
        (ColdReadPace::Ahead, 300_000),
        (ColdReadPace::Paced, 700_000),
        (ColdReadPace::Ahead, 8 << 20),
        // Smaller than any batch: one whole batch each time (KIP-74).
        (ColdReadPace::Ahead, 1),
    ] {
        let sent = consume(&log, 0, end, max_bytes, pace).await;
        assert!(sent * 10 >= size * 9, "{sent} of {size} bytes at {pace:?}");
    }
    // From inside a batch of several records, and from the middle of the log.
    let mid = end / 2;
    consume(&log, mid, end, 1 << 20, ColdReadPace::Ahead).await;
    consume(&log, mid + 1, end, 1 << 20, ColdReadPace::Ahead).await;
    // Nothing at or past the limit, even where reads ahead hold more.
    for limit in [1, 5, mid] {
        let r = log
            .read_for_send_paced(0, 8 << 20, limit, ColdReadPace::Ahead)
            .await
            .unwrap();
        let bytes = memory_bytes(&r.data);
        let (last, _) = BatchIter::new(&bytes).last().unwrap();
        assert!(last.base_offset.get() < limit, "limit {limit}");
    }
    // No budget for reads ahead: fetches still read what they ask for.
    let mut config = log.config();
    config.read_ahead_bytes = 0;
    log.set_config(config);
    consume(&log, 0, end, 1 << 20, ColdReadPace::Ahead).await;
}

#[test]
fn reads_match_the_log_dma() {
    common::run(BackendKind::Dma, reads_match_the_log);
}

async fn truncation_forgets_reads_ahead(_: BackendKind, dir: PathBuf) {
    let (log, end) = filled_log(&dir, 8 << 20, 2 << 20).await;
    // A consumer reads the start; reads ahead now hold the rest of the segment.
    let r = log
        .read_for_send_paced(0, 64 << 10, end, ColdReadPace::Ahead)
        .await
        .unwrap();
    assert!(!r.data.is_empty());
    let cut = end / 4;
    log.truncate_to(cut).await.unwrap();
    let cut = log.log_end_offset();
    // Different bytes at the same offsets (and, batch sizes cycling alike, positions).
    fill(&log, 1000, 2 << 20).await;
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    // Byte for byte what the log now holds, not what was read ahead before the truncation.
    consume(&log, cut, end, 1 << 20, ColdReadPace::Ahead).await;
}

#[test]
fn truncation_forgets_reads_ahead_dma() {
    common::run(BackendKind::Dma, truncation_forgets_reads_ahead);
}

/// Reads racing appends to the same active segment: each append rewrites the partly filled
/// last block that reads (and reads ahead) cover, with the same bytes below the old end. A
/// consumer following the high watermark closely gets every batch intact, in order, once.
async fn reads_race_appends(_: BackendKind, dir: PathBuf) {
    let log = std::rc::Rc::new(
        Log::open(&dir, direct_config(4 << 20), BackendKind::Dma)
            .await
            .unwrap(),
    );
    let appends = 600;
    let writer = {
        let log = log.clone();
        glommio::spawn_local(async move {
            for i in 0..appends {
                // Odd sizes, so that appends end inside blocks.
                let b = batch(i, 1 + i % 2, 700 + (i * 997) % 20_000);
                let info = log.append(Bytes::from(b), 0, 1000).await.unwrap();
                log.set_high_watermark(info.last_offset + 1);
                if i % 8 == 0 {
                    glommio::executor().yield_task_queue_now().await;
                }
            }
        })
    };
    let mut offset = 0i64;
    let mut batches = 0usize;
    let mut pace = ColdReadPace::Ahead;
    loop {
        let hw = log.high_watermark();
        if offset < hw {
            let r = log
                .read_for_send_paced(offset, 64 << 10, hw, pace)
                .await
                .unwrap();
            let bytes = memory_bytes(&r.data);
            validate_records(&bytes, 8 << 20).expect("whole, intact batches");
            for (h, _) in BatchIter::new(&bytes) {
                assert_eq!(h.base_offset.get(), offset, "a gap or a repeat");
                offset = h.last_offset() + 1;
                batches += 1;
            }
            pace = match pace {
                ColdReadPace::Ahead => ColdReadPace::Paced,
                ColdReadPace::Paced => ColdReadPace::Ahead,
            };
        } else if batches == appends {
            break;
        } else {
            glommio::executor().yield_task_queue_now().await;
        }
    }
    writer.await;
    assert_eq!(offset, log.log_end_offset());
}

#[test]
fn reads_race_appends_dma() {
    common::run(BackendKind::Dma, reads_race_appends);
}

async fn disk_bytes_bound_cold_reads_not_cached_ones(_: BackendKind, dir: PathBuf) {
    let (log, end) = filled_log(&dir, 0, 2 << 20).await;
    let first_batch_bytes = |data: &SendData| {
        let bytes = memory_bytes(data);
        BatchIter::new(&bytes).next().map_or(0, |(_, b)| b.len())
    };
    for pace in [ColdReadPace::Ahead, ColdReadPace::Paced] {
        // Unbounded: the fetch's whole 1 MiB, read from disk.
        let all = log
            .read_for_send_paced(0, 1 << 20, end, pace)
            .await
            .unwrap();
        assert!(all.read_from_disk);
        assert!(all.data.len() > 512 << 10, "{}", all.data.len());
        // No disk bytes to spend: the first batch still comes, whole, and only it.
        for disk_bytes_max in [0, 1] {
            let one = log
                .read_for_send_bounded(0, 1 << 20, end, pace, disk_bytes_max)
                .await
                .unwrap();
            assert!(one.read_from_disk);
            assert_eq!(one.data.len(), first_batch_bytes(&one.data), "{pace:?}");
            assert_eq!(
                memory_bytes(&one.data),
                memory_bytes(&all.data).slice(..one.data.len())
            );
        }
        // Some: whole batches up to about that much.
        let some = log
            .read_for_send_bounded(0, 1 << 20, end, pace, 200 << 10)
            .await
            .unwrap();
        assert!(some.data.len() <= 200 << 10, "{}", some.data.len());
        assert!(some.data.len() > first_batch_bytes(&some.data));
        validate_records(&memory_bytes(&some.data), 1 << 20).unwrap();
    }

    // The tail cache's data is memory already paid for: not bounded, not read from disk.
    let mut config = log.config();
    config.tail_cache_bytes = 8 << 20;
    log.set_config(config);
    let from = log.log_end_offset();
    fill(&log, 500, 512 << 10).await;
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    let tail = log
        .read_for_send_bounded(from, 1 << 20, end, ColdReadPace::Ahead, 0)
        .await
        .unwrap();
    assert!(!tail.read_from_disk);
    assert!(
        tail.data.len() > first_batch_bytes(&tail.data),
        "{}",
        tail.data.len()
    );
}

#[test]
fn disk_bytes_bound_cold_reads_not_cached_ones_dma() {
    common::run(
        BackendKind::Dma,
        disk_bytes_bound_cold_reads_not_cached_ones,
    );
}
