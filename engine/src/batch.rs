//! The Kafka v2 record batch format: a zero-copy header view, validation of produced batches,
//! and iteration over batches in a buffer.
//!
//! Layout of the 61-byte header (all integers big-endian):
//!
//! | bytes  | field                 | covered by CRC |
//! |--------|-----------------------|----------------|
//! | 0..8   | baseOffset i64        | no             |
//! | 8..12  | batchLength i32       | no             |
//! | 12..16 | partitionLeaderEpoch  | no             |
//! | 16     | magic i8 (= 2)        | no             |
//! | 17..21 | crc u32 (CRC-32C)     | no             |
//! | 21..23 | attributes i16        | yes            |
//! | 23..27 | lastOffsetDelta i32   | yes            |
//! | 27..35 | firstTimestamp i64    | yes            |
//! | 35..43 | maxTimestamp i64      | yes            |
//! | 43..51 | producerId i64        | yes            |
//! | 51..53 | producerEpoch i16     | yes            |
//! | 53..57 | baseSequence i32      | yes            |
//! | 57..61 | recordsCount i32      | yes            |
//!
//! `batchLength` counts the bytes after itself, so a batch occupies `batchLength + 12` bytes.

use crate::error::LogError;
use bytes::Bytes;
use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of the v2 batch header.
pub const HEADER_BYTES: usize = 61;
/// Bytes before the part counted by `batchLength` (baseOffset + batchLength).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Offset of the first byte covered by the CRC (the attributes field).
pub const CRC_START: usize = 21;
/// Offset of the magic byte (the same in every message format version).
pub const MAGIC_OFFSET: usize = 16;
/// The only supported magic.
pub const MAGIC_V2: i8 = 2;
/// Attribute bits 0..2: compression codec (0 = none).
pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 3: timestamp type (1 = LogAppendTime).
pub const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
/// Attribute bit 4: transactional batch.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit 5: control batch.
pub const ATTR_CONTROL: i16 = 0x20;

/// Zero-copy big-endian view of a v2 record batch header.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BatchHeader {
    /// First offset of the batch (assigned by the log).
    pub base_offset: I64,
    /// Bytes following this field.
    pub batch_length: I32,
    /// Leader epoch at append (assigned by the log).
    pub partition_leader_epoch: I32,
    /// Format version; 2.
    pub magic: i8,
    /// CRC-32C of bytes `CRC_START..`.
    pub crc: U32,
    /// Compression, timestamp type, transactional, control bits.
    pub attributes: I16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: I32,
    /// Timestamp of the first record.
    pub first_timestamp: I64,
    /// Largest record timestamp (or the append time under LogAppendTime).
    pub max_timestamp: I64,
    /// Idempotent producer id (-1 if none).
    pub producer_id: I64,
    /// Idempotent producer epoch.
    pub producer_epoch: I16,
    /// Sequence number of the first record.
    pub base_sequence: I32,
    /// Number of records.
    pub records_count: I32,
}

const _: () = assert!(std::mem::size_of::<BatchHeader>() == HEADER_BYTES);

impl BatchHeader {
    /// View the header at the start of `buf`, if `buf` holds at least 61 bytes.
    pub fn view(buf: &[u8]) -> Option<&BatchHeader> {
        BatchHeader::ref_from_prefix(buf).ok().map(|(h, _)| h)
    }

    /// Mutable view of the header at the start of `buf`.
    pub fn view_mut(buf: &mut [u8]) -> Option<&mut BatchHeader> {
        BatchHeader::mut_from_prefix(buf).ok().map(|(h, _)| h)
    }

    /// Total bytes the batch occupies, or `None` if `batchLength` is impossible.
    pub fn total_bytes(&self) -> Option<usize> {
        let len = self.batch_length.get();
        let total = (len as i64).checked_add(LOG_OVERHEAD_BYTES as i64)?;
        if len < 0 || total < HEADER_BYTES as i64 {
            return None;
        }
        usize::try_from(total).ok()
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .get()
            .saturating_add(self.last_offset_delta.get() as i64)
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes.get() & ATTR_COMPRESSION_MASK
    }

