//! Record batches (magic v2), written and read by hand on the hot path: the builder appends each
//! record straight into one reusable buffer (no per-record allocation), and the reader walks
//! records as borrowed slices. Compression uses the codecs of `kafka-protocol`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{self as codec, Compressor, Decompressor};
pub use kafka_protocol::records::Compression;

use super::error::{ClientError, Result};

/// Size of the v2 batch header, before the first record.
pub const BATCH_HEADER_BYTES: usize = 61;
const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;

/// Parses a codec name as Kafka spells it (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
pub fn parse_compression(name: &str) -> Result<Compression> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => {
            return Err(ClientError::Invalid(format!(
                "unknown compression '{other}' (none, gzip, snappy, lz4, zstd)"
            )));
        }
    })
}

fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}
fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}
fn varint_len(v: i32) -> usize {
    varlong_len(zigzag32(v) as u64 as i64 as u64)
}
fn varlong_len_signed(v: i64) -> usize {
    varlong_len(zigzag64(v))
}
fn varlong_len(mut z: u64) -> usize {
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}
fn put_uvarint(buf: &mut BytesMut, mut z: u64) {
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}
fn put_varint(buf: &mut BytesMut, v: i32) {
    put_uvarint(buf, zigzag32(v) as u64);
}
fn put_varlong(buf: &mut BytesMut, v: i64) {
    put_uvarint(buf, zigzag64(v));
}

/// A record header as borrowed slices.
pub type HeaderRef<'a> = (&'a str, Option<&'a [u8]>);

/// Accumulates records for one partition into a v2 batch.
#[derive(Debug)]
pub struct BatchBuilder {
    /// Room for the batch header (filled in by `seal`), then the records. Uncompressed batches
    /// are sealed in place, so each value is copied once, by `append`.
    records: BytesMut,
    capacity_bytes: usize,
    record_count: i32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
    compression: Compression,
}

impl BatchBuilder {
    /// An empty builder; `capacity_bytes` is the expected batch size.
    pub fn new(compression: Compression, capacity_bytes: usize) -> Self {
        Self {
            records: Self::fresh_buffer(capacity_bytes),
            capacity_bytes,
            record_count: 0,
            base_timestamp_ms: 0,
            max_timestamp_ms: 0,
            compression,
        }
    }

    fn fresh_buffer(capacity_bytes: usize) -> BytesMut {
        let mut b = BytesMut::with_capacity(capacity_bytes.max(BATCH_HEADER_BYTES));
        b.put_bytes(0, BATCH_HEADER_BYTES);
        b
    }

    /// Number of records appended since the last seal.
    pub fn record_count(&self) -> i32 {
        self.record_count
    }

    /// Uncompressed size in bytes of the batch if sealed now.
    pub fn size_bytes(&self) -> usize {
        self.records.len()
    }

    /// True if no record was appended since the last seal.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Encoded size of one record (including its length prefix), to decide whether it still fits.
    pub fn record_size(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
    ) -> usize {
        let body = Self::body_size(0, 0, key, value, headers);
        varint_len(body as i32) + body
    }

    fn body_size(
        timestamp_delta: i64,
        offset_delta: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
    ) -> usize {
        let bytes_field = |b: Option<&[u8]>| match b {
            Some(b) => varint_len(b.len() as i32) + b.len(),
            None => 1,
        };
        let mut n = 1 + varlong_len_signed(timestamp_delta) + varint_len(offset_delta);
        n += bytes_field(key) + bytes_field(value);
        n += varint_len(headers.len() as i32);
        for (k, v) in headers {
            n += varint_len(k.len() as i32) + k.len() + bytes_field(*v);
        }
        n
    }

