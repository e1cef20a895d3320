//! `bench disk`: raw sequential O_DIRECT write and read bandwidth of a directory through
//! glommio's io_uring DMA path (the one the broker's segments use), so broker throughput can be
//! stated as a fraction of what the disk allows.

use std::time::Instant;

use futures_lite::io::AsyncWriteExt;
use glommio::io::{DmaFile, DmaStreamReaderBuilder, DmaStreamWriterBuilder};
use serde::Serialize;

use crate::client::{ClientError, Result};

/// Disk benchmark settings.
#[derive(Debug, Clone)]
pub struct DiskSpec {
    /// Directory to test (a temporary file is created and removed there).
    pub data_dir: std::path::PathBuf,
    /// Bytes to write then read.
    pub total_bytes: u64,
    /// I/O size.
    pub block_bytes: usize,
    /// Concurrent I/Os in flight (write-behind / read-ahead).
    pub depth: usize,
}

/// Disk benchmark result.
#[derive(Debug, Clone, Serialize)]
pub struct DiskReport {
    /// Sequential write MB/s (10^6 bytes), fsync included.
    pub write_mb_per_sec: f64,
    /// Sequential read MB/s.
    pub read_mb_per_sec: f64,
    /// Bytes written and read.
    pub bytes: u64,
    /// I/O size.
    pub block_bytes: usize,
    /// I/Os in flight.
    pub depth: usize,
    /// Directory tested.
    pub data_dir: String,
}

fn io_err(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Invalid(format!("{what}: {e}"))
}

/// Runs the disk benchmark on a fresh executor.
pub fn run(spec: DiskSpec) -> Result<DiskReport> {
    std::fs::create_dir_all(&spec.data_dir)
        .map_err(|e| io_err(&format!("creating {}", spec.data_dir.display()), e))?;
    crate::client::block_on(move || async move { run_async(spec).await })
        .map_err(|e| io_err("executor", e))?
}

async fn run_async(spec: DiskSpec) -> Result<DiskReport> {
    let path = spec
        .data_dir
        .join(format!("gregor-bench-disk-{}.tmp", std::process::id()));
    let block = spec.block_bytes.max(4096).next_multiple_of(4096);
    let blocks = spec.total_bytes.div_ceil(block as u64).max(1);
    let total = blocks * block as u64;
    let mut data = vec![0u8; block];
    let mut rng = super::workload::Rng::new(7);
    for chunk in data.chunks_mut(8) {
        let r = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }

    let file = DmaFile::create(&path)
        .await
        .map_err(|e| io_err(&format!("create {}", path.display()), e))?;
    let mut writer = DmaStreamWriterBuilder::new(file)
        .with_buffer_size(block)
        .with_write_behind(spec.depth.max(1))
        .build();
    let t0 = Instant::now();
    let mut write_result = Ok(());
    for _ in 0..blocks {
        if let Err(e) = writer.write_all(&data).await {
            write_result = Err(io_err("write", e));
            break;
        }
    }
    // close() flushes and fsyncs: the time counts, as a broker's acks=all must wait for it.
    let close_result = writer.close().await.map_err(|e| io_err("close", e));
    let write_secs = t0.elapsed().as_secs_f64();
    if write_result.is_err() || close_result.is_err() {
        let _ = std::fs::remove_file(&path);
        write_result?;
        close_result?;
    }

    let file = DmaFile::open(&path).await.map_err(|e| io_err("open", e))?;
    let mut reader = DmaStreamReaderBuilder::new(file)
        .with_buffer_size(block)
        .with_read_ahead(spec.depth.max(1))
        .build();
    let t1 = Instant::now();
    let mut read = 0u64;
    let mut read_result = Ok(());
    while read < total {
        match reader.get_buffer_aligned(block as u64).await {
            Ok(buf) if buf.is_empty() => break,
            Ok(buf) => read += buf.len() as u64,
            Err(e) => {
                read_result = Err(io_err("read", e));
                break;
            }
        }
    }
    let read_secs = t1.elapsed().as_secs_f64();
    let _ = reader.close().await;
    let _ = std::fs::remove_file(&path);
    read_result?;
    if read != total {
        return Err(ClientError::Invalid(format!(
            "read back {read} of {total} bytes"
        )));
    }
    Ok(DiskReport {
        write_mb_per_sec: total as f64 / 1e6 / write_secs.max(1e-9),
        read_mb_per_sec: total as f64 / 1e6 / read_secs.max(1e-9),
        bytes: total,
        block_bytes: block,
        depth: spec.depth,
        data_dir: spec.data_dir.display().to_string(),
    })
}
