//! O_DIRECT reads of cold data, started ahead of the consumer that will ask for them.
//!
//! Why: a consumer catching up from disk asks for its next range only once the last one is
//! sent, and a read issued then leaves the disk idle in between. Through the page cache
//! (`sendfile`) the kernel's readahead fills that gap, but filling page cache costs more than
//! the disk itself on a VM: buffered reads of six segment files in parallel reached 880 MB/s
//! where O_DIRECT reads of the same files reached 1,600 (docs/BENCHMARKS.md, change 41). So a
//! log keeps a few O_DIRECT reads in flight past what each cold fetch returns, into the
//! core's registered buffers, and the next fetch takes their buffers as they are (no copy).
//!
//! Bounded: a log holds at most `LogConfig::read_ahead_bytes` of reads, in flight or done,
//! and at most [`CHUNKS_MAX`] of them; the oldest go first when a new one needs room. A
//! read's buffer is held only until a fetch takes it (or it is evicted), and a finished read
//! holds no segment, so a retired segment's file is never kept from recycling by data read
//! ahead of it.

use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;

use crate::segment::Segment;

/// Most chunks a log holds, whatever their size: lookups walk them, and the rests of reads
/// that fetches left behind can be small.
const CHUNKS_MAX: usize = 64;

/// One read: `[position, position + len)` of segment `segment_base`.
pub(crate) struct Chunk {
    pub segment_base: i64,
    pub position: u64,
    pub len: usize,
    /// Base offset of the batch at `position`, when known: the rest of a read after the
    /// batches a fetch sent, where the consumer's next fetch starts. That fetch then needs
    /// no index lookup and header walk (a small read of its own before the data).
    pub first_batch: Option<i64>,
    state: State,
}

enum State {
    /// In flight; dropping the task cancels the read.
    Reading(glommio::Task<std::io::Result<Bytes>>),
    Done(Bytes),
}

impl Chunk {
    fn end(&self) -> u64 {
        self.position + self.len as u64
    }

    /// Starts reading `[position, position + len)` of `segment` on this core's executor.
    pub(crate) fn start(segment: &Rc<Segment>, position: u64, len: usize) -> Chunk {
        let seg = segment.clone();
        let task = glommio::spawn_local(async move { seg.file.read_at(position, len).await });
        Chunk {
            segment_base: segment.base_offset,
            position,
            len,
            first_batch: None,
            state: State::Reading(task),
        }
    }

    /// The chunk's bytes (fewer than `len` at the end of the file).
    pub(crate) async fn bytes(self) -> std::io::Result<Bytes> {
        match self.state {
            State::Done(bytes) => Ok(bytes),
            State::Reading(task) => task.await,
        }
    }

    /// A chunk of bytes already read from `position`, where batch `first_batch` starts.
    pub(crate) fn done(
        segment_base: i64,
        position: u64,
        bytes: Bytes,
        first_batch: Option<i64>,
    ) -> Chunk {
        Chunk {
            segment_base,
            position,
            len: bytes.len(),
            first_batch,
            state: State::Done(bytes),
        }
    }
}

/// A log's reads ahead, oldest first.
pub(crate) struct ReadAhead {
    chunks: VecDeque<Chunk>,
    /// Sum of the chunks' `len`.
    held_bytes: usize,
    max_bytes: usize,
}

impl ReadAhead {
    pub(crate) fn new(max_bytes: usize) -> Self {
        ReadAhead {
            chunks: VecDeque::new(),
            held_bytes: 0,
            max_bytes,
        }
    }

