//! Round trips and API semantics, run on both backends.

mod common;

use bytes::Bytes;
use common::{batch, small_config};
use gregor_engine::batch::BatchIter;
use gregor_engine::{BackendKind, Log, LogConfig, LogError, kafka_code};
use std::path::PathBuf;

/// Collect (base offset, last offset) of every batch in a read.
fn batch_ranges(data: &[u8]) -> Vec<(i64, i64)> {
    BatchIter::new(data)
        .map(|(h, _)| (h.base_offset.get(), h.last_offset()))
        .collect()
}

async fn append_read_round_trip(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(&dir, LogConfig::default(), backend)
        .await
        .unwrap();
    assert_eq!(log.log_end_offset(), 0);
    let b1 = batch(3, 1000, "a");
    let info = log.append(Bytes::from(b1.clone()), 7, 5000).await.unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (0, 2, 3)
    );
    assert_eq!(info.log_append_time_ms, -1);
    let info2 = log
        .append(Bytes::from(batch(2, 2000, "b")), 7, 5001)
        .await
        .unwrap();
    assert_eq!((info2.base_offset, info2.last_offset), (3, 4));
    assert_eq!(log.log_end_offset(), 5);

    let r = log.read(0, 1 << 20, i64::MAX).await.unwrap();
    assert_eq!(batch_ranges(&r.data), vec![(0, 2), (3, 4)]);
    assert_eq!(r.log_end_offset, 5);
    // The stored bytes equal the produced ones except baseOffset and leader epoch.
    let (h, first) = BatchIter::new(&r.data).next().unwrap();
    assert_eq!(h.partition_leader_epoch.get(), 7);
    assert_eq!(&first[12..16], &7i32.to_be_bytes());
    assert_eq!(&first[16..], &b1[16..]);
    assert!(gregor_engine::batch::crc_ok(first));

    // Offset in the middle of a batch returns that whole batch.
    let r = log.read(4, 1 << 20, i64::MAX).await.unwrap();
    assert_eq!(batch_ranges(&r.data), vec![(3, 4)]);
    // max_offset is exclusive on base offsets.
    let r = log.read(0, 1 << 20, 3).await.unwrap();
    assert_eq!(batch_ranges(&r.data), vec![(0, 2)]);
    let r = log.read(3, 1 << 20, 3).await.unwrap();
    assert!(r.data.is_empty());
    // max_bytes smaller than a batch still returns one whole batch (KIP-74).
    let r = log.read(0, 1, i64::MAX).await.unwrap();
    assert_eq!(batch_ranges(&r.data), vec![(0, 2)]);
    // Reading at the log end is empty, not an error.
    let r = log.read(5, 1 << 20, i64::MAX).await.unwrap();
    assert!(r.data.is_empty());
    let err = log.read(6, 1 << 20, i64::MAX).await.unwrap_err();
    assert_eq!(err.kafka_error_code(), kafka_code::OFFSET_OUT_OF_RANGE);
    assert!(matches!(
        log.read(-1, 10, 10).await,
        Err(LogError::OffsetOutOfRange { .. })
    ));

    // Reopen after a clean close: same data.
    log.close().await.unwrap();
    let log = Log::open(&dir, LogConfig::default(), backend)
        .await
        .unwrap();
    assert_eq!(log.log_end_offset(), 5);
    let r = log.read(0, 1 << 20, i64::MAX).await.unwrap();
    assert_eq!(batch_ranges(&r.data), vec![(0, 2), (3, 4)]);
    let info3 = log
        .append(Bytes::from(batch(1, 3000, "c")), 8, 5002)
        .await
        .unwrap();
    assert_eq!(info3.base_offset, 5);
    drop(log);
    // Reopen after a crash (no close): same data.
    let log = Log::open(&dir, LogConfig::default(), backend)
        .await
        .unwrap();
    assert_eq!(log.log_end_offset(), 6);
    let r = log.read(0, 1 << 20, i64::MAX).await.unwrap();
    assert_eq!(batch_ranges(&r.data), vec![(0, 2), (3, 4), (5, 5)]);
    log.delete().await.unwrap();
    assert!(!dir.exists());
}

