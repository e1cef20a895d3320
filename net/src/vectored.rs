//! Responses that carry record data by reference: a frame as a list of `Bytes` parts, for
//! one vectored write.
//!
//! A Fetch response is mostly record batches that already sit in `Bytes` (the tail cache's
//! buffers or a segment read). Encoding it into one buffer would copy every batch once more;
//! here kafka-protocol's encoder writes into a [`PartsBuf`], which recognises the slices of
//! batches it was told about (by address and length) and keeps a reference to them instead of
//! copying. Everything else (headers, offsets, lengths) is encoded into small buffers between
//! them. The connection then sends the parts with `sendmsg` and an iovec per part.
//!
//! Batches still on disk come from the engine as file ranges and go out with `sendfile`; the
//! tail cache's batches may come as several pieces (one or two per append) rather than one `Bytes`.
//! The encoder still needs one `Bytes` of the right length for each: [`Placeholders`] hands
//! out placeholders, distinct slices of a static zero region (never touched, so it costs no
//! memory), and [`PartsBuf`] swaps each back for its file range or its pieces. A placeholder
//! that were ever copied would send zeros, so encoding fails unless every one was swapped.

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Encodable;
use kafka_protocol::protocol::buf::ByteBufMut;

use gregor_engine::FileRange;

use crate::handlers::{FrameShape, RequestError};

/// One piece of a response frame.
#[derive(Debug, Clone)]
pub enum Part {
    /// Bytes in memory.
    Memory(Bytes),
    /// A range of a segment file, sent with `sendfile`.
    File(FileRange),
}

impl Part {
    /// Bytes in this part.
    pub fn len(&self) -> usize {
        match self {
            Part::Memory(b) => b.len(),
            Part::File(f) => f.len,
        }
    }

    /// Whether the part is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Size of the placeholder region: the engine's largest read (8 MiB) plus room for a distinct
/// start per file range of a response.
const PLACEHOLDER_BYTES: usize = 16 << 20;

/// Zeros in `.bss`: never written, and never read unless a placeholder is copied by mistake.
static PLACEHOLDER: [u8; PLACEHOLDER_BYTES] = [0; PLACEHOLDER_BYTES];

fn is_placeholder(b: &[u8]) -> bool {
    let start = PLACEHOLDER.as_ptr() as usize;
    let at = b.as_ptr() as usize;
    at >= start && at < start + PLACEHOLDER_BYTES
}

/// The file ranges and piecewise record data of one response, each with the placeholder
/// that stands for it in the encoded message.
#[derive(Default)]
pub struct Placeholders {
    refs: Vec<(Bytes, Vec<Part>)>,
}

impl Placeholders {
    /// A `Bytes` of `len` to put in the message in place of `parts`, if a distinct one fits:
    /// placeholders start one byte apart, so each is recognised by its address.
    fn reserve(&mut self, len: usize, parts: Vec<Part>) -> Result<Bytes, Vec<Part>> {
        let start = self.refs.len();
        if start + len > PLACEHOLDER_BYTES {
            return Err(parts);
        }
        let placeholder = Bytes::from_static(&PLACEHOLDER[start..start + len]);
        self.refs.push((placeholder.clone(), parts));
        Ok(placeholder)
    }

    /// A `Bytes` to put in the message in place of `range`. If no distinct placeholder fits
    /// (a range over 8 MiB, or thousands of them), the range is read into memory instead
    /// (correct, slower).
    pub fn placeholder_for(&mut self, range: FileRange) -> std::io::Result<Bytes> {
        let len = range.len;
        match self.reserve(len, vec![Part::File(range.clone())]) {
            Ok(placeholder) => Ok(placeholder),
            Err(_) => {
                let mut buf = vec![0u8; len];
                std::os::unix::fs::FileExt::read_exact_at(&*range.file, &mut buf, range.position)?;
                Ok(Bytes::from(buf))
            }
        }
    }

