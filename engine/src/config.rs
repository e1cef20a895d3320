//! Per-log configuration, mirroring Kafka's topic-level configs.

/// Where a batch's timestamp comes from (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// Keep the producer's timestamps (`CreateTime`, Kafka's default).
    #[default]
    CreateTime,
    /// Overwrite each batch's max timestamp with the broker's clock at append time.
    LogAppendTime,
}

/// Which I/O backend a [`crate::Log`] uses for its segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// O_DIRECT writes and reads through io_uring (glommio `DmaFile`). The log must be opened
    /// and used inside a glommio `LocalExecutor`.
    Dma,
    /// Portable buffered `std::fs` I/O (blocking calls). Runs under any executor (tokio,
    /// `futures_lite::future::block_on`, ...) and on non-Linux systems.
    Std,
}

/// Configuration of one partition log. `Default` gives Kafka's defaults.
///
/// Each field names the Kafka topic config it mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment when the active one would exceed this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first append is older than this.
    pub segment_ms: u64,
    /// `index.interval.bytes`: write a sparse index entry after this many log bytes.
    pub index_interval_bytes: u32,
    /// `segment.index.bytes`: maximum size of a segment's offset (and time) index; the
    /// segment rolls when either index is full.
    pub segment_index_bytes: u32,
    /// `retention.ms`: delete segments whose newest timestamp is older than this; -1 = forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest segments while the log exceeds this size;
    /// -1 = unlimited.
    pub retention_bytes: i64,
    /// `flush.messages`: fdatasync after this many unflushed offsets (`u64::MAX` = only on
    /// explicit [`crate::Log::flush`], on roll and on close).
    pub flush_messages: u64,
    /// `flush.ms`: fdatasync when the last flush is older than this (`u64::MAX` = never by time).
    pub flush_ms: u64,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `max.message.bytes`: largest accepted record batch, header included.
    pub max_message_bytes: u32,
    /// `preallocate`: reserve `segment_bytes` of disk when a segment is created (Dma backend).
    pub preallocate: bool,
    /// `file.delete.delay.ms`: how long a segment removed by retention, DeleteRecords or
    /// truncation stays on disk (renamed `*.deleted`) before a background thread deletes it.
    pub file_delete_delay_ms: u64,
    /// Gregor extension (no Kafka equivalent): bytes of recently appended data kept in memory
    /// so that tail reads (consumers that keep up) never touch the disk.
    pub tail_cache_bytes: usize,
    /// Gregor extension (Dma backend): write zeros ahead of the appends to the active segment,
    /// in the background, so that appends overwrite written blocks (issued inline by io_uring,
    /// and an fdatasync has no size change to persist). Up to 16 MiB per active segment once
    /// the log has been flushed (acks=all, `flush.*`), about 1 MiB (in smaller writes) before, and never
    /// more than about the data already in it.
    pub zeros_ahead: bool,
    /// With `zeros_ahead`: zeros are written only while append writes average under this
    /// many bytes. A large write amortizes what the zeros save, and the zeros cost as much
    /// disk bandwidth as the data (docs/BENCHMARKS.md, change 14).
    pub zeros_ahead_append_bytes_max: u64,
    /// Gregor extension (Dma backend): while append writes average at least
    /// `zeros_ahead_append_bytes_max` (no zeros), allocate blocks ahead of the appends to the
    /// active segment (`fallocate`, in the background, up to 16 MiB past the data and never
    /// more than about half the data already in it), and write each append that reaches into
    /// them as two writes, the rewritten partial block and the rest, so that io_uring issues
    /// both inline instead of handing the append to a kernel worker thread.
    pub allocate_ahead: bool,
    /// Gregor extension (Dma backend): reuse segment files removed by retention or
    /// DeleteRecords as new segments (after `file_delete_delay_ms`, once no reader holds
    /// them), instead of deleting them and allocating new ones.
    pub recycle_segments: bool,
    /// Gregor extension (Dma backend): [`crate::Log::read_for_send`] reads data that is no
    /// longer in the tail cache with O_DIRECT into memory, with reads started ahead of the
    /// next fetch (`read_ahead_bytes`), instead of handing out file ranges for `sendfile`.
    pub direct_cold_reads: bool,
    /// With `direct_cold_reads`: the most bytes of reads ahead the log holds, in flight or
    /// done and not yet taken by a fetch.
    pub read_ahead_bytes: usize,
}

/// Kafka's default `max.message.bytes`.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 1_048_588;
const SEVEN_DAYS_MS: u64 = 7 * 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: SEVEN_DAYS_MS,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 << 20,
            retention_ms: SEVEN_DAYS_MS as i64,
            retention_bytes: -1,
            flush_messages: u64::MAX,
            flush_ms: u64::MAX,
            timestamp_type: TimestampType::CreateTime,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            preallocate: false,
            file_delete_delay_ms: 60_000,
            tail_cache_bytes: 4 << 20,
            zeros_ahead: true,
            zeros_ahead_append_bytes_max: 32 << 10,
            allocate_ahead: true,
            recycle_segments: true,
            direct_cold_reads: false,
            read_ahead_bytes: 8 << 20,
        }
    }
}

impl LogConfig {
    /// Clamp values into the ranges the on-disk format can represent: positions in the
    /// index are u32, so a segment is at most `i32::MAX` bytes (Kafka has the same limit).
    pub(crate) fn sanitized(mut self) -> Self {
        self.segment_bytes = self.segment_bytes.clamp(4096, i32::MAX as u64);
        self.segment_index_bytes = self.segment_index_bytes.max(64);
        self.index_interval_bytes = self.index_interval_bytes.max(1);
        self.segment_ms = self.segment_ms.max(1);
        self.flush_messages = self.flush_messages.max(1);
        self
    }
}