    /// Whether the timestamp type bit says LogAppendTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes.get() & ATTR_TIMESTAMP_TYPE != 0
    }

    /// Whether this is a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes.get() & ATTR_CONTROL != 0
    }

    /// Whether this batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes.get() & ATTR_TRANSACTIONAL != 0
    }
}

/// CRC-32C (Castagnoli), the checksum of Kafka record batches, over `bytes`.
///
/// Every produced batch is checked once on the way in, so this is on the hot path: crc-fast
/// folds with carry-less multiplies (AVX-512 VPCLMULQDQ where the CPU has it, detected at run
/// time), about twice the crc32c crate's SSE4.2 speed here (docs/BENCHMARKS.md, change 25).
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(bytes)
}

/// CRC-32C of a whole batch's covered bytes.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c(&batch[CRC_START.min(batch.len())..])
}

/// Whether the stored CRC matches the batch bytes.
pub fn crc_ok(batch: &[u8]) -> bool {
    match BatchHeader::view(batch) {
        Some(h) => h.crc.get() == compute_crc(batch),
        None => false,
    }
}

/// Facts about one validated batch of a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Position of the batch inside the validated buffer.
    pub position: usize,
    /// Bytes the batch occupies.
    pub total_bytes: usize,
    /// `lastOffsetDelta` of the batch.
    pub last_offset_delta: i32,
    /// `maxTimestamp` as sent.
    pub max_timestamp: i64,
    /// For uncompressed batches: the largest record timestamp and the offset delta of its first
    /// occurrence, computed from the records themselves.
    pub record_max_timestamp: Option<(i64, i32)>,
}

/// Validate a produce request's `records`: one or more concatenated v2 batches, all of them
/// complete. Checks happen in the order Kafka does them so the error code matches; nothing
/// is decompressed. Returns one [`BatchInfo`] per batch.
pub fn validate_records(
    records: &[u8],
    max_message_bytes: usize,
) -> Result<Vec<BatchInfo>, LogError> {
    if records.is_empty() {
        return Err(LogError::InvalidRecord {
            position: 0,
            reason: "no record batches",
        });
    }
    let mut infos = Vec::with_capacity(1);
    let mut position = 0usize;
    while position < records.len() {
        let info = validate_batch(&records[position..], position, max_message_bytes)?;
        position += info.total_bytes;
        infos.push(info);
    }
    Ok(infos)
}

fn corrupt(position: usize, reason: &'static str) -> LogError {
    LogError::CorruptMessage { position, reason }
}

fn invalid(position: usize, reason: &'static str) -> LogError {
    LogError::InvalidRecord { position, reason }
}

