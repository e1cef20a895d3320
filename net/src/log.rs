//! The broker's view of one partition log: the only module that calls the storage engine, so
//! the rest of the server speaks in Kafka terms (offsets, error codes) only.
//!
//! Single node: the in-sync replica set is just us, so the high watermark moves to the log
//! end right after each append.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use gregor_engine::{BackendKind, ColdReadPace, Log, LogConfig, LogError, SendData, TimestampType};

use crate::config::StorageBackend;
use crate::published::PublishedOffsets;
use crate::topic_config::TopicConfig;

/// A Kafka error code (`ResponseError::code()`).
pub type ErrorCode = i16;

/// Result of an append.
#[derive(Clone, Copy, Debug)]
pub struct AppendOutcome {
    /// Offset given to the first record.
    pub base_offset: i64,
    /// Offset given to the last record.
    pub last_offset: i64,
    /// Broker timestamp if the topic uses LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    /// Log start offset after the append.
    pub log_start_offset: i64,
}

/// Result of a read.
#[derive(Clone, Debug)]
pub struct ReadOutcome {
    /// Whole batches, possibly empty.
    pub records: Bytes,
    /// High watermark.
    pub high_watermark: i64,
    /// Log start offset.
    pub log_start_offset: i64,
}

/// What [`PartitionLog::read_for_send`] found.
#[derive(Debug)]
pub struct SendOutcome {
    /// Whole batches, in memory or as a file range, possibly empty.
    pub records: SendData,
    /// High watermark.
    pub high_watermark: i64,
    /// Log start offset.
    pub log_start_offset: i64,
    /// `records` were read from disk into memory for this read (see `cold_budget.rs`).
    pub read_from_disk: bool,
}

