//! O(1) access check: a log of 1,000 sealed segments, tail cache off, then cold reads of a
//! batch in the oldest segment and in the newest sealed one, alternated. Reading the oldest
//! must cost about the same as the newest (segment lookup is a binary search, the offset
//! lookup one sparse-index search, then one O_DIRECT read), whatever the number of segments.
//!
//! ```text
//! cargo run --release -p gregor-engine --example segment_access [dir] [segments] [reads]
//! ```
//! Prints one JSON object: median and p99 microseconds per read for both ends and the ratio
//! `oldest_over_newest` (issue 6 target: within 20%, i.e. at most 1.2).

use bytes::Bytes;
use gregor_engine::batch::{SimpleRecord, encode_batch};
use gregor_engine::{BackendKind, Log, LogConfig, LogError};
use std::path::PathBuf;
use std::time::Instant;

/// Bytes of one segment: a handful of 16 KiB batches, so the log stays small on disk.
const SEGMENT_BYTES: u64 = 64 << 10;
/// Records per batch (1 KiB values).
const RECORDS_PER_BATCH: usize = 16;
/// Bytes asked for per read: one batch or a few.
const READ_MAX_BYTES: usize = 32 << 10;

fn percentile(sorted_us: &[f64], p: f64) -> f64 {
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[i.min(sorted_us.len() - 1)]
}

async fn run(dir: PathBuf, segments: usize, reads: usize) -> Result<String, LogError> {
    let config = LogConfig {
        segment_bytes: SEGMENT_BYTES,
        tail_cache_bytes: 0,
        ..LogConfig::default()
    };
    let log = Log::open(&dir, config, BackendKind::Dma).await?;
    let value = vec![b'v'; 1024];
    let records: Vec<SimpleRecord<'_>> = (0..RECORDS_PER_BATCH)
        .map(|i| SimpleRecord {
            timestamp_ms: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(&value),
        })
        .collect();
    let batch = Bytes::from(encode_batch(&records));
    while log.segment_count() <= segments {
        log.append(batch.clone(), 0, 1_700_000_000_000).await?;
    }
    log.set_high_watermark(log.log_end_offset());
    let bases = log.segment_base_offsets();
    // The newest *sealed* segment: the active one may still be served from memory.
    let (oldest, newest) = (bases[0], bases[bases.len() - 2]);
    let hw = log.high_watermark();
    let mut times_us = [Vec::with_capacity(reads), Vec::with_capacity(reads)];
    for i in 0..reads * 2 {
        let which = i % 2;
        // A different batch of the segment each time (offset within the segment varies).
        let offset = [oldest, newest][which] + ((i / 2) % 3 * RECORDS_PER_BATCH) as i64;
        let start = Instant::now();
        let r = log.read(offset, READ_MAX_BYTES, hw).await?;
        times_us[which].push(start.elapsed().as_secs_f64() * 1e6);
        assert!(!r.data.is_empty(), "read at {offset} returned nothing");
    }
    for t in times_us.iter_mut() {
        t.sort_by(f64::total_cmp);
    }
    let (old_p50, new_p50) = (percentile(&times_us[0], 0.5), percentile(&times_us[1], 0.5));
    let json = format!(
        "{{\"segments\":{},\"reads\":{reads},\"oldest_p50_us\":{old_p50:.1},\"oldest_p99_us\":{:.1},\"newest_p50_us\":{new_p50:.1},\"newest_p99_us\":{:.1},\"oldest_over_newest\":{:.3}}}",
        bases.len(),
        percentile(&times_us[0], 0.99),
        percentile(&times_us[1], 0.99),
        old_p50 / new_p50,
    );
    log.close().await?;
    log.delete().await?;
    Ok(json)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().unwrap_or_else(|| "./data".into()));
    let segments: usize = args.next().map_or(Ok(1000), |s| s.parse())?;
    let reads: usize = args.next().map_or(Ok(2000), |s| s.parse())?;
    let dir = root.join(format!("gregor-segment-access-{}", std::process::id()));
    let json = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { run(dir, segments, reads).await })?
        .join()??;
    println!("{json}");
    Ok(())
}
