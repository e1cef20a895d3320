//! Typed errors, each mapping to a Kafka error code.

/// Kafka error codes the engine's errors map to.
pub mod kafka_code {
    /// OFFSET_OUT_OF_RANGE
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// CORRUPT_MESSAGE
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// MESSAGE_TOO_LARGE
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// RECORD_LIST_TOO_LARGE
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    /// INVALID_TIMESTAMP
    pub const INVALID_TIMESTAMP: i16 = 32;
    /// UNSUPPORTED_FOR_MESSAGE_FORMAT
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    /// KAFKA_STORAGE_ERROR
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    /// INVALID_RECORD
    pub const INVALID_RECORD: i16 = 87;
}

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A batch failed its CRC, length or header checks (Kafka CORRUPT_MESSAGE).
    #[error("corrupt record batch at byte {position}: {reason}")]
    CorruptMessage {
        /// Byte position of the bad batch inside the appended buffer.
        position: usize,
        /// What check failed.
        reason: &'static str,
    },
    /// A batch with magic 0 or 1 (Kafka UNSUPPORTED_FOR_MESSAGE_FORMAT).
    #[error("record batch magic {magic} is not supported (only v2)")]
    UnsupportedForMessageFormat {
        /// The magic byte found.
        magic: i8,
    },
    /// One batch exceeds `max.message.bytes` (Kafka MESSAGE_TOO_LARGE).
    #[error("record batch of {batch_bytes} bytes exceeds max.message.bytes {max_bytes}")]
    MessageTooLarge {
        /// Size of the batch.
        batch_bytes: usize,
        /// The configured limit.
        max_bytes: usize,
    },
    /// The whole append is larger than a segment (Kafka RECORD_LIST_TOO_LARGE).
    #[error("append of {records_bytes} bytes exceeds segment.bytes {segment_bytes}")]
    RecordListTooLarge {
        /// Size of the append.
        records_bytes: usize,
        /// The configured segment size.
        segment_bytes: u64,
    },
    /// A structurally valid batch whose contents break the rules (Kafka INVALID_RECORD).
    #[error("invalid record batch at byte {position}: {reason}")]
    InvalidRecord {
        /// Byte position of the bad batch inside the appended buffer.
        position: usize,
        /// What rule was broken.
        reason: &'static str,
    },
    /// An offset outside `[log_start, log_end]` (Kafka OFFSET_OUT_OF_RANGE).
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// Current log start offset.
        log_start: i64,
        /// Current log end offset.
        log_end: i64,
    },
    /// A timestamp the log refuses (Kafka INVALID_TIMESTAMP).
    #[error("invalid timestamp: {reason}")]
    InvalidTimestamp {
        /// Why.
        reason: &'static str,
    },
    /// Data read back from disk fails its checks (Kafka KAFKA_STORAGE_ERROR).
    #[error("corrupt log data in segment {segment_base} at byte {position}: {reason}")]
    CorruptLog {
        /// Base offset of the segment.
        segment_base: i64,
        /// Byte position in the segment file.
        position: u64,
        /// What check failed.
        reason: &'static str,
    },
    /// The log was closed or deleted.
    #[error("log is closed")]
    Closed,
    /// An I/O error from the filesystem (Kafka KAFKA_STORAGE_ERROR).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl LogError {
    /// A copy for each member of a failed append group (`io::Error` is not `Clone`).
    pub(crate) fn duplicate(&self) -> LogError {
        match self {
            LogError::CorruptMessage { position, reason } => LogError::CorruptMessage {
                position: *position,
                reason,
            },
            LogError::UnsupportedForMessageFormat { magic } => {
                LogError::UnsupportedForMessageFormat { magic: *magic }
            }
            LogError::MessageTooLarge {
                batch_bytes,
                max_bytes,
            } => LogError::MessageTooLarge {
                batch_bytes: *batch_bytes,
                max_bytes: *max_bytes,
            },
            LogError::RecordListTooLarge {
                records_bytes,
                segment_bytes,
            } => LogError::RecordListTooLarge {
                records_bytes: *records_bytes,
                segment_bytes: *segment_bytes,
            },
            LogError::InvalidRecord { position, reason } => LogError::InvalidRecord {
                position: *position,
                reason,
            },
            LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            } => LogError::OffsetOutOfRange {
                offset: *offset,
                log_start: *log_start,
                log_end: *log_end,
            },
            LogError::InvalidTimestamp { reason } => LogError::InvalidTimestamp { reason },
            LogError::CorruptLog {
                segment_base,
                position,
                reason,
            } => LogError::CorruptLog {
                segment_base: *segment_base,
                position: *position,
                reason,
            },
            LogError::Closed => LogError::Closed,
            LogError::Io(e) => LogError::Io(std::io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// The Kafka protocol error code a broker should return for this error.
    pub fn kafka_error_code(&self) -> i16 {
        use kafka_code::*;
        match self {
            LogError::CorruptMessage { .. } => CORRUPT_MESSAGE,
            LogError::UnsupportedForMessageFormat { .. } => UNSUPPORTED_FOR_MESSAGE_FORMAT,
            LogError::MessageTooLarge { .. } => MESSAGE_TOO_LARGE,
            LogError::RecordListTooLarge { .. } => RECORD_LIST_TOO_LARGE,
            LogError::InvalidRecord { .. } => INVALID_RECORD,
            LogError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
            LogError::InvalidTimestamp { .. } => INVALID_TIMESTAMP,
            LogError::CorruptLog { .. } | LogError::Closed | LogError::Io(_) => KAFKA_STORAGE_ERROR,
        }
    }
}