    pub(crate) fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
        self.evict(0);
    }

    /// Removes and returns the chunk of `segment_base` that holds `position`.
    pub(crate) fn take(&mut self, segment_base: i64, position: u64) -> Option<Chunk> {
        let i = self.chunks.iter().position(|c| {
            c.segment_base == segment_base && c.position <= position && position < c.end()
        })?;
        let chunk = self.chunks.remove(i)?;
        self.held_bytes -= chunk.len;
        Some(chunk)
    }

    /// The position and bytes of the read chunk of `segment_base` that starts with batch
    /// `offset` (see [`Chunk::first_batch`]).
    pub(crate) fn starting_with(&self, segment_base: i64, offset: i64) -> Option<(u64, Bytes)> {
        self.chunks.iter().find_map(|c| match &c.state {
            State::Done(bytes)
                if c.segment_base == segment_base && c.first_batch == Some(offset) =>
            {
                Some((c.position, bytes.clone()))
            }
            _ => None,
        })
    }

    /// Where the chunks of `segment_base` that cover `position` contiguously end (`position`
    /// itself if none holds it).
    pub(crate) fn covered_to(&self, segment_base: i64, position: u64) -> u64 {
        let mut at = position;
        while let Some(c) = self
            .chunks
            .iter()
            .find(|c| c.segment_base == segment_base && c.position <= at && at < c.end())
        {
            at = c.end();
        }
        at
    }

    /// Whether a chunk of `len` more bytes would fit without evicting anything.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.held_bytes + len <= self.max_bytes && self.chunks.len() < CHUNKS_MAX
    }

    /// Keeps `chunk`, evicting the oldest chunks if it needs their room. A chunk larger
    /// than the whole budget is dropped (and its read cancelled).
    pub(crate) fn insert(&mut self, chunk: Chunk) {
        if chunk.len > self.max_bytes {
            return;
        }
        self.evict(chunk.len);
        self.held_bytes += chunk.len;
        self.chunks.push_back(chunk);
    }

    /// Evicts the oldest chunks until `room` more bytes fit (and, with `room` > 0, one more
    /// chunk).
    fn evict(&mut self, room: usize) {
        let chunks_max = if room > 0 { CHUNKS_MAX - 1 } else { CHUNKS_MAX };
        while self.held_bytes + room > self.max_bytes || self.chunks.len() > chunks_max {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.held_bytes -= old.len;
        }
    }

    /// Drops every chunk of segments below `segment_base` (removed by retention).
    pub(crate) fn drop_segments_below(&mut self, segment_base: i64) {
        self.chunks.retain(|c| c.segment_base >= segment_base);
        self.held_bytes = self.chunks.iter().map(|c| c.len).sum();
    }

    /// Drops every chunk (the log was truncated or closed).
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.held_bytes = 0;
    }

    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(base: i64, position: u64, len: usize) -> Chunk {
        Chunk::done(
            base,
            position,
            Bytes::from(vec![7u8; len]),
            Some(position as i64),
        )
    }

    #[test]
    fn takes_the_chunk_holding_a_position_and_evicts_the_oldest() {
        let mut ahead = ReadAhead::new(300);
        ahead.insert(done(0, 0, 100));
        ahead.insert(done(0, 100, 100));
        ahead.insert(done(5, 0, 100));
        assert_eq!(ahead.covered_to(0, 50), 200);
        assert_eq!(ahead.covered_to(5, 100), 100);
        assert_eq!(ahead.starting_with(0, 100).unwrap().0, 100);
        assert!(ahead.starting_with(0, 50).is_none());
        // A fourth chunk evicts the first.
        ahead.insert(done(0, 200, 100));
        assert_eq!(ahead.held_bytes(), 300);
        assert!(ahead.take(0, 50).is_none());
        let c = ahead.take(0, 150).unwrap();
        assert_eq!((c.position, c.len), (100, 100));
        assert_eq!(ahead.held_bytes(), 200);
        assert!(ahead.has_room(100));
        assert!(!ahead.has_room(101));
        ahead.drop_segments_below(5);
        assert_eq!(ahead.held_bytes(), 100);
        assert!(ahead.take(5, 0).is_some());
    }

    #[test]
    fn never_holds_more_than_its_budget() {
        let mut ahead = ReadAhead::new(250);
        ahead.insert(done(0, 0, 300));
        assert_eq!(ahead.held_bytes(), 0);
        for i in 0..10 {
            ahead.insert(done(0, i * 100, 100));
            assert!(ahead.held_bytes() <= 250);
        }
        ahead.set_max_bytes(100);
        assert_eq!(ahead.held_bytes(), 100);
        assert!(ahead.take(0, 950).is_some());
        // Many small chunks: the count is bounded too.
        ahead.set_max_bytes(1 << 20);
        for i in 0..(3 * CHUNKS_MAX as u64) {
            ahead.insert(done(0, i * 10, 10));
            assert!(ahead.chunks.len() <= CHUNKS_MAX);
        }
        assert!(!ahead.has_room(10));
        assert!(ahead.take(0, (3 * CHUNKS_MAX as u64 - 1) * 10).is_some());
        ahead.clear();
        assert_eq!(ahead.held_bytes(), 0);
    }
}