/// Validate the batch at the start of `buf` (which may continue with more batches).
pub fn validate_batch(
    buf: &[u8],
    position: usize,
    max_message_bytes: usize,
) -> Result<BatchInfo, LogError> {
    if buf.len() <= MAGIC_OFFSET {
        return Err(corrupt(position, "truncated batch header"));
    }
    let magic = buf[MAGIC_OFFSET] as i8;
    if magic < MAGIC_V2 {
        return Err(LogError::UnsupportedForMessageFormat { magic });
    }
    if magic > MAGIC_V2 {
        return Err(corrupt(position, "unknown magic"));
    }
    let header =
        BatchHeader::view(buf).ok_or_else(|| corrupt(position, "truncated batch header"))?;
    let total_bytes = header
        .total_bytes()
        .ok_or_else(|| corrupt(position, "batch length smaller than the header"))?;
    if total_bytes > buf.len() {
        return Err(corrupt(position, "batch length exceeds the buffer"));
    }
    if total_bytes > max_message_bytes {
        return Err(LogError::MessageTooLarge {
            batch_bytes: total_bytes,
            max_bytes: max_message_bytes,
        });
    }
    let batch = &buf[..total_bytes];
    if header.crc.get() != compute_crc(batch) {
        return Err(corrupt(position, "CRC32C mismatch"));
    }
    let records_count = header.records_count.get();
    let last_offset_delta = header.last_offset_delta.get();
    if records_count <= 0 {
        return Err(invalid(position, "batch has no records"));
    }
    if last_offset_delta < 0 || last_offset_delta as i64 + 1 != records_count as i64 {
        return Err(invalid(
            position,
            "record count does not match lastOffsetDelta",
        ));
    }
    if header.is_control() {
        return Err(invalid(
            position,
            "control batches may not be produced by clients",
        ));
    }
    if header.is_log_append_time() {
        return Err(LogError::InvalidTimestamp {
            reason: "producers may not set the LogAppendTime timestamp type",
        });
    }
    let record_max_timestamp = if header.compression() == 0 {
        Some(walk_records(batch, position)?)
    } else {
        None
    };
    Ok(BatchInfo {
        position,
        total_bytes,
        last_offset_delta,
        max_timestamp: header.max_timestamp.get(),
        record_max_timestamp,
    })
}

/// Walk the records of an uncompressed batch: lengths must tile the batch exactly, offset
/// deltas must be 0, 1, 2, ... Returns (max record timestamp, offset delta of its first
/// occurrence). No allocation; bounded by the batch size.
fn walk_records(batch: &[u8], position: usize) -> Result<(i64, i32), LogError> {
    let header =
        BatchHeader::view(batch).ok_or_else(|| corrupt(position, "truncated batch header"))?;
    let count = header.records_count.get();
    let first_timestamp = header.first_timestamp.get();
    let body = &batch[HEADER_BYTES..];
    // Each record takes at least 7 bytes, so a count beyond this is impossible.
    if count as usize > body.len() {
        return Err(corrupt(position, "record count exceeds the batch size"));
    }
    let mut pos = 0usize;
    let mut max = (i64::MIN, 0i32);
    for expected_delta in 0..count {
        let (len, n) =
            read_varint(&body[pos..]).ok_or_else(|| corrupt(position, "bad record length"))?;
        pos += n;
        if len < 0 || len as usize > body.len() - pos {
            return Err(corrupt(position, "record length exceeds the batch"));
        }
        let record = &body[pos..pos + len as usize];
        // attributes i8, timestampDelta varlong, offsetDelta varint
        let rest = record
            .get(1..)
            .ok_or_else(|| corrupt(position, "record too short"))?;
        let (ts_delta, n1) =
            read_varlong(rest).ok_or_else(|| corrupt(position, "bad timestamp delta"))?;
        let (offset_delta, _) =
            read_varint(&rest[n1..]).ok_or_else(|| corrupt(position, "bad offset delta"))?;
        if offset_delta != expected_delta {
            return Err(invalid(
                position,
                "record offset deltas are not consecutive",
            ));
        }
        let ts = first_timestamp.wrapping_add(ts_delta);
        if ts > max.0 {
            max = (ts, offset_delta);
        }
        pos += len as usize;
    }
    if pos != body.len() {
        return Err(corrupt(position, "records do not fill the batch"));
    }
    Ok(max)
}

/// Find the first record of an uncompressed batch whose timestamp is >= `target`.
/// Returns (offset delta, timestamp). `None` if the batch is compressed or malformed.
pub fn find_record_by_timestamp(batch: &[u8], target: i64) -> Option<(i32, i64)> {
    let header = BatchHeader::view(batch)?;
    if header.compression() != 0 {
        return None;
    }
    let first_timestamp = header.first_timestamp.get();
    let body = batch.get(HEADER_BYTES..)?;
    let mut pos = 0usize;
    for _ in 0..header.records_count.get().max(0) {
        let (len, n) = read_varint(body.get(pos..)?)?;
        pos += n;
        let record = body.get(pos..pos.checked_add(usize::try_from(len).ok()?)?)?;
        let rest = record.get(1..)?;
        let (ts_delta, n1) = read_varlong(rest)?;
        let (offset_delta, _) = read_varint(rest.get(n1..)?)?;
        let ts = first_timestamp.wrapping_add(ts_delta);
        if ts >= target {
            return Some((offset_delta, ts));
        }
        pos += record.len();
    }
    None
}

