//! Bounded in-memory cache of the most recently appended data, so consumers at the tail are
//! served without disk reads. It holds the very buffers that were written (no extra copy on
//! the append path), indexed by (segment base offset, file position).

use crate::io::SharedBuf;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

struct Chunk {
    segment_base: i64,
    /// File position of `buf[data_start]`.
    file_position: u64,
    buf: SharedBuf,
    data_start: usize,
    data_len: usize,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.file_position + self.data_len as u64
    }
}

pub(crate) struct TailCache {
    chunks: VecDeque<Chunk>,
    /// Sum of the full buffer sizes held (what the memory actually costs).
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

    /// Record that `buf[data_start..data_start + data_len]` now lives at `file_position` of
    /// segment `segment_base`. Appends arrive in (segment, position) order.
    pub(crate) fn insert(
        &mut self,
        segment_base: i64,
        file_position: u64,
        buf: SharedBuf,
        data_start: usize,
        data_len: usize,
    ) {
        if self.max_bytes == 0 || data_len == 0 {
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
        self.held_bytes += buf.as_slice().len();
        self.chunks.push_back(Chunk {
            segment_base,
            file_position,
            buf,
            data_start,
            data_len,
        });
        self.evict();
    }

    fn evict(&mut self) {
        while self.held_bytes > self.max_bytes {
            match self.chunks.pop_front() {
                Some(c) => self.held_bytes -= c.buf.as_slice().len(),
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
                self.held_bytes -= c.buf.as_slice().len();
            }
        }
    }

    /// Copy `[position, position + len)` of a segment out of the cache, if fully cached.
    pub(crate) fn read(&self, segment_base: i64, position: u64, len: usize) -> Option<Bytes> {
        let first = self
            .chunks
            .partition_point(|c| (c.segment_base, c.end()) <= (segment_base, position));
        // Common case: the range lies in one heap chunk; hand out a slice, no copy.
        if let Some(c) = self.chunks.get(first)
            && let SharedBuf::Heap(bytes) = &c.buf
            && c.segment_base == segment_base
            && c.file_position <= position
            && position + len as u64 <= c.end()
        {
            let from = c.data_start + (position - c.file_position) as usize;
            return Some(bytes.slice(from..from + len));
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
            let take = (c.data_len - from).min((end - pos) as usize);
            let slice = &c.buf.as_slice()[c.data_start + from..c.data_start + from + take];
            if out.capacity() == 0 {
                out.reserve(len);
            }
            out.extend_from_slice(slice);
            pos += take as u64;
        }
        (pos >= end).then(|| out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heap(v: &[u8]) -> SharedBuf {
        SharedBuf::Heap(Bytes::copy_from_slice(v))
    }

    #[test]
    fn reads_across_chunks_and_evicts() {
        let mut c = TailCache::new(19);
        c.insert(0, 0, heap(b"xxabcd"), 2, 4);
        c.insert(0, 4, heap(b"efgh"), 0, 4);
        assert_eq!(c.read(0, 1, 6).unwrap(), Bytes::from_static(b"bcdefg"));
        assert!(c.read(0, 6, 3).is_none(), "past cached end");
        assert!(c.read(1, 0, 1).is_none(), "other segment");
        c.insert(8, 0, heap(b"0123456789"), 0, 10);
        assert!(c.read(0, 0, 1).is_none(), "evicted");
        assert_eq!(c.read(8, 9, 1).unwrap(), Bytes::from_static(b"9"));
        c.insert(8, 3, heap(b"zz"), 0, 2); // non-contiguous: cache resets
        assert!(c.read(8, 0, 1).is_none());
        assert_eq!(c.read(8, 3, 2).unwrap(), Bytes::from_static(b"zz"));
    }
}
