//! Append batches to a log and read them back, with both backends.
//!
//! ```text
//! cargo run -p gregor-engine --example append_read [dir] [batches]
//! ```
//! The Std backend runs under a plain `block_on`; the Dma backend (O_DIRECT via io_uring)
//! runs inside a glommio executor, as in the broker.

use bytes::Bytes;
use gregor_engine::batch::{BatchIter, SimpleRecord, encode_batch};
use gregor_engine::{BackendKind, Log, LogConfig, LogError};
use std::path::PathBuf;
use std::time::Instant;

async fn demo(dir: PathBuf, backend: BackendKind, batches: usize) -> Result<(), LogError> {
    let log = Log::open(&dir, LogConfig::default(), backend).await?;
    let value = vec![b'x'; 1000];
    let records: Vec<SimpleRecord<'_>> = (0..10)
        .map(|i| SimpleRecord {
            timestamp_ms: 1_700_000_000_000 + i,
            key: None,
            value: Some(&value),
        })
        .collect();
    let batch = Bytes::from(encode_batch(&records));

    let start = Instant::now();
    for _ in 0..batches {
        log.append(batch.clone(), 0, 1_700_000_000_000).await?;
    }
    log.flush().await?;
    let append_secs = start.elapsed().as_secs_f64();
    log.set_high_watermark(log.log_end_offset());

    let start = Instant::now();
    let (mut offset, mut read_batches, mut read_bytes) = (log.log_start_offset(), 0usize, 0usize);
    while offset < log.high_watermark() {
        let r = log.read(offset, 1 << 20, log.high_watermark()).await?;
        for (header, bytes) in BatchIter::new(&r.data) {
            offset = header.last_offset() + 1;
            read_batches += 1;
            read_bytes += bytes.len();
        }
    }
    let read_secs = start.elapsed().as_secs_f64();
    let mib = read_bytes as f64 / (1 << 20) as f64;
    println!(
        "{backend:?}: appended {batches} batches ({mib:.1} MiB) in {append_secs:.3}s ({:.0} MiB/s), read {read_batches} back in {read_secs:.3}s ({:.0} MiB/s); log end {}",
        mib / append_secs,
        mib / read_secs,
        log.log_end_offset()
    );
    assert_eq!(read_batches, batches + log.log_start_offset() as usize / 10);
    log.close().await?;
    log.delete().await
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "target/gregor-engine-example".into()),
    );
    let batches: usize = args.next().map_or(Ok(20_000), |s| s.parse())?;

    futures_lite::future::block_on(demo(root.join("std/topic-0"), BackendKind::Std, batches))?;

    let dma_dir = root.join("dma/topic-0");
    glommio::LocalExecutorBuilder::default()
        .spawn(move || demo(dma_dir, BackendKind::Dma, batches))?
        .join()??;
    Ok(())
}