/// Zigzag varint (Kafka `varint`), returns value and bytes used.
fn read_varint(buf: &[u8]) -> Option<(i32, usize)> {
    let (v, n) = read_unsigned(buf, 5)?;
    let v = v as u32;
    Some((((v >> 1) as i32) ^ -((v & 1) as i32), n))
}

/// Zigzag varlong (Kafka `varlong`).
fn read_varlong(buf: &[u8]) -> Option<(i64, usize)> {
    let (v, n) = read_unsigned(buf, 10)?;
    Some((((v >> 1) as i64) ^ -((v & 1) as i64), n))
}

fn read_unsigned(buf: &[u8], max_bytes: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().take(max_bytes).enumerate() {
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Stamp a validated batch (in place) for appending: offsets, leader epoch and, under
/// LogAppendTime, the timestamp (the only case where the CRC is recomputed). Under
/// CreateTime an uncompressed batch whose `maxTimestamp` disagrees with its records is fixed,
/// as Kafka does. Returns the batch's max timestamp as stored.
pub(crate) fn stamp(
    batch: &mut [u8],
    info: &BatchInfo,
    base_offset: i64,
    leader_epoch: i32,
    log_append_time_ms: Option<i64>,
) -> i64 {
    let Some(header) = BatchHeader::view_mut(batch) else {
        return -1;
    };
    match stamp_header(header, info, base_offset, leader_epoch, log_append_time_ms) {
        Some(ts) => {
            let crc = compute_crc(batch);
            if let Some(h) = BatchHeader::view_mut(batch) {
                h.crc.set(crc);
            }
            ts
        }
        None => info.max_timestamp,
    }
}

/// [`stamp`] for a batch that lies in two buffers, `first` then `second` (an append written
/// as two writes, `zero_ahead.rs`), so that neither is copied to make it contiguous. The
/// header may itself be cut anywhere.
pub(crate) fn stamp_split(
    first: &mut [u8],
    second: &mut [u8],
    info: &BatchInfo,
    base_offset: i64,
    leader_epoch: i32,
    log_append_time_ms: Option<i64>,
) -> i64 {
    let mut bytes = [0u8; HEADER_BYTES];
    let in_first = first.len().min(HEADER_BYTES);
    let in_second = HEADER_BYTES - in_first;
    if second.len() < in_second {
        return -1;
    }
    bytes[..in_first].copy_from_slice(&first[..in_first]);
    bytes[in_first..].copy_from_slice(&second[..in_second]);
    let Some(header) = BatchHeader::view_mut(&mut bytes) else {
        return -1;
    };
    let stamped = stamp_header(header, info, base_offset, leader_epoch, log_append_time_ms);
    if stamped.is_some() {
        let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
        digest.update(&bytes[CRC_START..]);
        digest.update(&first[in_first..]);
        digest.update(&second[in_second..]);
        let crc = digest.finalize() as u32;
        if let Some(h) = BatchHeader::view_mut(&mut bytes) {
            h.crc.set(crc);
        }
    }
    first[..in_first].copy_from_slice(&bytes[..in_first]);
    second[..in_second].copy_from_slice(&bytes[in_first..]);
    stamped.unwrap_or(info.max_timestamp)
}

/// Sets a batch header's append fields; returns the new max timestamp when the CRC must be
/// recomputed (it covers the timestamp), `None` when the stored one stands.
fn stamp_header(
    header: &mut BatchHeader,
    info: &BatchInfo,
    base_offset: i64,
    leader_epoch: i32,
    log_append_time_ms: Option<i64>,
) -> Option<i64> {
    header.base_offset.set(base_offset);
    header.partition_leader_epoch.set(leader_epoch);
    let new_max = match (log_append_time_ms, info.record_max_timestamp) {
        (Some(now), _) => {
            let attrs = header.attributes.get() | ATTR_TIMESTAMP_TYPE;
            header.attributes.set(attrs);
            Some(now)
        }
        (None, Some((record_max, _))) if record_max != info.max_timestamp => Some(record_max),
        _ => None,
    };
    if let Some(ts) = new_max {
        header.max_timestamp.set(ts);
    }
    new_max
}

/// Iterate over the complete batches of a buffer of stored batches (e.g. a fetch response),
/// stopping at the first incomplete or malformed one.
pub struct BatchIter<'a> {
    buf: &'a [u8],
}

impl<'a> BatchIter<'a> {
    /// Iterate the batches in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter { buf }
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = (&'a BatchHeader, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let header = BatchHeader::view(self.buf)?;
        let total = header.total_bytes()?;
        if total > self.buf.len() || header.magic != MAGIC_V2 {
            return None;
        }
        let (batch, rest) = self.buf.split_at(total);
        self.buf = rest;
        Some((header, batch))
    }
}

/// Iterate over the complete batches of stored data held as consecutive pieces (the tail
/// cache's chunks), where a batch may run from one piece into the next (a split append).
/// Yields each batch's header (a copy) and size; stops at the first incomplete or malformed
/// one.
pub(crate) struct PiecesBatchIter<'a> {
    pieces: &'a [Bytes],
    /// The cursor: a piece and a position in it.
    piece: usize,
    at: usize,
    /// Bytes from the cursor to the end of the last piece.
    left: usize,
}