    /// Appends one record.
    pub fn append(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
    ) {
        if self.record_count == 0 {
            self.base_timestamp_ms = timestamp_ms;
            self.max_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let ts_delta = timestamp_ms - self.base_timestamp_ms;
        let offset_delta = self.record_count;
        let body = Self::body_size(ts_delta, offset_delta, key, value, headers);
        let buf = &mut self.records;
        buf.reserve(body + 5);
        put_varint(buf, body as i32);
        buf.put_i8(0);
        put_varlong(buf, ts_delta);
        put_varint(buf, offset_delta);
        let put_bytes = |buf: &mut BytesMut, b: Option<&[u8]>| match b {
            Some(b) => {
                put_varint(buf, b.len() as i32);
                buf.put_slice(b);
            }
            None => put_varint(buf, -1),
        };
        put_bytes(buf, key);
        put_bytes(buf, value);
        put_varint(buf, headers.len() as i32);
        for (k, v) in headers {
            put_varint(buf, k.len() as i32);
            buf.put_slice(k.as_bytes());
            put_bytes(buf, *v);
        }
        self.record_count += 1;
    }

    /// Writes the finished batch (header, possibly compressed records, CRC) and resets the
    /// builder for reuse.
    pub fn seal(&mut self) -> Result<Bytes> {
        let mut out = if self.compression == Compression::None {
            if self.records.len() * 2 >= self.capacity_bytes {
                // A full batch (the flat-out case) is sealed in place: the records are already
                // behind the header's room. The builder starts over in a fresh buffer.
                std::mem::replace(&mut self.records, Self::fresh_buffer(self.capacity_bytes))
            } else {
                // A small batch (sealed by linger) is copied out, which costs little, so its
                // bytes do not pin a whole `capacity_bytes` buffer until acknowledged.
                let out = BytesMut::from(&self.records[..]);
                self.records.truncate(BATCH_HEADER_BYTES);
                out
            }
        } else {
            let records = &self.records[BATCH_HEADER_BYTES..];
            let mut out = BytesMut::with_capacity(self.records.len());
            out.put_bytes(0, BATCH_HEADER_BYTES);
            let fill = |b: &mut BytesMut| -> anyhow::Result<()> {
                b.put_slice(records);
                Ok(())
            };
            match self.compression {
                Compression::Gzip => codec::Gzip::compress(&mut out, fill),
                Compression::Snappy => codec::Snappy::compress(&mut out, fill),
                Compression::Lz4 => lz4_frame(&mut out, records),
                Compression::Zstd => zstd_frame(&mut out, records),
                Compression::None => Ok(()),
            }
            .map_err(|e| ClientError::Protocol(format!("compress: {e}")))?;
            self.records.truncate(BATCH_HEADER_BYTES);
            out
        };
        let batch_len = (out.len() - 12) as i32;
        let mut header = &mut out[..BATCH_HEADER_BYTES];
        header.put_i64(0); // base offset: assigned by the broker
        header.put_i32(batch_len);
        header.put_i32(-1); // partition leader epoch
        header.put_i8(2); // magic
        header.put_u32(0); // crc, filled below
        header.put_i16(self.compression as i16);
        header.put_i32(self.record_count - 1); // last offset delta
        header.put_i64(self.base_timestamp_ms);
        header.put_i64(self.max_timestamp_ms);
        header.put_i64(-1); // producer id
        header.put_i16(-1); // producer epoch
        header.put_i32(-1); // base sequence
        header.put_i32(self.record_count);
        debug_assert!(header.is_empty());
        let crc = batch_crc(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        self.record_count = 0;
        Ok(out.freeze())
    }
}

/// CRC-32C, the record batch checksum, computed on every batch sealed and checked on every
/// batch read: crc-fast (carry-less multiply folding, AVX-512 where present) is about twice
/// the crc32c crate's speed, and the load tool shares the machine with the broker it measures.
fn batch_crc(bytes: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(bytes)
}

/// Zstd level for batches (Kafka's and librdkafka's default).
const ZSTD_LEVEL: i32 = 3;

thread_local! {
    /// One zstd context per thread, reused: creating a context per batch costs more than
    /// compressing a 16 KB batch.
    static ZSTD: std::cell::RefCell<Option<(zstd::bulk::Compressor<'static>, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
}

fn zstd_frame(out: &mut BytesMut, records: &[u8]) -> anyhow::Result<()> {
    ZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some((zstd::bulk::Compressor::new(ZSTD_LEVEL)?, Vec::new()));
        }
        let Some((c, scratch)) = slot.as_mut() else {
            anyhow::bail!("zstd context missing");
        };
        scratch.clear();
        scratch.reserve(zstd::zstd_safe::compress_bound(records.len()));
        c.compress_to_buffer(records, scratch)?;
        out.put_slice(scratch);
        Ok(())
    })
}

