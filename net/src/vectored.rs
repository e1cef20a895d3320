//! Responses that carry record data by reference: a frame as a list of `Bytes` parts, for
//! one vectored write.
//!
//! A Fetch response is mostly record batches that already sit in `Bytes` (the tail cache's
//! buffers or a segment read). Encoding it into one buffer would copy every batch once more;
//! here kafka-protocol's encoder writes into a [`PartsBuf`], which recognises the slices of
//! batches it was told about (by address and length) and keeps a reference to them instead of
//! copying. Everything else (headers, offsets, lengths) is encoded into small buffers between
//! them. The connection then sends the parts with `sendmsg` and an iovec per part.

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use kafka_protocol::protocol::buf::ByteBufMut;

use crate::handlers::RequestError;

/// Slices shorter than this are copied: an iovec entry and a refcount cost more than
/// copying a small batch.
pub const ZERO_COPY_MIN_BYTES: usize = 1024;

/// Most parts one frame is split into; shared slices beyond it are copied. Bounds the
/// iovec arrays of the vectored write.
pub const PARTS_MAX: usize = 4096;

/// An encode target that references known `Bytes` instead of copying them.
pub struct PartsBuf {
    /// Finished parts, in order.
    done: Vec<Bytes>,
    /// Bytes in `done`.
    done_len: usize,
    /// The part being written.
    current: BytesMut,
    /// Slices that may be referenced, sorted by address.
    shared: Vec<Bytes>,
}

impl PartsBuf {
    /// A buffer that will reference any of `shared` written to it whole.
    pub fn new(mut shared: Vec<Bytes>, capacity: usize) -> Self {
        shared.retain(|b| b.len() >= ZERO_COPY_MIN_BYTES);
        shared.sort_unstable_by_key(|b| b.as_ptr() as usize);
        PartsBuf {
            done: Vec::new(),
            done_len: 0,
            current: BytesMut::with_capacity(capacity),
            shared,
        }
    }

    /// The frame's parts (none empty).
    pub fn into_parts(mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            self.done.push(self.current.freeze());
        }
        self.done
    }

    fn find_shared(&self, src: &[u8]) -> Option<Bytes> {
        let addr = src.as_ptr() as usize;
        let i = self
            .shared
            .binary_search_by_key(&addr, |b| b.as_ptr() as usize)
            .ok()?;
        let candidate = &self.shared[i];
        (candidate.len() == src.len()).then(|| candidate.clone())
    }

    /// Gathers every part back into `current` (only if the encoder seeks back into a finished
    /// part, which kafka-protocol's message encoders do not do; correct, just not zero-copy).
    fn gather(&mut self) {
        if self.done.is_empty() {
            return;
        }
        let mut all = BytesMut::with_capacity(self.done_len + self.current.len());
        for part in self.done.drain(..) {
            all.extend_from_slice(&part);
        }
        all.extend_from_slice(&self.current);
        self.current = all;
        self.done_len = 0;
    }
}

// SAFETY: every method forwards to the `BytesMut` being written, which upholds `BufMut`'s
// contract; `put_slice` only adds whole parts, which never exposes uninitialised memory.
unsafe impl BufMut for PartsBuf {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller guarantees `cnt` bytes of `chunk_mut` were initialised, and
        // `chunk_mut` is `current`'s.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= ZERO_COPY_MIN_BYTES
            && self.done.len() + 2 < PARTS_MAX
            && let Some(shared) = self.find_shared(src)
        {
            if !self.current.is_empty() {
                let head = self.current.split();
                self.done_len += head.len();
                self.done.push(head.freeze());
            }
            self.done_len += shared.len();
            self.done.push(shared);
            return;
        }
        self.current.extend_from_slice(src);
    }
}

impl ByteBufMut for PartsBuf {
    fn offset(&self) -> usize {
        self.done_len + self.current.len()
    }