impl<'a> PiecesBatchIter<'a> {
    pub(crate) fn new(pieces: &'a [Bytes]) -> Self {
        PiecesBatchIter {
            pieces,
            piece: 0,
            at: 0,
            left: pieces.iter().map(Bytes::len).sum(),
        }
    }

    /// The header at the cursor, gathered across pieces if it is cut.
    fn header(&self) -> Option<BatchHeader> {
        let here = &self.pieces.get(self.piece)?[self.at..];
        if let Ok((header, _)) = BatchHeader::read_from_prefix(here) {
            return Some(header);
        }
        let mut bytes = [0u8; HEADER_BYTES];
        let mut filled = 0;
        for piece in
            std::iter::once(here).chain(self.pieces[self.piece + 1..].iter().map(|p| &p[..]))
        {
            let n = piece.len().min(HEADER_BYTES - filled);
            bytes[filled..filled + n].copy_from_slice(&piece[..n]);
            filled += n;
            if filled == HEADER_BYTES {
                return BatchHeader::read_from_bytes(&bytes).ok();
            }
        }
        None
    }
}

impl Iterator for PiecesBatchIter<'_> {
    type Item = (BatchHeader, usize);

    fn next(&mut self) -> Option<Self::Item> {
        let header = self.header()?;
        let total = header.total_bytes()?;
        if total > self.left || header.magic != MAGIC_V2 {
            return None;
        }
        self.left -= total;
        let mut advance = total;
        while let Some(piece) = self.pieces.get(self.piece) {
            let room = piece.len() - self.at;
            if advance < room {
                self.at += advance;
                break;
            }
            advance -= room;
            self.piece += 1;
            self.at = 0;
        }
        Some((header, total))
    }
}

/// One record for [`encode_batch`].
#[derive(Debug, Clone, Copy)]
pub struct SimpleRecord<'a> {
    /// Record timestamp (ms).
    pub timestamp_ms: i64,
    /// Key, or `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Value, or `None` for a null value (tombstone).
    pub value: Option<&'a [u8]>,
}