/// LZ4 frame at the fast level, as librdkafka writes by default (kafka-protocol's own codec
/// uses the much slower high-compression mode, which made the load tool the bottleneck).
fn lz4_frame(out: &mut BytesMut, records: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut enc = lz4::EncoderBuilder::new()
        .level(0)
        .block_mode(lz4::BlockMode::Independent)
        .build(out.writer())?;
    enc.write_all(records)?;
    let (_, r) = enc.finish();
    r?;
    Ok(())
}

/// One decoded batch header with its (decompressed) record bytes.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp_ms: i64,
    /// Number of records the header claims.
    pub record_count: i32,
    /// Compression codec of the batch.
    pub compression: Compression,
    /// True for transaction markers, which consumers must skip.
    pub is_control: bool,
    /// True if part of a transaction.
    pub is_transactional: bool,
    /// Size of the batch on the wire, header included.
    pub wire_bytes: usize,
    records: Bytes,
}

impl Batch {
    /// Offset after the last record of this batch.
    pub fn next_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64 + 1
    }

    /// Iterates over the records.
    pub fn records(&self) -> RecordIter<'_> {
        RecordIter {
            buf: &self.records,
            batch: self,
            remaining: self.record_count.max(0),
        }
    }
}

/// One record, borrowed from its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Absolute offset.
    pub offset: i64,
    /// Timestamp in ms since the epoch.
    pub timestamp_ms: i64,
    /// Key, if any.
    pub key: Option<&'a [u8]>,
    /// Value, if any.
    pub value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: i32,
}

impl<'a> RecordRef<'a> {
    /// Iterates over the headers.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            buf: self.headers,
            remaining: self.header_count,
        }
    }
}

/// Iterator over the headers of a record.
pub struct HeaderIter<'a> {
    buf: &'a [u8],
    remaining: i32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Result<(&'a [u8], Option<&'a [u8]>)>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            return None;
        }
        self.remaining -= 1;
        let r = (|| {
            let k = get_nullable(&mut self.buf)
                .ok_or_else(|| corrupt("bad header key"))?
                .ok_or_else(|| corrupt("null header key"))?;
            let v = get_nullable(&mut self.buf).ok_or_else(|| corrupt("bad header value"))?;
            Ok((k, v))
        })();
        if r.is_err() {
            self.remaining = 0;
        }
        Some(r)
    }
}

fn corrupt(what: &str) -> ClientError {
    ClientError::Protocol(format!("corrupt record batch: {what}"))
}

// The readers below return `Option` (None: truncated or malformed) rather than `Result`: the
// error type is large, and a lean return keeps the per-record path small. Callers name the
// field in the error.

#[inline]
fn get_uvarint(buf: &mut &[u8]) -> Option<u64> {
    // Most fields of a record fit one byte: no loop for them.
    let (&b, rest) = buf.split_first()?;
    if b < 0x80 {
        *buf = rest;
        return Some(b as u64);
    }
    get_uvarint_long(buf)
}

fn get_uvarint_long(buf: &mut &[u8]) -> Option<u64> {
    let mut z: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        z |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            return Some(z);
        }
    }
    None
}
#[inline]
fn get_varlong(buf: &mut &[u8]) -> Option<i64> {
    let z = get_uvarint(buf)?;
    Some(((z >> 1) as i64) ^ -((z & 1) as i64))
}
#[inline]
fn get_varint(buf: &mut &[u8]) -> Option<i32> {
    i32::try_from(get_varlong(buf)?).ok()
}
#[inline]
fn get_slice<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (a, b) = buf.split_at(n);
    *buf = b;
    Some(a)
}
/// A nullable byte field: `Some(None)` for null, `None` if malformed.
#[inline]
fn get_nullable<'a>(buf: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let len = get_varint(buf)?;
    if len < 0 {
        Some(None)
    } else {
        get_slice(buf, len as usize).map(Some)
    }
}

