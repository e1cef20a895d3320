//! Bounded in-memory cache of the most recently appended data, so consumers at the tail are
//! served without disk reads. It holds the very buffers that were written (no extra copy on
//! the append path), indexed by (segment base offset, file position).

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

struct Chunk {
    segment_base: i64,
    /// File position of `data[0]`.
    file_position: u64,
    /// The bytes of one write: whole batches, except that an append written in two parts
    /// (`zero_ahead.rs`) is cached as two chunks and a batch may run from the first into the
    /// second.
    data: Bytes,
    /// Memory the chunk keeps alive (its whole write buffer, padding included).
    held_bytes: usize,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.file_position + self.data.len() as u64
    }
}

pub(crate) struct TailCache {
    chunks: VecDeque<Chunk>,
    /// Sum of the chunks' `held_bytes` (what the memory actually costs).
    held_bytes: usize,
    max_bytes: usize,
}

impl TailCache {
    pub(crate) fn new(max_bytes: usize) -> Self {
        TailCache {
            chunks: VecDeque::new(),
            held_bytes: 0,
            max_bytes,
        }
    }

    pub(crate) fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
        self.evict();
    }

    /// Record that `data` (one write, see `Chunk::data`) now lives at `file_position` of
    /// segment `segment_base`, keeping `held_bytes` of memory alive. Appends arrive in
    /// (segment, position) order.
    pub(crate) fn insert(
        &mut self,
        segment_base: i64,
        file_position: u64,
        data: Bytes,
        held_bytes: usize,
    ) {
        if self.max_bytes == 0 || data.is_empty() {
            return;
        }
        if let Some(last) = self.chunks.back() {
            // Keep the deque sorted and contiguous; anything else means a truncation we were
            // not told about, so start over rather than serve stale bytes.
            if last.segment_base > segment_base
                || (last.segment_base == segment_base && last.end() != file_position)
            {
                self.clear();
            }
        }
        let held_bytes = held_bytes.max(data.len());
        self.held_bytes += held_bytes;
        self.chunks.push_back(Chunk {
            segment_base,
            file_position,
            data,
            held_bytes,
        });
        self.evict();
    }

    fn evict(&mut self) {
        while self.held_bytes > self.max_bytes {
            match self.chunks.pop_front() {
                Some(c) => self.held_bytes -= c.held_bytes,
                None => break,
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.held_bytes = 0;
    }

    /// Whether everything from `position` of segment `segment_base` to the end of the log is
    /// cached (the cache is contiguous up to the log end).
    pub(crate) fn holds_from(&self, segment_base: i64, position: u64) -> bool {
        self.chunks
            .front()
            .is_some_and(|c| (c.segment_base, c.file_position) <= (segment_base, position))
    }

    /// Drop chunks of segments below `segment_base` (deleted by retention).
    pub(crate) fn drop_segments_below(&mut self, segment_base: i64) {
        while self
            .chunks
            .front()
            .is_some_and(|c| c.segment_base < segment_base)
        {
            if let Some(c) = self.chunks.pop_front() {
                self.held_bytes -= c.held_bytes;
            }
        }
    }

    /// Index of the first chunk ending after `position` of segment `segment_base`.
    fn first_after(&self, segment_base: i64, position: u64) -> usize {
        self.chunks
            .partition_point(|c| (c.segment_base, c.end()) <= (segment_base, position))
    }

    /// `[position, position + len)` of a segment, if fully cached: a slice when one chunk
    /// holds it (no copy), else a copy.
    pub(crate) fn read(&self, segment_base: i64, position: u64, len: usize) -> Option<Bytes> {
        let first = self.first_after(segment_base, position);
        if let Some(c) = self.chunks.get(first)
            && c.segment_base == segment_base
            && c.file_position <= position
            && position + len as u64 <= c.end()
        {
            let from = (position - c.file_position) as usize;
            return Some(c.data.slice(from..from + len));
        }
        let mut out = BytesMut::with_capacity(0);
        let mut pos = position;
        let end = position + len as u64;
        for c in self.chunks.range(first..) {
            if pos >= end {
                break;
            }
            if c.segment_base != segment_base || c.file_position > pos {
                return None;
            }
            let from = (pos - c.file_position) as usize;
            let take = (c.data.len() - from).min((end - pos) as usize);
            if out.capacity() == 0 {
                out.reserve(len);
            }
            out.extend_from_slice(&c.data[from..from + take]);
            pos += take as u64;
        }
        (pos >= end).then(|| out.freeze())
    }

    /// Up to `max_len` bytes of segment `segment_base` from `position`, as consecutive
    /// slices of the cached chunks (no copy): the first starts at `position`, each following
    /// one where the previous ended, and a slice never spans two chunks. `None` unless
    /// `position` is cached; fewer bytes when the segment's cached data ends first.
    pub(crate) fn slices(
        &self,
        segment_base: i64,
        position: u64,
        max_len: usize,
    ) -> Option<Vec<Bytes>> {
        let first = self.first_after(segment_base, position);
        let c = self.chunks.get(first)?;
        if c.segment_base != segment_base || c.file_position > position {
            return None;
        }
        let mut out = Vec::new();
        let mut pos = position;
        let end = position + max_len as u64;
        for c in self.chunks.range(first..) {
            if pos >= end
                || c.segment_base != segment_base
                || (!out.is_empty() && c.file_position != pos)
            {
                break;
            }
            let from = (pos - c.file_position) as usize;
            let take = (c.data.len() - from).min((end - pos) as usize);
            out.push(c.data.slice(from..from + take));
            pos += take as u64;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(
        c: &mut TailCache,
        segment_base: i64,
        position: u64,
        held: &[u8],
        from: usize,
        len: usize,
    ) {
        let data = Bytes::copy_from_slice(held).slice(from..from + len);
        c.insert(segment_base, position, data, held.len());
    }

    #[test]
    fn reads_across_chunks_and_evicts() {
        let mut c = TailCache::new(19);
        insert(&mut c, 0, 0, b"xxabcd", 2, 4);
        insert(&mut c, 0, 4, b"efgh", 0, 4);
        assert_eq!(c.read(0, 1, 6).unwrap(), Bytes::from_static(b"bcdefg"));
        assert!(c.read(0, 6, 3).is_none(), "past cached end");
        assert!(c.read(1, 0, 1).is_none(), "other segment");
        insert(&mut c, 8, 0, b"0123456789", 0, 10);
        assert!(c.read(0, 0, 1).is_none(), "evicted");
        assert_eq!(c.read(8, 9, 1).unwrap(), Bytes::from_static(b"9"));
        insert(&mut c, 8, 3, b"zz", 0, 2); // non-contiguous: cache resets
        assert!(c.read(8, 0, 1).is_none());
        assert_eq!(c.read(8, 3, 2).unwrap(), Bytes::from_static(b"zz"));
    }

    /// Slices reference the chunks (same memory), follow each other, stop at `max_len`, at
    /// the segment's cached end, or at another segment.
    #[test]
    fn slices_reference_the_chunks() {
        let mut c = TailCache::new(1 << 20);
        insert(&mut c, 0, 0, b"xxabcd", 2, 4);
        insert(&mut c, 0, 4, b"efgh", 0, 4);
        insert(&mut c, 8, 0, b"ijkl", 0, 4);
        let s = c.slices(0, 1, 100).unwrap();
        assert_eq!(
            s,
            vec![Bytes::from_static(b"bcd"), Bytes::from_static(b"efgh")]
        );
        let again = c.slices(0, 1, 100).unwrap();
        assert_eq!(
            s[1].as_ptr(),
            again[1].as_ptr(),
            "copied instead of referenced"
        );
        assert_eq!(
            c.slices(0, 2, 4).unwrap(),
            vec![Bytes::from_static(b"cd"), Bytes::from_static(b"ef")]
        );
        assert_eq!(c.slices(8, 1, 2).unwrap(), vec![Bytes::from_static(b"jk")]);
        assert!(c.slices(0, 8, 1).is_none(), "past the segment's cached end");
        assert!(c.slices(4, 0, 1).is_none(), "segment not cached");
    }
}