/// Encode an uncompressed v2 batch the way a producer would (base offset 0, no producer id,
/// no headers). For tests, examples, benchmarks and tools; the engine itself never encodes.
pub fn encode_batch(records: &[SimpleRecord<'_>]) -> Vec<u8> {
    let first_timestamp = records.first().map_or(-1, |r| r.timestamp_ms);
    let max_timestamp = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(-1);
    let mut out = vec![0u8; HEADER_BYTES];
    let mut record = Vec::new();
    for (i, r) in records.iter().enumerate() {
        record.clear();
        record.push(0); // attributes
        write_varlong(&mut record, r.timestamp_ms.wrapping_sub(first_timestamp));
        write_varlong(&mut record, i as i64);
        for field in [r.key, r.value] {
            match field {
                Some(bytes) => {
                    write_varlong(&mut record, bytes.len() as i64);
                    record.extend_from_slice(bytes);
                }
                None => write_varlong(&mut record, -1),
            }
        }
        write_varlong(&mut record, 0); // header count
        write_varlong(&mut out, record.len() as i64);
        out.extend_from_slice(&record);
    }
    let total = out.len();
    if let Some(h) = BatchHeader::view_mut(&mut out) {
        h.base_offset.set(0);
        h.batch_length.set((total - LOG_OVERHEAD_BYTES) as i32);
        h.partition_leader_epoch.set(-1);
        h.magic = MAGIC_V2;
        h.attributes.set(0);
        h.last_offset_delta.set(records.len() as i32 - 1);
        h.first_timestamp.set(first_timestamp);
        h.max_timestamp.set(max_timestamp);
        h.producer_id.set(-1);
        h.producer_epoch.set(-1);
        h.base_sequence.set(-1);
        h.records_count.set(records.len() as i32);
    }
    let crc = compute_crc(&out);
    if let Some(h) = BatchHeader::view_mut(&mut out) {
        h.crc.set(crc);
    }
    out
}

fn write_varlong(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        let recs: Vec<SimpleRecord<'_>> = (0..n)
            .map(|i| SimpleRecord {
                timestamp_ms: 1000 + (i as i64 * 7) % 5,
                key: None,
                value: Some(b"value"),
            })
            .collect();
        encode_batch(&recs)
    }

    /// The SIMD checksum against an independent implementation (the crc32c crate), over every
    /// length around the folding widths and every start alignment: a wrong tail or alignment
    /// path would pass Kafka-format round trips of our own batches and fail every client.
    #[test]
    fn crc32c_matches_an_independent_implementation() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283, "the CRC-32C check value");
        let data: Vec<u8> = (0..8192u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..64 {
            for len in (0..600).chain([1023, 1024, 1025, 4095, 4096, 4097, 8000]) {
                let bytes = &data[start..start + len];
                assert_eq!(
                    crc32c(bytes),
                    ::crc32c::crc32c(bytes),
                    "start {start} len {len}"
                );
            }
        }
    }

    #[test]
    fn encode_validate_round_trip() {
        let b = sample(4);
        let infos = validate_records(&b, 1 << 20).unwrap();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].total_bytes, b.len());
        assert_eq!(infos[0].last_offset_delta, 3);
        // timestamps 1000, 1002, 1004, 1001: max 1004 at delta 2
        assert_eq!(infos[0].record_max_timestamp, Some((1004, 2)));
        assert_eq!(find_record_by_timestamp(&b, 1003), Some((2, 1004)));
        assert_eq!(find_record_by_timestamp(&b, 1005), None);
        let h = BatchHeader::view(&b).unwrap();
        assert_eq!(h.total_bytes(), Some(b.len()));
        assert_eq!(BatchIter::new(&b).count(), 1);
    }

    #[test]
    fn rejects_inconsistent_counts() {
        let mut b = sample(3);
        // records_count says 2 while lastOffsetDelta says 2 (3 records): fix CRC to isolate.
        BatchHeader::view_mut(&mut b).unwrap().records_count.set(2);
        let crc = compute_crc(&b);
        BatchHeader::view_mut(&mut b).unwrap().crc.set(crc);
        let e = validate_records(&b, 1 << 20).unwrap_err();
        assert!(matches!(e, LogError::InvalidRecord { .. }), "{e:?}");
        // Both say 2 but three records are present: the walk catches it.
        BatchHeader::view_mut(&mut b)
            .unwrap()
            .last_offset_delta
            .set(1);
        let crc = compute_crc(&b);
        BatchHeader::view_mut(&mut b).unwrap().crc.set(crc);
        let e = validate_records(&b, 1 << 20).unwrap_err();
        assert!(matches!(e, LogError::CorruptMessage { .. }), "{e:?}");
    }

    #[test]
    fn compressed_batches_are_opaque() {
        let mut b = sample(3);
        // Claim gzip: the record walk is skipped, only header checks apply.
        let body_len = b.len() - HEADER_BYTES;
        b[HEADER_BYTES..].copy_from_slice(&vec![0x5A; body_len]);
        BatchHeader::view_mut(&mut b).unwrap().attributes.set(1);
        let crc = compute_crc(&b);
        BatchHeader::view_mut(&mut b).unwrap().crc.set(crc);
        let infos = validate_records(&b, 1 << 20).unwrap();
        assert_eq!(infos[0].record_max_timestamp, None);
    }

    #[test]
    fn stamp_log_append_time_recomputes_crc() {
        let mut b = sample(2);
        let info = validate_records(&b, 1 << 20).unwrap()[0];
        let original_crc = BatchHeader::view(&b).unwrap().crc.get();
        let max = stamp(&mut b, &info, 42, 3, Some(9999));
        assert_eq!(max, 9999);
        let h = BatchHeader::view(&b).unwrap();
        assert_eq!(h.base_offset.get(), 42);
        assert_eq!(h.partition_leader_epoch.get(), 3);
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp.get(), 9999);
        assert_ne!(h.crc.get(), original_crc);
        assert!(crc_ok(&b));
    }

    #[test]
    fn stamp_create_time_keeps_crc() {
        let mut b = sample(2);
        let info = validate_records(&b, 1 << 20).unwrap()[0];
        let crc_before = BatchHeader::view(&b).unwrap().crc.get();
        stamp(&mut b, &info, 1 << 40, 9, None);
        let h = BatchHeader::view(&b).unwrap();
        assert_eq!(h.crc.get(), crc_before);
        assert_eq!(h.base_offset.get(), 1 << 40);
        assert!(crc_ok(&b));
    }

    /// A batch stamped in two pieces, cut anywhere (inside the header too), comes out byte for
    /// byte as stamped whole: under LogAppendTime (CRC recomputed across the cut), under
    /// CreateTime, and with a wrong maxTimestamp fixed.
    #[test]
    fn stamp_split_matches_stamp_at_every_cut() {
        let mut wrong_max = sample(3);
        BatchHeader::view_mut(&mut wrong_max)
            .unwrap()
            .max_timestamp
            .set(1);
        let fix_crc = compute_crc(&wrong_max);
        BatchHeader::view_mut(&mut wrong_max)
            .unwrap()
            .crc
            .set(fix_crc);
        for (batch, lat) in [(sample(3), Some(777)), (sample(3), None), (wrong_max, None)] {
            let info = validate_records(&batch, 1 << 20).unwrap()[0];
            let mut whole = batch.clone();
            let max_whole = stamp(&mut whole, &info, 5, 2, lat);
            for cut in 1..batch.len() {
                let mut pieces = batch.clone();
                let (first, second) = pieces.split_at_mut(cut);
                let max_split = stamp_split(first, second, &info, 5, 2, lat);
                assert_eq!(max_split, max_whole, "cut at {cut}");
                assert_eq!(pieces, whole, "cut at {cut}");
            }
            assert!(crc_ok(&whole));
        }
    }

    /// Batches cut into pieces anywhere (headers too) are walked as over the contiguous
    /// bytes: the same batches in the same order, ending at an incomplete one.
    #[test]
    fn pieces_batch_iter_follows_batches_across_cuts() {
        let mut data = Vec::new();
        for (i, n) in [1usize, 4, 2].into_iter().enumerate() {
            let mut b = sample(n);
            BatchHeader::view_mut(&mut b)
                .unwrap()
                .base_offset
                .set(i as i64 * 10);
            data.extend_from_slice(&b);
        }
        let whole: Vec<(i64, usize)> = BatchIter::new(&data)
            .map(|(h, b)| (h.base_offset.get(), b.len()))
            .collect();
        assert_eq!(whole.len(), 3);
        let walk = |pieces: &[Bytes]| -> Vec<(i64, usize)> {
            PiecesBatchIter::new(pieces)
                .map(|(h, len)| (h.base_offset.get(), len))
                .collect()
        };
        let bytes = Bytes::from(data.clone());
        for cut in 0..=data.len() {
            let pieces = [bytes.slice(..cut), bytes.slice(cut..)];
            assert_eq!(walk(&pieces), whole, "cut at {cut}");
            let second = (cut + 37).min(data.len());
            let three = [
                bytes.slice(..cut),
                bytes.slice(cut..second),
                bytes.slice(second..),
            ];
            assert_eq!(walk(&three), whole, "cuts at {cut} and {second}");
            // Cut short: only the batches that end before the cut.
            let short = [bytes.slice(..cut)];
            let complete: Vec<_> = whole
                .iter()
                .scan(0, |end, &(o, len)| {
                    *end += len;
                    Some((*end, (o, len)))
                })
                .take_while(|&(end, _)| end <= cut)
                .map(|(_, b)| b)
                .collect();
            assert_eq!(walk(&short), complete, "short at {cut}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Arbitrary bytes never panic the validator.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = validate_records(&bytes, 1 << 20);
            let _ = find_record_by_timestamp(&bytes, 0);
            let _ = BatchIter::new(&bytes).count();
        }

        /// Any single bit flip outside the fields the CRC does not cover (baseOffset,
        /// partitionLeaderEpoch) is rejected; flips inside them are accepted unchanged.
        #[test]
        fn single_bit_flips_are_caught(n in 1usize..6, byte in 0usize..1000, bit in 0u8..8) {
            let mut b = sample(n);
            let byte = byte % b.len();
            b[byte] ^= 1 << bit;
            let uncovered = byte < 8 || (12..16).contains(&byte);
            let result = validate_records(&b, 1 << 20);
            proptest::prop_assert_eq!(result.is_ok(), uncovered, "byte {} bit {}: {:?}", byte, bit, result);
        }

        /// Concatenations of valid batches validate as a whole and each batch's position is right.
        #[test]
        fn concatenations_validate(sizes in proptest::collection::vec(1usize..8, 1..6)) {
            let mut all = Vec::new();
            let mut positions = Vec::new();
            for n in &sizes {
                positions.push(all.len());
                all.extend_from_slice(&sample(*n));
            }
            let infos = validate_records(&all, 1 << 20).unwrap();
            let got: Vec<usize> = infos.iter().map(|i| i.position).collect();
            proptest::prop_assert_eq!(got, positions);
        }
    }

    #[test]
    fn varints() {
        let mut out = Vec::new();
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            out.clear();
            write_varlong(&mut out, v);
            assert_eq!(read_varlong(&out), Some((v, out.len())));
            if let Ok(v32) = i32::try_from(v) {
                assert_eq!(read_varint(&out), Some((v32, out.len())));
            }
        }
        assert_eq!(read_varint(&[0x80, 0x80]), None, "unterminated");
    }
}