/// Iterator over the records of a batch.
pub struct RecordIter<'a> {
    buf: &'a [u8],
    batch: &'a Batch,
    remaining: i32,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordRef<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            return None;
        }
        self.remaining -= 1;
        let r = self.parse_one();
        if r.is_err() {
            self.remaining = 0;
        }
        Some(r)
    }
}

impl<'a> RecordIter<'a> {
    fn parse_one(&mut self) -> Result<RecordRef<'a>> {
        let len = get_varint(&mut self.buf).ok_or_else(|| corrupt("bad record length"))?;
        if len < 0 {
            return Err(corrupt("negative record length"));
        }
        let mut rec =
            get_slice(&mut self.buf, len as usize).ok_or_else(|| corrupt("truncated record"))?;
        let fields = (|| {
            let _attributes = get_slice(&mut rec, 1)?;
            let ts_delta = get_varlong(&mut rec)?;
            let offset_delta = get_varint(&mut rec)?;
            let key = get_nullable(&mut rec)?;
            let value = get_nullable(&mut rec)?;
            let header_count = get_varint(&mut rec)?;
            Some((ts_delta, offset_delta, key, value, header_count))
        })();
        let (ts_delta, offset_delta, key, value, header_count) =
            fields.ok_or_else(|| corrupt("bad record fields"))?;
        Ok(RecordRef {
            offset: self.batch.base_offset + offset_delta as i64,
            timestamp_ms: self.batch.base_timestamp_ms.wrapping_add(ts_delta),
            key,
            value,
            headers: rec,
            header_count,
        })
    }
}

/// Length of the complete batch at the start of `data`: `None` if there is none (fewer bytes
/// than a batch needs: a partial trailing batch, which a broker may send), an error if the
/// header is malformed or not record format v2.
fn next_batch_bytes(data: &[u8]) -> Result<Option<usize>> {
    if data.len() < 17 {
        return Ok(None);
    }
    let batch_len = i32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    if batch_len < 0 {
        return Err(corrupt("negative batch length"));
    }
    let total = 12 + batch_len as usize;
    if data.len() < total {
        return Ok(None);
    }
    let magic = data[16] as i8;
    if magic != 2 {
        return Err(ClientError::Protocol(format!(
            "record format v{magic} is not supported (only v2)"
        )));
    }
    if total < BATCH_HEADER_BYTES {
        return Err(corrupt("batch shorter than its header"));
    }
    Ok(Some(total))
}

/// The offset to fetch next after `data` (a Fetch response's `records` field for a fetch at
/// `from`): past the last complete batch, or `from` if there is none. Reads only batch headers
/// (no CRC, no records), so a consumer can send its next Fetch before it parses the batches. It
/// stops at a partial trailing batch as [`parse_batches`] does, so the two agree on which batches
/// a response holds.
pub fn next_fetch_offset(data: &[u8], from: i64) -> Result<i64> {
    let mut next = from;
    let mut rest = data;
    while let Some(total) = next_batch_bytes(rest)? {
        let (b, tail) = rest.split_at(total);
        let base_offset = i64::from_be_bytes(b[0..8].try_into().unwrap_or_default());
        let last_offset_delta = i32::from_be_bytes(b[23..27].try_into().unwrap_or_default());
        next = next.max(base_offset.saturating_add(last_offset_delta as i64 + 1));
        rest = tail;
    }
    Ok(next)
}