/// Offsets of a partition.
#[derive(Clone, Copy, Debug)]
pub struct Watermarks {
    /// First offset still in the log.
    pub log_start_offset: i64,
    /// Offset the next record will get (= high watermark on a single node).
    pub log_end_offset: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn code(e: &LogError) -> ErrorCode {
    e.kafka_error_code()
}

/// Translates a topic's effective config into the engine's.
pub fn log_config(config: &TopicConfig) -> LogConfig {
    let clamp_i64 = |v: u64| v.min(i64::MAX as u64) as i64;
    LogConfig {
        segment_bytes: config.segment_bytes,
        segment_ms: config.segment_ms,
        index_interval_bytes: config.index_interval_bytes.min(u64::from(u32::MAX)) as u32,
        retention_ms: config.retention_ms.map_or(-1, clamp_i64),
        retention_bytes: config.retention_bytes.map_or(-1, clamp_i64),
        flush_messages: config.flush_messages,
        flush_ms: if config.flush_ms >= i64::MAX as u64 {
            u64::MAX
        } else {
            config.flush_ms
        },
        timestamp_type: if config.log_append_time {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        max_message_bytes: config.max_message_bytes.min(u64::from(u32::MAX)) as u32,
        file_delete_delay_ms: config.file_delete_delay_ms,
        ..LogConfig::default()
    }
}

/// Broker-level storage settings of a partition log (not topic configs).
#[derive(Debug, Clone, Copy)]
pub struct StorageTuning {
    /// Bytes of tail cache (the core's budget divided among its partitions).
    pub cache_bytes: usize,
    /// `log.segment.zeros.ahead`.
    pub zeros_ahead: bool,
    /// `log.segment.allocate.ahead`.
    pub allocate_ahead: bool,
    /// `log.segment.recycle`.
    pub recycle_segments: bool,
    /// `fetch.cold.reads=direct`.
    pub direct_cold_reads: bool,
    /// Bytes of reads ahead (the core's budget divided among its partitions).
    pub read_ahead_bytes: usize,
}

/// One partition's log.
pub struct PartitionLog {
    log: Log,
    /// Its offsets for other cores, republished by every call that moves them.
    published: Arc<PublishedOffsets>,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering it if it was not closed cleanly; its
    /// offsets are published for other cores as those of a partition of topic `topic_id`.
    pub async fn open(
        dir: &Path,
        topic_id: u128,
        config: TopicConfig,
        backend: StorageBackend,
        tuning: StorageTuning,
    ) -> Result<Self, LogError> {
        let backend = match backend {
            StorageBackend::Dma => BackendKind::Dma,
            StorageBackend::Std => BackendKind::Std,
        };
        let log_config = LogConfig {
            tail_cache_bytes: tuning.cache_bytes,
            zeros_ahead: tuning.zeros_ahead,
            allocate_ahead: tuning.allocate_ahead,
            recycle_segments: tuning.recycle_segments,
            direct_cold_reads: tuning.direct_cold_reads,
            read_ahead_bytes: tuning.read_ahead_bytes,
            ..log_config(&config)
        };
        let log = Log::open(dir, log_config, backend).await?;
        log.set_high_watermark(log.log_end_offset());
        let opened = Self {
            log,
            published: PublishedOffsets::new(topic_id),
        };
        opened.publish();
        Ok(opened)
    }

    /// The offsets other cores read (see `published.rs`).
    pub fn published(&self) -> &Arc<PublishedOffsets> {
        &self.published
    }

    fn publish(&self) {
        self.published
            .publish(self.log.high_watermark(), self.log.log_start_offset());
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        self.log.dir()
    }

    /// Applies a new topic config (takes effect for the next append/roll/retention pass).
    pub fn reconfigure(&self, config: TopicConfig) {
        let current = self.log.config();
        self.log.set_config(LogConfig {
            tail_cache_bytes: current.tail_cache_bytes,
            zeros_ahead: current.zeros_ahead,
            allocate_ahead: current.allocate_ahead,
            recycle_segments: current.recycle_segments,
            direct_cold_reads: current.direct_cold_reads,
            read_ahead_bytes: current.read_ahead_bytes,
            ..log_config(&config)
        });
    }

    /// Sets the bytes of recent batches kept in memory for tail fetches and of reads ahead
    /// of catch-up fetches (the core's budgets divided among its partitions).
    pub fn set_memory_shares(&self, cache_bytes: usize, read_ahead_bytes: usize) {
        let config = self.log.config();
        if config.tail_cache_bytes != cache_bytes || config.read_ahead_bytes != read_ahead_bytes {
            self.log.set_config(LogConfig {
                tail_cache_bytes: cache_bytes,
                read_ahead_bytes,
                ..config
            });
        }
    }

    /// Appends the record batches in `records`, assigning offsets.
    pub async fn append(&self, records: Bytes) -> Result<AppendOutcome, ErrorCode> {
        let info = self
            .log
            .append(records, 0, now_ms())
            .await
            .map_err(|e| code(&e))?;
        self.log.set_high_watermark(info.last_offset + 1);
        self.publish();
        Ok(AppendOutcome {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            log_append_time_ms: info.log_append_time_ms,
            log_start_offset: info.log_start_offset,
        })
    }

    /// Makes everything appended so far durable (group commit inside the engine).
    pub async fn flush(&self) -> Result<(), ErrorCode> {
        self.log.flush().await.map(|_| ()).map_err(|e| code(&e))
    }

    /// Reads whole batches from `offset`, up to `max_bytes`; the engine returns at least one
    /// batch when there is data (KIP-74), callers trim if they must.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadOutcome, ErrorCode> {
        let hw = self.log.high_watermark();
        let r = self
            .log
            .read(offset, max_bytes, hw)
            .await
            .map_err(|e| code(&e))?;
        Ok(ReadOutcome {
            records: r.data,
            high_watermark: r.high_watermark,
            log_start_offset: r.log_start_offset,
        })
    }

    /// Like [`PartitionLog::read`], but data no longer in the tail cache comes back as a file
    /// range to send with `sendfile`, or read with O_DIRECT, at most `disk_bytes_max` of it
    /// beyond the first batch (see `gregor_engine::Log::read_for_send_bounded`).
    pub async fn read_for_send(
        &self,
        offset: i64,
        max_bytes: usize,
        pace: ColdReadPace,
        disk_bytes_max: usize,
    ) -> Result<SendOutcome, ErrorCode> {
        let hw = self.log.high_watermark();
        let r = self
            .log
            .read_for_send_bounded(offset, max_bytes, hw, pace, disk_bytes_max)
            .await
            .map_err(|e| code(&e))?;
        Ok(SendOutcome {
            records: r.data,
            high_watermark: r.high_watermark,
            log_start_offset: r.log_start_offset,
            read_from_disk: r.read_from_disk,
        })
    }

    /// Current watermarks.
    pub fn watermarks(&self) -> Watermarks {
        Watermarks {
            log_start_offset: self.log.log_start_offset(),
            log_end_offset: self.log.high_watermark(),
        }
    }

    /// First offset whose timestamp is >= `timestamp_ms`, with its timestamp.
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, ErrorCode> {
        self.log
            .offset_for_timestamp(timestamp_ms)
            .await
            .map_err(|e| code(&e))
    }

    /// (offset, timestamp) of the record with the largest timestamp.
    pub async fn max_timestamp(&self) -> Result<Option<(i64, i64)>, ErrorCode> {
        Ok(self.log.max_timestamp().map(|(ts, offset)| (offset, ts)))
    }

    /// Deletes records before `offset` (DeleteRecords); returns the new log start offset.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, ErrorCode> {
        let moved = self
            .log
            .delete_records_before(offset)
            .await
            .map_err(|e| code(&e));
        self.publish();
        moved
    }

    /// Applies retention by time and size (and time-based rolls and flushes).
    pub async fn apply_retention(&self) -> Result<(), ErrorCode> {
        let applied = self
            .log
            .enforce_retention(now_ms())
            .await
            .map_err(|e| code(&e));
        self.publish();
        applied
    }

    /// Closes the log cleanly (so the next open needs no recovery).
    pub async fn close(&self) -> Result<(), ErrorCode> {
        self.published.close();
        self.log.close().await.map_err(|e| code(&e))
    }

    /// Closes the log and removes its directory. In-flight users holding the partition see
    /// `Closed` errors on append; open file handles keep their reads working.
    pub async fn delete(&self) -> Result<(), ErrorCode> {
        self.published.close();
        self.log.close().await.map_err(|e| code(&e))?;
        gregor_engine::retire_dir(self.log.dir())
            .map_err(|_| kafka_protocol::ResponseError::KafkaStorageError.code())
    }
}
