//! Gregor's storage engine: Kafka-format partition logs on O_DIRECT io_uring segments.
//!
//! A [`Log`] is a directory of segments named by base offset, as Kafka names them
//! (`00000000000000000000.log`, `.index`, `.timeindex`). It stores Kafka v2 record batches
//! exactly as producers send them (only `baseOffset` and `partitionLeaderEpoch` are written,
//! which the CRC does not cover), serves reads by offset and timestamp, rolls segments,
//! enforces retention, flushes with group commit and recovers after a crash.
//!
//! I/O goes through a small backend seam: [`BackendKind::Dma`] (glommio `DmaFile`, O_DIRECT,
//! io_uring) or [`BackendKind::Std`] (portable `std::fs`). The on-disk formats and the
//! crash-consistency argument are in `docs/STORAGE.md`.
//!
//! ```no_run
//! use gregor_engine::{BackendKind, Log, LogConfig, batch};
//! # futures_lite::future::block_on(async {
//! let log = Log::open("/tmp/gregor-demo/topic-0", LogConfig::default(), BackendKind::Std).await?;
//! let records = batch::encode_batch(&[batch::SimpleRecord { timestamp_ms: 1, key: None, value: Some(b"hi") }]);
//! let info = log.append(records.into(), 0, 1).await?;
//! let read = log.read(info.base_offset, 1 << 20, log.log_end_offset()).await?;
//! assert_eq!(read.data.len(), batch::BatchIter::new(&read.data).map(|(_, b)| b.len()).sum::<usize>());
//! log.close().await?;
//! # Ok::<(), gregor_engine::LogError>(())
//! # });
//! ```

#![deny(missing_docs)]

pub mod batch;
mod cache;
mod config;
mod deleter;
mod error;
mod index;
mod io;
mod lent;
mod log;
mod read_ahead;
mod recycle;
mod segment;
mod sync;
mod woken;
mod zero_ahead;

pub use config::{BackendKind, DEFAULT_MAX_MESSAGE_BYTES, LogConfig, TimestampType};
pub use deleter::{DELETED_SUFFIX, retire_dir, sweep_retired, wait_idle as wait_for_deletions};
pub use error::{LogError, kafka_code};
pub use log::{
    AppendInfo, CLEAN_SHUTDOWN_FILE, ColdReadPace, FileRange, LOG_START_CHECKPOINT_FILE, Log,
    ReadResult, SendData, SendRead, segment_file_name,
};