    fn seek(&mut self, offset: usize) {
        if offset < self.done_len {
            self.gather();
        }
        self.current.resize(offset - self.done_len, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        if r.start < self.done_len {
            self.gather();
        }
        let base = self.done_len;
        &mut self.current[r.start - base..r.end - base]
    }
}

/// Encodes header + body into a length-prefixed frame whose parts reference `shared` slices
/// instead of copying them.
pub fn encode_frame_parts<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    header_version: i16,
    body: &R,
    shared: Vec<Bytes>,
) -> Result<Vec<Bytes>, RequestError> {
    let err = |e: &dyn std::fmt::Display| RequestError::Encode {
        key,
        version,
        message: e.to_string(),
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_bytes = header.compute_size(header_version).map_err(|e| err(&e))?;
    let body_bytes = body.compute_size(version).map_err(|e| err(&e))?;
    let total = header_bytes + body_bytes;
    let referenced: usize = shared
        .iter()
        .filter(|b| b.len() >= ZERO_COPY_MIN_BYTES)
        .map(|b| b.len())
        .sum();
    let mut buf = PartsBuf::new(shared, (4 + total).saturating_sub(referenced).max(64));
    buf.put_i32(total as i32);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| err(&e))?;
    body.encode(&mut buf, version).map_err(|e| err(&e))?;
    // The frame must be exactly as long as its prefix says, or the client desyncs.
    if buf.offset() != 4 + total {
        return Err(err(&format!(
            "encoded {} bytes, computed {}",
            buf.offset(),
            4 + total
        )));
    }
    Ok(buf.into_parts())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};

    fn response(records: &[Bytes]) -> FetchResponse {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_high_watermark(1000 + i as i64)
                    .with_records(Some(r.clone()))
            })
            .collect();
        FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(crate::handlers::topic_name("t"))
                .with_partitions(partitions),
        ])
    }

    /// The parts concatenate to exactly what the copying encoder produces, in every Fetch
    /// version we serve, and the large batches are referenced, not copied.
    #[test]
    fn parts_match_the_copying_encoder() {
        let records: Vec<Bytes> = [0usize, 10, 5000, 1023, 1024, 70_000]
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8 + 1; n]))
            .collect();
        let body = response(&records);
        for version in 4..=16 {
            let header_version = ApiKey::Fetch.response_header_version(version);
            let whole =
                crate::handlers::encode_frame(ApiKey::Fetch, version, 7, header_version, &body)
                    .unwrap();
            let parts = encode_frame_parts(
                ApiKey::Fetch,
                version,
                7,
                header_version,
                &body,
                records.clone(),
            )
            .unwrap();
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(joined, whole.to_vec(), "version {version}");
            for big in records.iter().filter(|r| r.len() >= ZERO_COPY_MIN_BYTES) {
                assert!(
                    parts
                        .iter()
                        .any(|p| p.as_ptr() == big.as_ptr() && p.len() == big.len()),
                    "a {} B batch was copied (v{version})",
                    big.len()
                );
            }
        }
    }

    /// A slice equal in content but not the same memory is copied, not referenced.
    #[test]
    fn only_the_same_memory_is_referenced() {
        let a = Bytes::from(vec![9u8; 4096]);
        let twin = Bytes::from(vec![9u8; 4096]);
        let mut buf = PartsBuf::new(vec![a.clone()], 64);
        buf.put_slice(&twin);
        buf.put_slice(&a);
        let parts = buf.into_parts();
        assert_eq!(parts.len(), 2);
        assert_ne!(parts[0].as_ptr(), twin.as_ptr());
        assert_eq!(parts[1].as_ptr(), a.as_ptr());
    }

    /// Seeking back into a finished part gathers the parts (correct, if not zero-copy).
    #[test]
    fn seeking_back_gathers() {
        let a = Bytes::from(vec![1u8; 2048]);
        let mut buf = PartsBuf::new(vec![a.clone()], 64);
        buf.put_u8(5);
        buf.put_slice(&a);
        buf.put_u8(6);
        buf.range(0..1)[0] = 7;
        let parts = buf.into_parts();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].len(), 2050);
        assert_eq!(parts[0][0], 7);
        assert_eq!(parts[0][2049], 6);
    }
}
