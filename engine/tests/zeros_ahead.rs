//! Zeros written ahead of the appends (Dma backend): they never land on data, a crash leaves
//! them behind harmlessly, and sealing a segment cuts them off.

mod common;

use bytes::Bytes;
use gregor_engine::batch::{SimpleRecord, encode_batch, validate_records};
use gregor_engine::{BackendKind, Log, LogConfig};
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

async fn zeros_never_cover_data(backend: BackendKind, dir: PathBuf) {
    let config = LogConfig {
        segment_bytes: 48 << 20,
        tail_cache_bytes: 0,
        ..LogConfig::default()
    };
    let log = Rc::new(Log::open(&dir, config.clone(), backend).await.unwrap());
    // Four concurrent appenders of mixed sizes: groups grow large and often reach into the
    // zero write in flight, which they must wait for.
    let mut tasks = Vec::new();
    for p in 0..4 {
        let log = log.clone();
        tasks.push(glommio::spawn_local(async move {
            for i in 0..50 {
                let b = patterned_batch(p * 1000 + i, SIZES[(p + i) % SIZES.len()]);
                log.append(Bytes::from(b), 0, 1).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
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

async fn zeros_off(backend: BackendKind, dir: PathBuf) {
    let config = LogConfig {
        zeros_ahead: false,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config, backend).await.unwrap();
    for i in 0..20 {
        log.append(Bytes::from(patterned_batch(i, 600_000)), 0, 1)
            .await
            .unwrap();
    }
    glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
    let aligned = (log.size_bytes() + 4095) & !4095;
    assert!(file_len(&dir, 0) <= aligned, "no zeros ahead when off");
}

#[test]
fn zeros_off_dma() {
    common::run(BackendKind::Dma, zeros_off);
}