    /// A `Bytes` to put in the message in place of `pieces`, which go out one after the
    /// other without being copied. Copied into one `Bytes` if no placeholder fits.
    pub fn placeholder_for_pieces(&mut self, pieces: Vec<Bytes>) -> Bytes {
        let len = pieces.iter().map(Bytes::len).sum();
        let parts = pieces.into_iter().map(Part::Memory).collect();
        match self.reserve(len, parts) {
            Ok(placeholder) => placeholder,
            Err(parts) => {
                let mut all = BytesMut::with_capacity(len);
                for part in parts {
                    if let Part::Memory(b) = part {
                        all.extend_from_slice(&b);
                    }
                }
                all.freeze()
            }
        }
    }

    /// Number of placeholders handed out.
    pub fn len(&self) -> usize {
        self.refs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }
}

/// Slices shorter than this are copied: an iovec entry and a refcount cost more than
/// copying a small batch.
pub const ZERO_COPY_MIN_BYTES: usize = 1024;

/// Most parts one frame is split into; shared slices beyond it are copied. Bounds the
/// iovec arrays of the vectored write.
pub const PARTS_MAX: usize = 4096;

/// An encode target that references known `Bytes` instead of copying them.
pub struct PartsBuf {
    /// Finished parts, in order.
    done: Vec<Part>,
    /// Bytes in `done`.
    done_len: usize,
    /// The part being written.
    current: BytesMut,
    /// Slices that may be referenced, sorted by address.
    shared: Vec<Bytes>,
    /// Placeholders (sorted by address) and the parts they stand for.
    placeholders: Vec<(Bytes, Vec<Part>)>,
    /// Placeholders swapped so far.
    swapped: usize,
    /// A file part could not be gathered back into memory.
    gather_error: Option<String>,
}

impl PartsBuf {
    /// A buffer that will reference any of `shared` written to it whole.
    pub fn new(shared: Vec<Bytes>, capacity: usize) -> Self {
        Self::with_placeholders(shared, Placeholders::default(), capacity)
    }

    /// A buffer that also swaps the `placeholders` for what they stand for.
    pub fn with_placeholders(
        mut shared: Vec<Bytes>,
        placeholders: Placeholders,
        capacity: usize,
    ) -> Self {
        shared.retain(|b| b.len() >= ZERO_COPY_MIN_BYTES && !is_placeholder(b));
        shared.sort_unstable_by_key(|b| b.as_ptr() as usize);
        let mut placeholders = placeholders.refs;
        placeholders.sort_unstable_by_key(|(p, _)| p.as_ptr() as usize);
        PartsBuf {
            done: Vec::new(),
            done_len: 0,
            current: BytesMut::with_capacity(capacity),
            shared,
            placeholders,
            swapped: 0,
            gather_error: None,
        }
    }

    /// The frame's parts (none empty).
    pub fn into_parts(mut self) -> Vec<Part> {
        if !self.current.is_empty() {
            self.done.push(Part::Memory(self.current.freeze()));
        }
        self.done
    }

    fn find_placeholder(&self, src: &[u8]) -> Option<Vec<Part>> {
        if !is_placeholder(src) {
            return None;
        }
        let addr = src.as_ptr() as usize;
        let i = self
            .placeholders
            .binary_search_by_key(&addr, |(p, _)| p.as_ptr() as usize)
            .ok()?;
        let (placeholder, parts) = &self.placeholders[i];
        (placeholder.len() == src.len()).then(|| parts.clone())
    }

