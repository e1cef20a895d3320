//! How segment files are prepared for appends (Dma backend). Zeros written ahead of the
//! appends never land on data, a crash leaves them behind harmlessly, and sealing a segment
//! cuts them off; the same for blocks allocated ahead of large appends, which are written in
//! two parts. Retired files reused as new segments never bring old batches back.

mod common;

use bytes::Bytes;
use gregor_engine::batch::{
    BatchHeader, BatchIter, SimpleRecord, crc_ok, encode_batch, validate_records,
};
use gregor_engine::{BackendKind, Log, LogConfig, SendData, TimestampType};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// One record whose value (`len` bytes, never zero) is derived from `seed`.
fn patterned_batch(seed: usize, len: usize) -> Vec<u8> {
    let value: Vec<u8> = (0..len)
        .map(|i| ((seed * 31 + i) % 251 + 1) as u8)
        .collect();
    encode_batch(&[SimpleRecord {
        timestamp_ms: seed as i64,
        key: None,
        value: Some(&value),
    }])
}

/// Reads every batch from the disk (no tail cache), checking each one's CRC; returns the record
/// count and bytes.
async fn read_back(log: &Log) -> (i64, u64) {
    let (mut offset, mut bytes) = (log.log_start_offset(), 0u64);
    while offset < log.log_end_offset() {
        let r = log.read(offset, 4 << 20, i64::MAX).await.expect("read");
        assert!(!r.data.is_empty(), "no data at {offset}");
        let infos = validate_records(&r.data, 8 << 20).expect("every stored batch is intact");
        offset += infos
            .iter()
            .map(|i| i.last_offset_delta as i64 + 1)
            .sum::<i64>();
        bytes += r.data.len() as u64;
    }
    (offset, bytes)
}

fn file_len(dir: &Path, base: i64) -> u64 {
    std::fs::metadata(dir.join(gregor_engine::segment_file_name(base)))
        .expect("segment file")
        .len()
}

const SIZES: [usize; 4] = [1000, 17_000, 130_000, 600_000];

