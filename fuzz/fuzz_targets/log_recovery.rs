//! Log recovery on arbitrary segment contents: `Log::open` (Std backend) must not panic, must
//! keep the valid prefix byte for byte, must serve only CRC-valid batches after a crash, and
//! the recovered log must accept appends at its end and reopen to the same end.
//!
//! Input: a mode byte (bit 0: a `.clean_shutdown` marker, bit 1: fuzzed `.index` and
//! `.timeindex` files, bits 4-6: number of valid batches to write first), then for each valid
//! batch a length byte and that many value bytes, then the garbage tail of the segment.
#![no_main]

use gregor_engine::batch::{self, SimpleRecord};
use gregor_engine::{BackendKind, CLEAN_SHUTDOWN_FILE, Log, LogConfig, segment_file_name};
use libfuzzer_sys::fuzz_target;

fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(input.len());
    let (head, tail) = input.split_at(n);
    *input = tail;
    head
}

#[path = "shared/scratch.rs"]
mod scratch;
use scratch::scratch_dir;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let Some(&mode) = take(&mut input, 1).first() else {
        return;
    };
    let clean = mode & 1 == 1;
    let with_indexes = mode & 2 == 2;
    let valid_batches = ((mode >> 4) & 7) as usize;

    let mut prefix = Vec::new();
    let mut next_offset = 0i64;
    for i in 0..valid_batches {
        let len = take(&mut input, 1).first().copied().unwrap_or(0) as usize % 32;
        let value = take(&mut input, len);
        let records = [
            SimpleRecord {
                timestamp_ms: 1_000 + i as i64,
                key: None,
                value: Some(value),
            },
            SimpleRecord {
                timestamp_ms: 1_001 + i as i64,
                key: Some(b"k"),
                value: None,
            },
        ];
        let mut b = batch::encode_batch(&records);
        b[0..8].copy_from_slice(&next_offset.to_be_bytes()); // not covered by the CRC
        next_offset += records.len() as i64;
        prefix.extend_from_slice(&b);
    }
    let (index, rest) = if with_indexes {
        let n = take(&mut input, 1).first().copied().unwrap_or(0) as usize;
        (take(&mut input, n), input)
    } else {
        (&[][..], input)
    };
    let mut segment = prefix.clone();
    segment.extend_from_slice(rest);

    let dir = scratch_dir();
    let log_dir = dir.path().join("t-0");
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let log_path = log_dir.join(segment_file_name(0));
    std::fs::write(&log_path, &segment).expect("write segment");
    if with_indexes {
        let (a, b) = index.split_at(index.len() / 2);
        std::fs::write(log_path.with_extension("index"), a).expect("write index");
        std::fs::write(log_path.with_extension("timeindex"), b).expect("write timeindex");
    }
    if clean {
        std::fs::write(log_dir.join(CLEAN_SHUTDOWN_FILE), b"").expect("marker");
    }

    futures_lite::future::block_on(async {
        let log = match Log::open(&log_dir, LogConfig::default(), BackendKind::Std).await {
            Ok(log) => log,
            Err(e) => panic!("open failed on a damaged segment: {e}"),
        };
        let end = log.log_end_offset();
        assert!(
            end >= next_offset,
            "valid prefix lost: end {end} < {next_offset}"
        );
        let mut read_back = Vec::new();
        let mut offset = 0i64;
        while offset < end {
            let r = log
                .read(offset, 1 << 20, end)
                .await
                .expect("read inside the log");
            if r.data.is_empty() {
                break;
            }
            let mut advanced = false;
            for (header, b) in batch::BatchIter::new(&r.data) {
                if !clean {
                    // After a crash every kept batch was scanned and CRC-checked.
                    assert!(batch::crc_ok(b), "recovery kept a batch with a bad CRC");
                }
                let last = header.last_offset();
                if last >= offset {
                    offset = last + 1;
                    advanced = true;
                }
            }
            read_back.extend_from_slice(&r.data);
            if !advanced {
                break;
            }
        }
        assert!(
            read_back.starts_with(&prefix) || prefix.is_empty(),
            "the valid prefix does not read back byte for byte"
        );
        let new = batch::encode_batch(&[SimpleRecord {
            timestamp_ms: 5,
            key: None,
            value: Some(b"x"),
        }]);
        let info = log
            .append(new.into(), 0, 10)
            .await
            .expect("append after recovery");
        assert_eq!(info.base_offset, end);
        log.close().await.expect("close");
        drop(log);
        let again = Log::open(&log_dir, LogConfig::default(), BackendKind::Std)
            .await
            .expect("reopen");
        assert_eq!(again.log_end_offset(), end + 1);
        again.close().await.expect("close again");
    });
});