    fn finish_current(&mut self) {
        if !self.current.is_empty() {
            let head = self.current.split();
            self.done_len += head.len();
            self.done.push(Part::Memory(head.freeze()));
        }
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
            match part {
                Part::Memory(b) => all.extend_from_slice(&b),
                Part::File(range) => {
                    let mut buf = vec![0u8; range.len];
                    if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(
                        &*range.file,
                        &mut buf,
                        range.position,
                    ) {
                        self.gather_error = Some(e.to_string());
                    }
                    all.extend_from_slice(&buf);
                }
            }
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
        // Placeholders are always swapped (copying one would send zeros); the part limit
        // only applies to memory references, which are equally correct copied.
        if let Some(parts) = self.find_placeholder(src) {
            self.swapped += 1;
            for part in parts {
                match part {
                    Part::Memory(b) if self.done.len() + 2 >= PARTS_MAX => {
                        self.current.extend_from_slice(&b)
                    }
                    part => {
                        self.finish_current();
                        self.done_len += part.len();
                        self.done.push(part);
                    }
                }
            }
            return;
        }
        if src.len() >= ZERO_COPY_MIN_BYTES
            && self.done.len() + 2 < PARTS_MAX
            && let Some(shared) = self.find_shared(src)
        {
            self.finish_current();
            self.done_len += shared.len();
            self.done.push(Part::Memory(shared));
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
    placeholders: Placeholders,
) -> Result<Vec<Part>, RequestError> {
    let frame = FrameShape {
        key,
        version,
        correlation_id,
        header_version,
    };
    let total = frame.size_after_prefix(body)?;
    let referenced: usize = shared
        .iter()
        .filter(|b| b.len() >= ZERO_COPY_MIN_BYTES)
        .map(|b| b.len())
        .sum();
    let placeholder_count = placeholders.len();
    let mut buf = PartsBuf::with_placeholders(
        shared,
        placeholders,
        (4 + total).saturating_sub(referenced).max(64),
    );
    frame.write(&mut buf, body, total)?;
    // The frame must be exactly as long as its prefix says, or the client desyncs.
    if buf.offset() != 4 + total {
        return Err(frame.error(&format!(
            "encoded {} bytes, computed {}",
            buf.offset(),
            4 + total
        )));
    }
    // Every placeholder must have become what it stands for: one that was copied would send
    // zeros in place of records.
    if buf.swapped != placeholder_count || buf.gather_error.is_some() {
        return Err(frame.error(&format!(
            "{} of {placeholder_count} placeholders swapped ({:?})",
            buf.swapped, buf.gather_error
        )));
    }
    Ok(buf.into_parts())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use std::io::Write;

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

    fn joined(parts: &[Part]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            match part {
                Part::Memory(b) => out.extend_from_slice(b),
                Part::File(range) => {
                    let mut buf = vec![0u8; range.len];
                    std::os::unix::fs::FileExt::read_exact_at(
                        &*range.file,
                        &mut buf,
                        range.position,
                    )
                    .unwrap();
                    out.extend_from_slice(&buf);
                }
            }
        }
        out
    }

    /// A Fetch response carrying `records` encoded as parts (referencing `records`, swapping
    /// `placeholders`), checked to join into exactly the copying encoder's frame for
    /// `expected` (the bytes the records stand for).
    fn parts_equal_to_copy(
        version: i16,
        expected: &[Bytes],
        records: &[Bytes],
        placeholders: Placeholders,
    ) -> Vec<Part> {
        let header_version = ApiKey::Fetch.response_header_version(version);
        let whole = crate::handlers::encode_frame(
            ApiKey::Fetch,
            version,
            7,
            header_version,
            &response(expected),
        )
        .unwrap();
        let parts = encode_frame_parts(
            ApiKey::Fetch,
            version,
            7,
            header_version,
            &response(records),
            records.to_vec(),
            placeholders,
        )
        .unwrap();
        assert_eq!(joined(&parts), whole.to_vec(), "version {version}");
        parts
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
        for version in 4..=16 {
            let parts = parts_equal_to_copy(version, &records, &records, Placeholders::default());
            for big in records.iter().filter(|r| r.len() >= ZERO_COPY_MIN_BYTES) {
                assert!(
                    parts.iter().any(
                        |p| matches!(p, Part::Memory(b) if b.as_ptr() == big.as_ptr() && b.len() == big.len())
                    ),
                    "a {} B batch was copied (v{version})",
                    big.len()
                );
            }
        }
    }

    /// File ranges become file parts, in place, and the frame equals the copying encoder's
    /// output for the same bytes; small ones too (placeholders are never copied).
    #[test]
    fn file_ranges_become_file_parts() {
        let mut file = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&content).unwrap();
        let file = std::sync::Arc::new(file);
        let ranges = [(100u64, 5000usize), (7, 20), (150_000, 50_000)];
        let memory = Bytes::from(vec![3u8; 4096]);
        for version in [4i16, 11, 12, 16] {
            let mut files = Placeholders::default();
            let mut records = Vec::new();
            let mut expected_records = Vec::new();
            for &(position, len) in &ranges {
                let range = FileRange {
                    file: file.clone(),
                    position,
                    len,
                    read_ahead_bytes: 0,
                };
                records.push(files.placeholder_for(range).unwrap());
                expected_records.push(Bytes::copy_from_slice(
                    &content[position as usize..position as usize + len],
                ));
            }
            records.push(memory.clone());
            expected_records.push(memory.clone());
            let parts = parts_equal_to_copy(version, &expected_records, &records, files);
            let file_parts = parts.iter().filter(|p| matches!(p, Part::File(_))).count();
            assert_eq!(file_parts, ranges.len());
        }
    }