async fn multi_batch_append(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(&dir, LogConfig::default(), backend)
        .await
        .unwrap();
    let mut produce = batch(2, 10, "x");
    produce.extend_from_slice(&batch(5, 20, "y"));
    produce.extend_from_slice(&batch(1, 30, "z"));
    let info = log.append(Bytes::from(produce), 0, 100).await.unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.record_count),
        (0, 7, 8)
    );
    let r = log.read(0, 1 << 20, i64::MAX).await.unwrap();
    assert_eq!(batch_ranges(&r.data), vec![(0, 1), (2, 6), (7, 7)]);
    // All-or-nothing: a bad second batch rejects the whole append.
    let mut bad = batch(1, 40, "ok");
    let mut broken = batch(1, 41, "bad");
    let n = broken.len();
    broken[n - 1] ^= 0xFF;
    bad.extend_from_slice(&broken);
    let err = log.append(Bytes::from(bad), 0, 101).await.unwrap_err();
    assert_eq!(err.kafka_error_code(), kafka_code::CORRUPT_MESSAGE);
    assert_eq!(log.log_end_offset(), 8);
}

async fn validation_errors(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(
        &dir,
        LogConfig {
            max_message_bytes: 200,
            ..LogConfig::default()
        },
        backend,
    )
    .await
    .unwrap();
    let good = batch(1, 1, "v");
    let code = |e: LogError| e.kafka_error_code();
    // Empty.
    assert_eq!(
        code(log.append(Bytes::new(), 0, 0).await.unwrap_err()),
        kafka_code::INVALID_RECORD
    );
    // Magic 1.
    let mut m1 = good.clone();
    m1[16] = 1;
    assert_eq!(
        code(log.append(Bytes::from(m1), 0, 0).await.unwrap_err()),
        kafka_code::UNSUPPORTED_FOR_MESSAGE_FORMAT
    );
    // Truncated.
    let t = good[..good.len() - 1].to_vec();
    assert_eq!(
        code(log.append(Bytes::from(t), 0, 0).await.unwrap_err()),
        kafka_code::CORRUPT_MESSAGE
    );
    // Bad CRC.
    let mut c = good.clone();
    c[30] ^= 1;
    assert_eq!(
        code(log.append(Bytes::from(c), 0, 0).await.unwrap_err()),
        kafka_code::CORRUPT_MESSAGE
    );
    // Too large.
    let big = common::sized_batch(300, 1);
    assert_eq!(
        code(log.append(Bytes::from(big), 0, 0).await.unwrap_err()),
        kafka_code::MESSAGE_TOO_LARGE
    );
    assert_eq!(log.log_end_offset(), 0);
    log.append(Bytes::from(good), 0, 0).await.unwrap();
    assert_eq!(log.log_end_offset(), 1);
}

async fn rolls_and_reads_everywhere(backend: BackendKind, dir: PathBuf) {
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    let mut expected = Vec::new();
    let mut next = 0i64;
    for i in 0..300 {
        let n = 1 + (i % 7);
        let info = log
            .append(Bytes::from(batch(n, i as i64 * 10, "r")), 1, 1000)
            .await
            .unwrap();
        assert_eq!(info.base_offset, next);
        expected.push((info.base_offset, info.last_offset));
        next = info.last_offset + 1;
    }
    assert!(
        log.segment_count() > 3,
        "expected rolls, got {}",
        log.segment_count()
    );
    // Every offset reads back starting with its own batch.
    for &(base, last) in &expected {
        for off in [base, last] {
            let r = log.read(off, 1, i64::MAX).await.unwrap();
            assert_eq!(batch_ranges(&r.data), vec![(base, last)], "offset {off}");
        }
    }
    // A full scan returns everything in order.
    let mut off = 0;
    let mut seen = Vec::new();
    while off < next {
        let r = log.read(off, 4096, i64::MAX).await.unwrap();
        let ranges = batch_ranges(&r.data);
        assert!(!ranges.is_empty());
        off = ranges.last().unwrap().1 + 1;
        seen.extend(ranges);
    }
    assert_eq!(seen, expected);
    log.close().await.unwrap();
    let log = Log::open(&dir, small_config(), backend).await.unwrap();
    for &(base, last) in expected.iter().step_by(13) {
        let r = log.read(last, 1, i64::MAX).await.unwrap();
        assert_eq!(batch_ranges(&r.data), vec![(base, last)]);
    }
}

both_backends!(
    append_read_round_trip,
    multi_batch_append,
    validation_errors,
    rolls_and_reads_everywhere
);