/// Splits a `records` field (as in a Fetch response) into batches. A truncated batch at the end
/// (a broker may cut a fetch response mid-batch) is ignored, as Kafka clients do. CRCs are
/// checked; compressed batches are decompressed.
pub fn parse_batches(mut data: Bytes) -> Result<Vec<Batch>> {
    let mut out = Vec::new();
    while let Some(total) = next_batch_bytes(&data)? {
        let mut b = data.split_to(total);
        let crc_stored = u32::from_be_bytes([b[17], b[18], b[19], b[20]]);
        if batch_crc(&b[21..]) != crc_stored {
            return Err(corrupt("CRC mismatch"));
        }
        let base_offset = b.get_i64();
        b.advance(4 + 4 + 1 + 4);
        let attributes = b.get_i16();
        let last_offset_delta = b.get_i32();
        let base_timestamp_ms = b.get_i64();
        b.advance(8 + 8 + 2 + 4);
        let record_count = b.get_i32();
        let compression = match attributes & ATTR_COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            c => return Err(corrupt(&format!("unknown compression codec {c}"))),
        };
        let take_all = |b: &mut Bytes| -> anyhow::Result<Bytes> { Ok(b.split_to(b.len())) };
        let records = match compression {
            Compression::None => Ok(b),
            Compression::Gzip => codec::Gzip::decompress(&mut b, take_all),
            Compression::Snappy => codec::Snappy::decompress(&mut b, take_all),
            Compression::Lz4 => codec::Lz4::decompress(&mut b, take_all),
            Compression::Zstd => codec::Zstd::decompress(&mut b, take_all),
        }
        .map_err(|e| corrupt(&format!("decompress {compression:?}: {e}")))?;
        out.push(Batch {
            base_offset,
            last_offset_delta,
            base_timestamp_ms,
            record_count,
            compression,
            is_control: attributes & ATTR_CONTROL != 0,
            is_transactional: attributes & ATTR_TRANSACTIONAL != 0,
            wire_bytes: total,
            records,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn build(c: Compression) -> Bytes {
        let mut b = BatchBuilder::new(c, 1024);
        b.append(1000, Some(b"k1"), Some(b"v1"), &[("h", Some(b"x"))]);
        b.append(999, None, Some(&[7u8; 300]), &[]);
        b.append(1005, Some(b""), None, &[("a", None), ("bb", Some(b""))]);
        assert_eq!(b.record_count(), 3);
        b.seal().unwrap()
    }

    #[test]
    fn builder_output_decodes_with_kafka_protocol_for_every_codec() {
        for c in CODECS {
            let mut bytes = build(c);
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            assert_eq!(set.compression, c);
            let r = &set.records;
            assert_eq!(r.len(), 3);
            assert_eq!(r[0].key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(r[0].value.as_deref(), Some(&b"v1"[..]));
            assert_eq!(r[0].timestamp, 1000);
            assert_eq!(r[1].timestamp, 999);
            assert_eq!(r[1].key, None);
            assert_eq!(r[1].value.as_ref().unwrap().len(), 300);
            assert_eq!(r[2].offset, 2);
            assert_eq!(r[2].value, None);
            assert_eq!(r[2].headers.len(), 2);
            assert_eq!(
                r[2].headers.get(&StrBytes::from_static_str("a")),
                Some(&None)
            );
        }
    }

    #[test]
    fn builder_is_reusable_after_seal() {
        let mut b = BatchBuilder::new(Compression::None, 64);
        b.append(1, None, Some(b"a"), &[]);
        let first = b.seal().unwrap();
        assert!(b.is_empty());
        b.append(2, None, Some(b"a"), &[]);
        let second = b.seal().unwrap();
        assert_eq!(first.len(), second.len());
    }

    #[test]
    fn parser_reads_kafka_protocol_batches_for_every_codec() {
        for c in CODECS {
            let mut headers = IndexMap::new();
            headers.insert(
                StrBytes::from_static_str("hk"),
                Some(Bytes::from_static(b"hv")),
            );
            let recs: Vec<Record> = (0..5)
                .map(|i| Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: 100 + i,
                    // kafka-protocol starts a new batch unless offset - sequence is constant.
                    sequence: (100 + i) as i32,
                    timestamp: 5000 + i,
                    key: Some(Bytes::from(format!("key{i}"))),
                    value: Some(Bytes::from(format!("value{i}"))),
                    headers: headers.clone(),
                })
                .collect();
            let mut buf = BytesMut::new();
            let opts = RecordEncodeOptions {
                version: 2,
                compression: c,
            };
            RecordBatchEncoder::encode(&mut buf, &recs, &opts).unwrap();
            let batches = parse_batches(buf.freeze()).unwrap();
            assert_eq!(batches.len(), 1);
            let b = &batches[0];
            assert_eq!(b.base_offset, 100);
            assert_eq!(b.next_offset(), 105);
            let got: Vec<_> = b.records().map(|r| r.unwrap()).collect();
            assert_eq!(got.len(), 5);
            for (i, r) in got.iter().enumerate() {
                assert_eq!(r.offset, 100 + i as i64);
                assert_eq!(r.timestamp_ms, 5000 + i as i64);
                assert_eq!(r.key.unwrap(), format!("key{i}").as_bytes());
                assert_eq!(r.value.unwrap(), format!("value{i}").as_bytes());
                let h: Vec<_> = r.headers().map(|h| h.unwrap()).collect();
                assert_eq!(h, vec![(&b"hk"[..], Some(&b"hv"[..]))]);
            }
        }
    }

    #[test]
    fn header_walk_agrees_with_parser_on_the_next_offset() {
        let mut data = BytesMut::new();
        for (base, n) in [(10i64, 3usize), (13, 1), (14, 5)] {
            let mut b = BatchBuilder::new(Compression::None, 256);
            for _ in 0..n {
                b.append(0, None, Some(b"v"), &[]);
            }
            let mut one = BytesMut::from(&b.seal().unwrap()[..]);
            one[0..8].copy_from_slice(&base.to_be_bytes());
            data.put_slice(&one);
        }
        let full = data.clone().freeze();
        assert_eq!(next_fetch_offset(&full, 11).unwrap(), 19);
        let parsed = parse_batches(full.clone()).unwrap();
        assert_eq!(parsed.last().unwrap().next_offset(), 19);
        // Cut inside the last batch: both stop after the second batch.
        let cut = full.slice(..full.len() - 3);
        assert_eq!(next_fetch_offset(&cut, 11).unwrap(), 14);
        assert_eq!(parse_batches(cut).unwrap().len(), 2);
        // Nothing complete: stay at the fetch offset.
        assert_eq!(next_fetch_offset(&full[..40], 11).unwrap(), 11);
        assert_eq!(next_fetch_offset(&[], 7).unwrap(), 7);
    }

    #[test]
    fn parser_ignores_partial_trailing_batch_and_rejects_bad_crc() {
        let one = build(Compression::None);
        let mut two = BytesMut::new();
        two.put_slice(&one);
        two.put_slice(&one[..one.len() - 7]);
        assert_eq!(parse_batches(two.freeze()).unwrap().len(), 1);

        let mut bad = BytesMut::from(&one[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(parse_batches(bad.freeze()).is_err());
    }

    /// Re-seals a batch edited by `f` (fixing its CRC), so the record reader sees the damage.
    fn edited(f: impl FnOnce(&mut BytesMut)) -> Batch {
        let mut b = BatchBuilder::new(Compression::None, 256);
        b.append(0, Some(b"k"), Some(b"first"), &[]);
        b.append(0, None, Some(b"second"), &[]);
        let mut raw = BytesMut::from(&b.seal().unwrap()[..]);
        f(&mut raw);
        let crc = crc32c::crc32c(&raw[21..]);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        parse_batches(raw.freeze()).unwrap().remove(0)
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        // The header claims a third record that is not there.
        let b = edited(|raw| raw[57..61].copy_from_slice(&3i32.to_be_bytes()));
        let got: Vec<_> = b.records().collect();
        assert_eq!(got.len(), 3);
        assert!(got[0].is_ok() && got[1].is_ok());
        assert!(got[2].is_err());
        // The first record's key length (after length, attributes, ts and offset deltas) says
        // 63 bytes: past the end of the record.
        let b = edited(|raw| raw[BATCH_HEADER_BYTES + 4] = 126);
        let first = b.records().next().unwrap();
        assert!(first.is_err(), "{first:?}");
        // A varint that never ends.
        let b = edited(|raw| {
            let n = raw.len();
            raw[BATCH_HEADER_BYTES..n].fill(0xff);
        });
        assert!(b.records().next().unwrap().is_err());
    }

    #[test]
    fn record_size_matches_encoding() {
        let hs: [HeaderRef<'_>; 1] = [("h", Some(b"xyz"))];
        let want = BatchBuilder::record_size(Some(b"key"), Some(&[0u8; 1000]), &hs);
        let mut b = BatchBuilder::new(Compression::None, 2048);
        b.append(0, Some(b"key"), Some(&[0u8; 1000]), &hs);
        assert_eq!(b.size_bytes() - BATCH_HEADER_BYTES, want);
    }

    #[test]
    fn small_batches_do_not_pin_the_builder_capacity() {
        let cap = 64 << 10;
        let mut b = BatchBuilder::new(Compression::None, cap);
        b.append(0, None, Some(&[1u8; 100]), &[]);
        let small = b.seal().unwrap();
        // A sealed small batch owns about its own size, not the builder's buffer.
        let owned = small.try_into_mut().unwrap();
        assert!(owned.capacity() < 1024, "{}", owned.capacity());
        // A full batch is handed over in place: same size as built, intact.
        while b.size_bytes() < cap {
            b.append(0, None, Some(&[2u8; 1000]), &[]);
        }
        let want = b.size_bytes();
        let full = b.seal().unwrap();
        assert_eq!(full.len(), want);
        assert!(parse_batches(full).unwrap()[0].records().all(|r| r.is_ok()));
    }

    #[test]
    fn sealed_size_matches_size_bytes_and_batches_stay_intact_after_reuse() {
        for c in CODECS {
            let mut b = BatchBuilder::new(c, 16);
            let mut sealed = Vec::new();
            for round in 0..3u8 {
                for i in 0..4u8 {
                    b.append(i as i64, None, Some(&[round * 10 + i; 40]), &[]);
                }
                if c == Compression::None {
                    let want = b.size_bytes();
                    let got = b.seal().unwrap();
                    assert_eq!(got.len(), want);
                    sealed.push(got);
                } else {
                    sealed.push(b.seal().unwrap());
                }
            }
            // Earlier batches must not be changed by later appends to the reused builder.
            for (round, batch) in sealed.into_iter().enumerate() {
                let parsed = parse_batches(batch).unwrap();
                assert_eq!(parsed.len(), 1);
                let vals: Vec<u8> = parsed[0]
                    .records()
                    .map(|r| r.unwrap().value.unwrap()[0])
                    .collect();
                let r = round as u8 * 10;
                assert_eq!(vals, vec![r, r + 1, r + 2, r + 3], "{c:?}");
            }
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// Not a test: `cargo test --release -p gregor-bench -- --ignored record_parse_speed
    /// --nocapture` prints the time per record of walking 1 KB records.
    #[test]
    #[ignore]
    fn record_parse_speed() {
        let mut b = BatchBuilder::new(Compression::None, 300 << 10);
        for i in 0..256 {
            b.append(i, None, Some(&[1u8; 1024]), &[]);
        }
        let batch = parse_batches(b.seal().unwrap()).unwrap().remove(0);
        let rounds = 20_000;
        let t = std::time::Instant::now();
        let mut n = 0u64;
        for _ in 0..rounds {
            for r in batch.records() {
                let r = r.unwrap();
                n += r.value.map_or(0, |v| v.len() as u64) + r.offset as u64;
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / (rounds * 256) as f64;
        println!("{ns:.2} ns/record ({n})");
    }

    /// Not a test: prints the time per `append` + `seal` of 100 B and 1 KB values.
    #[test]
    #[ignore]
    fn append_speed() {
        for size in [100usize, 1024] {
            let value = vec![3u8; size];
            let mut b = BatchBuilder::new(Compression::None, 256 << 10);
            let records = 2_000_000u64;
            let t = std::time::Instant::now();
            let mut bytes = 0;
            for i in 0..records {
                b.append(1_000 + (i as i64 & 7), None, Some(&value), &[]);
                if b.size_bytes() >= 256 << 10 {
                    bytes += b.seal().unwrap().len();
                }
            }
            let ns = t.elapsed().as_nanos() as f64 / records as f64;
            println!("{size} B: {ns:.2} ns/record ({bytes})");
        }
    }
}