    /// Pieces of one partition's records go out as parts of their own memory, one after the
    /// other, and the frame equals the copying encoder's output for the joined bytes; past
    /// the part limit they are copied instead, with the same frame.
    #[test]
    fn pieces_become_memory_parts() {
        let pieces: Vec<Bytes> = (0..5u8)
            .map(|i| Bytes::from(vec![i + 1; 3000 + i as usize]))
            .collect();
        let joined_pieces = Bytes::from(pieces.concat());
        let other = Bytes::from(vec![9u8; 2048]);
        for version in [4i16, 11, 12, 16] {
            let mut placeholders = Placeholders::default();
            let records = vec![
                placeholders.placeholder_for_pieces(pieces.clone()),
                other.clone(),
            ];
            let expected = [joined_pieces.clone(), other.clone()];
            let parts = parts_equal_to_copy(version, &expected, &records, placeholders);
            for piece in &pieces {
                assert!(
                    parts.iter().any(|p| matches!(p, Part::Memory(b) if b.as_ptr() == piece.as_ptr() && b.len() == piece.len())),
                    "a piece was copied (v{version})"
                );
            }
        }
        // Near the part limit: copied, same bytes.
        let mut placeholders = Placeholders::default();
        let placeholder = placeholders.placeholder_for_pieces(pieces.clone());
        let mut buf = PartsBuf::with_placeholders(vec![], placeholders, 64);
        for _ in 0..PARTS_MAX {
            buf.done.push(Part::Memory(Bytes::from_static(b"x")));
        }
        buf.done_len = PARTS_MAX;
        buf.put_slice(&placeholder);
        assert_eq!(buf.swapped, 1);
        let parts = buf.into_parts();
        assert_eq!(parts.len(), PARTS_MAX + 1);
        assert_eq!(joined(&parts[PARTS_MAX..]), joined_pieces.to_vec());
    }

    /// A placeholder that the encoder never wrote (here: not in the message at all) fails
    /// the encoding instead of going out as zeros somewhere.
    #[test]
    fn unplaced_file_range_is_an_error() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[1u8; 4096]).unwrap();
        let mut files = Placeholders::default();
        let _ = files
            .placeholder_for(FileRange {
                file: std::sync::Arc::new(file),
                position: 0,
                len: 4096,
                read_ahead_bytes: 0,
            })
            .unwrap();
        let body = response(&[Bytes::from(vec![2u8; 10])]);
        let header_version = ApiKey::Fetch.response_header_version(12);
        assert!(
            encode_frame_parts(ApiKey::Fetch, 12, 1, header_version, &body, vec![], files).is_err()
        );
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
        assert!(matches!(&parts[0], Part::Memory(b) if b.as_ptr() != twin.as_ptr()));
        assert!(matches!(&parts[1], Part::Memory(b) if b.as_ptr() == a.as_ptr()));
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
        let all = joined(&parts);
        assert_eq!(all[0], 7);
        assert_eq!(all[2049], 6);
    }
}