/// Four concurrent appenders, `per_task` batches each, cycling through `sizes`; then lets the
/// background writes ahead settle.
async fn append_concurrently(log: &Rc<Log>, sizes: &'static [usize], per_task: usize) {
    let mut tasks = Vec::new();
    for p in 0..4 {
        let log = log.clone();
        tasks.push(glommio::spawn_local(async move {
            for i in 0..per_task {
                let b = patterned_batch(p * 1000 + i, sizes[(p + i) % sizes.len()]);
                log.append(Bytes::from(b), 0, 1).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
}

async fn zeros_never_cover_data(backend: BackendKind, dir: PathBuf) {
    let config = LogConfig {
        segment_bytes: 48 << 20,
        tail_cache_bytes: 0,
        // Large appends too: they reach into the zero write in flight more often.
        zeros_ahead_append_bytes_max: u64::MAX,
        ..LogConfig::default()
    };
    let log = Rc::new(Log::open(&dir, config.clone(), backend).await.unwrap());
    // Zeros are written ahead only for a log that is flushed (acks=all).
    log.flush().await.unwrap();
    // Four concurrent appenders of mixed sizes: groups grow large and often reach into the
    // zero write in flight, which they must wait for.
    append_concurrently(&log, &SIZES, 50).await;
    let data_bytes = log.size_bytes();
    assert_eq!(log.segment_count(), 1);
    let on_disk = file_len(&dir, 0);
    assert!(
        on_disk > data_bytes + (1 << 20),
        "zeros were written ahead: file {on_disk}, data {data_bytes}"
    );
    assert!(on_disk <= data_bytes + (24 << 20), "bounded: {on_disk}");
    assert_eq!(read_back(&log).await, (200, data_bytes));
    // A crash (no close) leaves the zeros; recovery stops at them and cuts them off.
    drop(log);
    let log = Log::open(&dir, config.clone(), backend).await.unwrap();
    assert_eq!(log.log_end_offset(), 200);
    assert_eq!(read_back(&log).await, (200, data_bytes));
    assert_eq!(file_len(&dir, 0), data_bytes);
    // Appends carry on after recovery, and a roll seals the first segment to its data.
    for i in 0..40 {
        log.append(Bytes::from(patterned_batch(9000 + i, 600_000)), 0, 1)
            .await
            .unwrap();
    }
    assert_eq!(log.segment_count(), 2);
    let bases = log.segment_base_offsets();
    let first_len = file_len(&dir, bases[0]);
    assert!(first_len <= 48 << 20, "sealed at its data: {first_len}");
    assert_eq!(read_back(&log).await, (240, log.size_bytes()));
    log.close().await.unwrap();
    let total: u64 = bases.iter().map(|&b| file_len(&dir, b)).sum();
    assert_eq!(
        total,
        log.size_bytes(),
        "close cuts the zeros off the active segment"
    );
}

#[test]
fn zeros_never_cover_data_dma() {
    common::run(BackendKind::Dma, zeros_never_cover_data);
}

/// Zeros alone: the file size past the data is theirs.
fn no_allocation() -> LogConfig {
    LogConfig {
        allocate_ahead: false,
        ..LogConfig::default()
    }
}

/// Appends 12 MB and checks that the file holds no zeros past its last block.
async fn assert_no_zeros_ahead(log: &Log, dir: &Path) {
    for i in 0..20 {
        log.append(Bytes::from(patterned_batch(i, 600_000)), 0, 1)
            .await
            .unwrap();
    }
    glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
    let aligned = (log.size_bytes() + 4095) & !4095;
    assert!(file_len(dir, 0) <= aligned, "zeros were written ahead");
}

async fn zeros_off(backend: BackendKind, dir: PathBuf) {
    let config = LogConfig {
        zeros_ahead: false,
        allocate_ahead: false,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config, backend).await.unwrap();
    log.flush().await.unwrap();
    assert_no_zeros_ahead(&log, &dir).await;
}

/// Large appends get blocks allocated ahead and are written in two parts; concurrent appenders
/// of mixed sizes never damage a batch (read back from the disk, CRCs checked), a crash leaves
/// the allocated blocks behind harmlessly, and sealing and closing cut them off.
async fn allocation_ahead_never_damages_data(backend: BackendKind, dir: PathBuf) {
    let config = LogConfig {
        segment_bytes: 48 << 20,
        tail_cache_bytes: 0,
        ..LogConfig::default()
    };
    let log = Rc::new(Log::open(&dir, config.clone(), backend).await.unwrap());
    append_concurrently(&log, &[130_000, 600_000, 70_001], 40).await;
    let data_bytes = log.size_bytes();
    assert_eq!(log.segment_count(), 1);
    let on_disk = file_len(&dir, 0);
    assert!(
        on_disk > data_bytes + (1 << 20),
        "blocks were allocated ahead: file {on_disk}, data {data_bytes}"
    );
    assert!(on_disk <= data_bytes + (16 << 20), "bounded: {on_disk}");
    let splits = log.split_appends();
    assert!(
        splits > 20,
        "large appends were written in two parts: {splits}"
    );
    assert_eq!(read_back(&log).await, (160, data_bytes));
    // A crash (no close) leaves the allocated blocks; recovery stops at their zeros.
    drop(log);
    let log = Log::open(&dir, config.clone(), backend).await.unwrap();
    assert_eq!(log.log_end_offset(), 160);
    assert_eq!(read_back(&log).await, (160, data_bytes));
    assert_eq!(file_len(&dir, 0), data_bytes);
    // Small appends between large ones, then a roll: the first segment is sealed to its data.
    for i in 0..60 {
        let len = if i % 3 == 0 { 9_000 } else { 600_000 };
        log.append(Bytes::from(patterned_batch(9000 + i, len)), 0, 1)
            .await
            .unwrap();
    }
    assert_eq!(log.segment_count(), 2);
    assert!(log.split_appends() > 0, "the new segment splits too");
    let bases = log.segment_base_offsets();
    let first_len = file_len(&dir, bases[0]);
    assert!(first_len <= 48 << 20, "sealed at its data: {first_len}");
    assert_eq!(read_back(&log).await, (220, log.size_bytes()));
    log.close().await.unwrap();
    let total: u64 = bases.iter().map(|&b| file_len(&dir, b)).sum();
    assert_eq!(total, log.size_bytes(), "close cuts the allocation off");
    // Reopened cleanly, everything reads back.
    let log = Log::open(&dir, config, backend).await.unwrap();
    assert_eq!(read_back(&log).await, (220, total));
}

#[test]
fn allocation_ahead_never_damages_data_dma() {
    common::run(BackendKind::Dma, allocation_ahead_never_damages_data);
}

/// The offset after the stored batches `bytes` holds, checking that it holds whole batches,
/// each with its CRC intact and stamped as appended under LogAppendTime.
fn after_intact_batches(bytes: &[u8]) -> i64 {
    let (mut next, mut walked) = (0, 0);
    for (header, batch) in BatchIter::new(bytes) {
        assert!(
            crc_ok(batch),
            "CRC of the batch at {}",
            header.base_offset.get()
        );
        assert!(header.is_log_append_time());
        next = header.base_offset.get() + header.last_offset_delta.get() as i64 + 1;
        walked += batch.len();
    }
    assert_eq!(walked, bytes.len(), "whole batches only");
    next
}

/// An append written in two parts is cached as two chunks, with a batch running from the
/// first into the second, and never copied to make it whole. The tail cache still serves
/// whole batches, stamped across the cut (under LogAppendTime the CRC covers it), the same
/// bytes as the disk holds.
async fn split_appends_are_served_whole_from_the_cache(backend: BackendKind, dir: PathBuf) {
    let config = LogConfig {
        segment_bytes: 48 << 20,
        tail_cache_bytes: 64 << 20,
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let log = Rc::new(Log::open(&dir, config.clone(), backend).await.unwrap());
    append_concurrently(&log, &[130_000, 600_000, 70_001], 20).await;
    assert!(log.split_appends() > 10, "split: {}", log.split_appends());
    let end = log.log_end_offset();
    let (mut offset, mut from_cache, mut in_pieces) = (0, Vec::new(), 0);
    while offset < end {
        let r = log.read_for_send(offset, 1 << 20, end).await.unwrap();
        let bytes = match r.data {
            SendData::Memory(b) => b.to_vec(),
            SendData::Pieces(pieces) => {
                in_pieces += 1;
                pieces.concat()
            }
            SendData::File(_) => panic!("at {offset}: all of it is in the cache"),
        };
        let first = BatchHeader::view(&bytes)
            .expect("a batch")
            .base_offset
            .get();
        assert_eq!(first, offset, "the batch asked for");
        offset = after_intact_batches(&bytes);
        from_cache.extend_from_slice(&bytes);
    }
    assert!(in_pieces > 0, "some answers came in pieces");
    // The copying read path (`Log::read`) from the cache agrees.
    let r = log.read(0, 1 << 20, end).await.unwrap();
    assert_eq!(r.data[..], from_cache[..r.data.len()]);
    log.close().await.unwrap();
    drop(log);
    let no_cache = LogConfig {
        tail_cache_bytes: 0,
        ..config
    };
    let log = Log::open(&dir, no_cache, backend).await.unwrap();
    let (mut on_disk, mut offset) = (Vec::new(), 0);
    while offset < end {
        let r = log.read(offset, 4 << 20, end).await.unwrap();
        offset = after_intact_batches(&r.data);
        on_disk.extend_from_slice(&r.data);
    }
    assert!(
        on_disk == from_cache,
        "the cache served what the disk holds"
    );
}

#[test]
fn split_appends_are_served_whole_from_the_cache_dma() {
    common::run(
        BackendKind::Dma,
        split_appends_are_served_whole_from_the_cache,
    );
}

#[test]
fn zeros_off_dma() {
    common::run(BackendKind::Dma, zeros_off);
}

/// Appends 400 batches of 8 KB (small appends, 3.2 MB) and returns the file's size and the
/// data's, rounded up to a block.
async fn append_small(log: &Log, dir: &Path) -> (u64, u64) {
    for i in 0..400 {
        log.append(Bytes::from(patterned_batch(100 + i, 8_000)), 0, 1)
            .await
            .unwrap();
    }
    glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
    let aligned = (log.size_bytes() + 4095) & !4095;
    (file_len(dir, 0), aligned)
}

/// A log nobody flushes (acks=1 only) gets no zeros for large appends, and zeros in small
/// chunks (256 KiB) for small ones: a large zero write queued ahead of an acks=1 append would
/// delay it (BENCHMARKS.md, change 26).
async fn unflushed_logs_zero_in_small_chunks(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(&dir, no_allocation(), backend).await.unwrap();
    assert_no_zeros_ahead(&log, &dir).await;
    let (on_disk, aligned) = append_small(&log, &dir).await;
    // 15 MB of data would allow 2 MiB chunks; 256 KiB ones keep at most 5 of them past
    // the appends (4 ahead, the last claimed just before the appends moved on).
    assert!(
        on_disk > aligned + (64 << 10),
        "zeros for small appends: file {on_disk}, data {aligned}"
    );
    assert!(
        on_disk <= aligned + 5 * (256 << 10),
        "small chunks only: file {on_disk}, data {aligned}"
    );
    assert_eq!(read_back(&log).await, (420, log.size_bytes()));
}

#[test]
fn unflushed_logs_zero_in_small_chunks_dma() {
    common::run(BackendKind::Dma, unflushed_logs_zero_in_small_chunks);
}

/// Zeros follow the size of the appends: none while they are large (600 KB), written once
/// they are small (8 KB) on average.
async fn zeros_only_for_small_appends(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(&dir, no_allocation(), backend).await.unwrap();
    log.flush().await.unwrap();
    assert_no_zeros_ahead(&log, &dir).await;
    let (on_disk, aligned) = append_small(&log, &dir).await;
    assert!(
        on_disk > aligned + (64 << 10),
        "no zeros for small appends: file {on_disk}, data {aligned}"
    );
    assert_eq!(read_back(&log).await, (420, log.size_bytes()));
}

#[test]
fn zeros_only_for_small_appends_dma() {
    common::run(BackendKind::Dma, zeros_only_for_small_appends);
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("file").ino()
}

/// Segment files removed by retention come back as new segments, never while a reader holds
/// them, and never bringing their old batches back into the log (live, after a crash, after
/// close).
async fn retired_files_are_recycled(backend: BackendKind, dir: PathBuf) {
    let config = LogConfig {
        segment_bytes: 2 << 20,
        retention_bytes: 4 << 20,
        file_delete_delay_ms: 0,
        tail_cache_bytes: 0,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config.clone(), backend).await.unwrap();
    let mut seen_inodes = std::collections::BTreeMap::new();
    let mut index_inodes = std::collections::BTreeMap::new();
    let mut held = None;
    let mut appended = 0;
    for round in 0..12 {
        for _ in 0..20 {
            let b = patterned_batch(appended, 100_000);
            log.append(Bytes::from(b), 0, 1).await.unwrap();
            appended += 1;
        }
        for &base in &log.segment_base_offsets() {
            let path = dir.join(gregor_engine::segment_file_name(base));
            seen_inodes.entry(base).or_insert_with(|| inode(&path));
            let index = path.with_extension("index");
            if index.exists() {
                index_inodes.entry(base).or_insert_with(|| inode(&index));
            }
        }
        if round == 2 {
            // A zero-copy read of the oldest segment, held across its retirement.
            let start = log.log_start_offset();
            let r = log.read_for_send(start, 1 << 20, i64::MAX).await.unwrap();
            let gregor_engine::SendData::File(range) = r.data else {
                panic!("the oldest segment is sealed and uncached: a file range");
            };
            let mut bytes = vec![0u8; range.len];
            std::os::unix::fs::FileExt::read_exact_at(&*range.file, &mut bytes, range.position)
                .unwrap();
            use std::os::unix::fs::MetadataExt;
            held = Some((range.file.metadata().unwrap().ino(), range, bytes));
        }
        log.set_high_watermark(log.log_end_offset());
        log.enforce_retention(1).await.unwrap();
        let (end, _) = read_back(&log).await;
        assert_eq!(end, appended as i64);
    }
    let (held_ino, range, bytes) = held.expect("held");
    let mut again = vec![0u8; range.len];
    std::os::unix::fs::FileExt::read_exact_at(&*range.file, &mut again, range.position).unwrap();
    assert!(
        again == bytes,
        "a held file is never recycled under its reader"
    );
    // Inodes repeat: new segments were made of retired files (but not of the held one).
    let distinct: std::collections::BTreeSet<u64> = seen_inodes.values().copied().collect();
    assert!(
        distinct.len() + 3 <= seen_inodes.len(),
        "{} segments, {} files",
        seen_inodes.len(),
        distinct.len()
    );
    let distinct_index: std::collections::BTreeSet<u64> = index_inodes.values().copied().collect();
    assert!(
        distinct_index.len() + 3 <= index_inodes.len(),
        "index files are reused with their segment: {} of {}",
        distinct_index.len(),
        index_inodes.len()
    );
    let ino_count = seen_inodes.values().filter(|&&i| i == held_ino).count();
    assert_eq!(ino_count, 1, "the held file was not reused");
    // At most the newest two ready spares, plus the held one.
    assert!(log.spare_file_count() <= 3, "{}", log.spare_file_count());
    drop(range);
    log.truncate_to(log.log_end_offset() - 1).await.unwrap();
    assert_eq!(log.spare_file_count(), 0, "a truncation drops every spare");
    // A crash: recovery stops at the recycled file's old batches.
    let end = log.log_end_offset();
    drop(log);
    let log = Log::open(&dir, config.clone(), backend).await.unwrap();
    assert_eq!(log.log_end_offset(), end);
    let (read_end, bytes) = read_back(&log).await;
    assert_eq!((read_end, bytes), (end, log.size_bytes()));
    // A clean close leaves every file cut to its data.
    log.close().await.unwrap();
    let total: u64 = log
        .segment_base_offsets()
        .iter()
        .map(|&b| file_len(&dir, b))
        .sum();
    assert_eq!(total, log.size_bytes());
    // The rewritten indexes of recycled files are trusted after a clean close, and right.
    let end = log.log_end_offset();
    drop(log);
    let log = Log::open(&dir, config, backend).await.unwrap();
    assert_eq!(read_back(&log).await, (end, log.size_bytes()));
    for base in log.segment_base_offsets() {
        let r = log.read(base + 3, 1, i64::MAX).await.unwrap();
        let first = gregor_engine::batch::BatchIter::new(&r.data)
            .next()
            .unwrap()
            .0;
        assert_eq!(first.base_offset.get(), base + 3, "indexed lookup");
    }
}

#[test]
fn retired_files_are_recycled_dma() {
    common::run(BackendKind::Dma, retired_files_are_recycled);
}
