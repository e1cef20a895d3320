//! One segment: a `.log` file of stored batches plus its in-memory sparse indexes, persisted
//! as `.index` / `.timeindex` when the segment is sealed (rolled) or the log is closed.

use crate::batch::{self, BatchHeader, BatchInfo, HEADER_BYTES, MAGIC_V2};
use crate::cache::TailCache;
use crate::config::BackendKind;
use crate::error::LogError;
use crate::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::io::{SegFile, SharedBuf, WriteBufs, align_down, align_up};
use crate::recycle::SpareFileSet;
use crate::zero_ahead::{ZeroAhead, ZeroPlan};
use bytes::Bytes;
use std::cell::RefCell;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Bytes read per I/O while scanning a segment during recovery.
const SCAN_CHUNK_BYTES: usize = 1 << 20;
/// Bytes read per I/O while walking batch headers to locate an offset or timestamp.
const HEADER_WINDOW_BYTES: usize = 16 << 10;

/// `{base:020}.{ext}`, Kafka's file naming.
pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// Header facts copied out of a stored batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchFacts {
    pub base_offset: i64,
    pub last_offset: i64,
    pub total_bytes: u64,
    pub max_timestamp: i64,
    pub log_append_time: bool,
    pub compressed: bool,
}

impl BatchFacts {
    pub(crate) fn from_header(h: &BatchHeader) -> Option<BatchFacts> {
        if h.magic != MAGIC_V2 {
            return None;
        }
        let total = h.total_bytes()? as u64;
        let base = h.base_offset.get();
        let last = h.last_offset();
        if last < base {
            return None;
        }
        Some(BatchFacts {
            base_offset: base,
            last_offset: last,
            total_bytes: total,
            max_timestamp: h.max_timestamp.get(),
            log_append_time: h.is_log_append_time(),
            compressed: h.compression() != 0,
        })
    }
}

/// Mutable state of a segment. Borrowed only briefly, never across an `.await`.
pub(crate) struct SegMeta {
    /// Logical size: bytes of valid batches (a Dma file may be longer, zero padded).
    pub size_bytes: u64,
    /// Offset after the last batch (the base offset if empty).
    pub next_offset: i64,
    /// Largest batch max timestamp, -1 if none.
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    pub bytes_since_index: u64,
    /// Wall clock of the first append (for `segment.ms`).
    pub roll_base_ms: Option<i64>,
    /// Wall clock of the last append (retention fallback when batches carry no timestamps).
    pub last_modified_ms: i64,
    /// Dma backend, active segment: the bytes of the partially filled last block
    /// `[align_down(size), size)`, rewritten in front of the next append.
    pub tail: Vec<u8>,
    /// Count of completed writes; with `synced_writes`, tells whether an fdatasync is needed.
    /// Counters, not a flag, so a sync cancelled midway never marks later writes clean.
    pub writes: u64,
    /// Value of `writes` when the last successful fdatasync started.
    pub synced_writes: u64,
}

impl SegMeta {
    fn new(base_offset: i64, now_ms: i64) -> SegMeta {
        SegMeta {
            size_bytes: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
            roll_base_ms: None,
            last_modified_ms: now_ms,
            tail: Vec::new(),
            writes: 0,
            synced_writes: 0,
        }
    }

    /// Account one batch stored at `position` (Kafka's index rule: an entry when more than
    /// `index.interval.bytes` were written since the last one).
    fn on_batch(
        &mut self,
        segment_base: i64,
        position: u64,
        facts: &BatchFacts,
        offset_of_max: i64,
        index_interval_bytes: u32,
    ) {
        if facts.max_timestamp > self.max_timestamp {
            self.max_timestamp = facts.max_timestamp;
            self.offset_of_max_timestamp = offset_of_max;
        }
        if self.bytes_since_index > index_interval_bytes as u64 {
            self.index.push(OffsetEntry {
                relative_offset: (facts.last_offset - segment_base) as u32,
                position: position as u32,
            });
            if self.max_timestamp >= 0 {
                self.time_index.maybe_push(TimeEntry {
                    timestamp: self.max_timestamp,
                    relative_offset: (self.offset_of_max_timestamp - segment_base).max(0) as u32,
                });
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += facts.total_bytes;
        self.next_offset = facts.last_offset + 1;
    }

    pub fn segment_time_ms(&self) -> i64 {
        if self.max_timestamp >= 0 {
            self.max_timestamp
        } else {
            self.last_modified_ms
        }
    }
}

/// Offset of the first record carrying a stored batch's max timestamp: record-level for
/// uncompressed CreateTime batches, the base offset under LogAppendTime, and the last offset
/// for compressed batches (whose records are opaque; Kafka's "shallow" convention).
fn offset_of_max_timestamp(batch: &[u8], facts: &BatchFacts) -> i64 {
    if facts.log_append_time {
        return facts.base_offset;
    }
    if !facts.compressed
        && let Some((delta, _)) = batch::find_record_by_timestamp(batch, facts.max_timestamp)
    {
        return facts.base_offset + delta as i64;
    }
    facts.last_offset
}

/// Copies `src` into a range given as its parts in two buffers (`WriteBufs::range_mut`).
fn copy_in((first, second): (&mut [u8], &mut [u8]), src: &[u8]) {
    let (a, b) = src.split_at(first.len());
    first.copy_from_slice(a);
    second.copy_from_slice(b);
}

/// The data bytes `range` of a written buffer as the tail cache keeps them, with the memory
/// they hold. Small O_DIRECT writes carry up to a block of padding and prefix: copying the
/// data out keeps the cache's memory proportional to data; big writes are kept as they are
/// (shared with any core, see `lent.rs`).
fn cached_part(buf: SharedBuf, range: std::ops::Range<usize>) -> (Bytes, usize) {
    if buf.as_slice().len() > 2 * range.len() {
        (
            Bytes::copy_from_slice(&buf.as_slice()[range.clone()]),
            range.len(),
        )
    } else {
        let held_bytes = buf.held_bytes();
        (buf.into_bytes().slice(range), held_bytes)
    }
}

pub(crate) struct Segment {
    pub base_offset: i64,
    pub file: SegFile,
    /// A second, buffered read-only descriptor of the `.log` file for zero-copy sends
    /// (sendfile reads through the page cache; the O_DIRECT one cannot feed it). Opened on the
    /// first send.
    pub send_file: std::cell::OnceCell<std::sync::Arc<std::fs::File>>,
    pub log_path: PathBuf,
    pub index_path: PathBuf,
    pub time_index_path: PathBuf,
    pub meta: RefCell<SegMeta>,
    /// Zeros written ahead of the appends (Dma backend, active segment).
    pub zero: ZeroAhead,
}

/// One produce request's share of a grouped append.
pub(crate) struct AppendPart<'a> {
    pub records: &'a [u8],
    pub infos: &'a [BatchInfo],
    pub first_offset: i64,
    pub leader_epoch: i32,
    pub log_append_time_ms: Option<i64>,
}

/// Bytes read around a header walk, reused by the caller when it covers the data it needs.
pub(crate) struct Window {
    start: u64,
    data: Bytes,
    /// Bytes to read on a refill.
    read_bytes: usize,
}

impl Window {
    pub(crate) fn new(read_bytes: usize) -> Window {
        Window {
            start: 0,
            data: Bytes::new(),
            read_bytes: read_bytes.max(HEADER_WINDOW_BYTES),
        }
    }

    /// The window's bytes from `position` on (at most `len`), if it holds at least
    /// `min_len` of them (no copy).
    pub(crate) fn get(&self, position: u64, min_len: usize, len: usize) -> Option<Bytes> {
        let from = usize::try_from(position.checked_sub(self.start)?).ok()?;
        let available = self.data.len().checked_sub(from)?;
        (available >= min_len).then(|| self.data.slice(from..from + available.min(len)))
    }
}

impl Segment {
    fn paths(dir: &Path, base_offset: i64) -> (PathBuf, PathBuf, PathBuf) {
        (
            dir.join(file_name(base_offset, "log")),
            dir.join(file_name(base_offset, "index")),
            dir.join(file_name(base_offset, "timeindex")),
        )
    }

    /// Create a new, empty segment (any stale files with its name are emptied).
    pub(crate) async fn create(
        dir: &Path,
        base_offset: i64,
        backend: BackendKind,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        Self::create_in(dir, base_offset, backend, now_ms, None).await
    }

    /// Create a new, empty segment in the retired file `spare` (see `recycle.rs`): its old
    /// bytes stay, past the logical end, and appends overwrite them.
    pub(crate) async fn recycle(
        dir: &Path,
        base_offset: i64,
        backend: BackendKind,
        now_ms: i64,
        spare: &SpareFileSet,
    ) -> Result<Segment, LogError> {
        Self::create_in(dir, base_offset, backend, now_ms, Some(spare)).await
    }

    async fn create_in(
        dir: &Path,
        base_offset: i64,
        backend: BackendKind,
        now_ms: i64,
        spare: Option<&SpareFileSet>,
    ) -> Result<Segment, LogError> {
        let (log_path, index_path, time_index_path) = Self::paths(dir, base_offset);
        let mut reused_indexes = [false; 2];
        if let Some(spare) = spare {
            std::fs::rename(&spare.log, &log_path)?;
            // The old index files become this segment's; they are only read back after
            // `write_indexes` rewrote them (a crash before that rebuilds the indexes).
            for (i, (from, to)) in [
                (&spare.index, &index_path),
                (&spare.time_index, &time_index_path),
            ]
            .into_iter()
            .enumerate()
            {
                if let Some(from) = from {
                    reused_indexes[i] = std::fs::rename(from, to).is_ok();
                }
            }
        }
        let file = SegFile::open(&log_path, backend).await?;
        let mut file_bytes = file.size().await?;
        if spare.is_none() && file_bytes != 0 {
            file.truncate(0).await?;
            file_bytes = 0;
        }
        for (p, reused) in [&index_path, &time_index_path]
            .into_iter()
            .zip(reused_indexes)
        {
            if !reused && p.exists() {
                std::fs::remove_file(p)?;
            }
        }
        Ok(Segment {
            base_offset,
            file,
            send_file: std::cell::OnceCell::new(),
            log_path,
            index_path,
            time_index_path,
            meta: RefCell::new(SegMeta::new(base_offset, now_ms)),
            zero: ZeroAhead::new(file_bytes),
        })
    }

    /// Open an existing segment. With `trust_index` (clean shutdown, or a sealed segment) the
    /// persisted indexes are loaded after a sanity check and only the bytes after the last
    /// index entry are scanned; otherwise (or if the check fails) the whole segment is scanned
    /// and the indexes rebuilt. Every scanned batch is checked (header, length, CRC, offsets);
    /// the file is truncated at the first bad one, so a torn tail never survives.
    pub(crate) async fn open_existing(
        dir: &Path,
        base_offset: i64,
        backend: BackendKind,
        trust_index: bool,
        next_segment_base: Option<i64>,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<Segment, LogError> {
        let (log_path, index_path, time_index_path) = Self::paths(dir, base_offset);
        let file = SegFile::open(&log_path, backend).await?;
        let file_bytes = file.size().await?;
        let segment = Segment {
            base_offset,
            file,
            send_file: std::cell::OnceCell::new(),
            log_path,
            index_path,
            time_index_path,
            meta: RefCell::new(SegMeta::new(base_offset, now_ms)),
            zero: ZeroAhead::new(file_bytes),
        };
        let mut valid_end = None;
        if trust_index {
            valid_end = segment
                .recover_from_index(file_bytes, next_segment_base, index_interval_bytes)
                .await?;
            if valid_end.is_none() {
                tracing::warn!(segment = %segment.log_path.display(), "index failed its sanity check; rebuilding");
            }
        }
        let rebuilt = valid_end.is_none();
        let valid_end = match valid_end {
            Some(end) => end,
            None => {
                *segment.meta.borrow_mut() = SegMeta::new(base_offset, now_ms);
                segment
                    .scan(0, file_bytes, next_segment_base, index_interval_bytes)
                    .await?
            }
        };
        if valid_end < file_bytes {
            // Zeros past the data (the padding of the last block, the zeros written ahead) and
            // older batches (a recycled file's old contents) are expected after a crash on the
            // Dma backend; anything else is damage worth a warning.
            let expected = backend == BackendKind::Dma
                && rebuilt
                && (segment.zeros_at(valid_end, file_bytes).await
                    || segment.older_batch_at(valid_end).await);
            if expected {
                // Named all the same: zeros from a batch boundary on are also what a damaged
                // tail can look like, and a cut that drops data must never be silent.
                tracing::info!(segment = %segment.log_path.display(), valid_end, file_bytes, "cutting the tail after an unclean shutdown: only zeros or older batches past the last valid batch");
            } else {
                tracing::warn!(segment = %segment.log_path.display(), valid_end, file_bytes, "truncating invalid tail");
            }
            segment.file.truncate(valid_end).await?;
            segment.zero.truncated(valid_end);
        }
        {
            let mut m = segment.meta.borrow_mut();
            m.size_bytes = valid_end;
            let rel_end = (m.next_offset - base_offset) as u32;
            m.index.truncate_to_position(valid_end);
            m.time_index.truncate_to_offset(rel_end);
            if m.size_bytes > 0 {
                m.roll_base_ms = Some(now_ms);
            }
        }
        if rebuilt && trust_index {
            segment.write_indexes()?;
        }
        Ok(segment)
    }

    /// Whether the file holds only zeros from `from` to `to` (checks at most the first 64 KiB).
    async fn zeros_at(&self, from: u64, to: u64) -> bool {
        let len = (to - from).min(64 << 10) as usize;
        match self.file.read_at(from, len).await {
            Ok(data) => data.len() == len && data.iter().all(|&b| b == 0),
            Err(_) => false,
        }
    }

    /// Whether a batch from before this segment starts at `position` (a recycled file's old
    /// contents).
    async fn older_batch_at(&self, position: u64) -> bool {
        match self.file.read_at(position, HEADER_BYTES).await {
            Ok(data) => BatchHeader::view(&data)
                .and_then(BatchFacts::from_header)
                .is_some_and(|f| f.base_offset < self.base_offset),
            Err(_) => false,
        }
    }

    /// Load the persisted indexes and scan only past the last offset index entry. `None` if
    /// the indexes are missing or fail the sanity check.
    async fn recover_from_index(
        &self,
        file_bytes: u64,
        next_segment_base: Option<i64>,
        index_interval_bytes: u32,
    ) -> Result<Option<u64>, LogError> {
        let (Ok(index_bytes), Ok(time_bytes)) = (
            std::fs::read(&self.index_path),
            std::fs::read(&self.time_index_path),
        ) else {
            return Ok(None);
        };
        let Some(index) = OffsetIndex::decode(&index_bytes, file_bytes) else {
            return Ok(None);
        };
        let Some(time_index) = TimeIndex::decode(&time_bytes, u32::MAX as u64) else {
            return Ok(None);
        };
        let start = match index.entries.last() {
            Some(last) => {
                // The entry must point at a batch ending exactly at the indexed offset.
                let data = self
                    .file
                    .read_at(last.position as u64, HEADER_BYTES)
                    .await?;
                let facts = BatchHeader::view(&data).and_then(BatchFacts::from_header);
                match facts {
                    Some(f) if f.last_offset == self.base_offset + last.relative_offset as i64 => {
                        last.position as u64
                    }
                    _ => return Ok(None),
                }
            }
            None => 0,
        };
        {
            let mut m = self.meta.borrow_mut();
            if let Some(t) = time_index.entries.last() {
                m.max_timestamp = t.timestamp;
                m.offset_of_max_timestamp = self.base_offset + t.relative_offset as i64;
            }
            m.index = index;
            m.time_index = time_index;
        }
        let end = self
            .scan(start, file_bytes, next_segment_base, index_interval_bytes)
            .await?;
        let m = self.meta.borrow();
        if m.time_index
            .entries
            .last()
            .is_some_and(|t| self.base_offset + t.relative_offset as i64 >= m.next_offset)
        {
            return Ok(None);
        }
        Ok(Some(end))
    }

    /// Validate batches from `from` up to `file_bytes`, updating the metadata; returns the
    /// end of the last valid batch.
    async fn scan(
        &self,
        from: u64,
        file_bytes: u64,
        next_segment_base: Option<i64>,
        index_interval_bytes: u32,
    ) -> Result<u64, LogError> {
        let mut pos = from;
        let mut buf = Bytes::new();
        let mut buf_start = from;
        // Offsets inside a segment are contiguous (the log assigns them), so each batch must
        // start exactly where the previous one ended. `baseOffset` is not covered by the CRC;
        // this is what catches a damaged one. A scan starting at an index entry does not know
        // the first batch's base offset (its last offset was checked against the entry).
        let mut expected_base = (from == 0).then_some(self.base_offset);
        while pos + HEADER_BYTES as u64 <= file_bytes {
            if pos + HEADER_BYTES as u64 > buf_start + buf.len() as u64 {
                let len = (SCAN_CHUNK_BYTES as u64).min(file_bytes - pos) as usize;
                buf = self.file.read_at(pos, len).await?;
                buf_start = pos;
                if buf.len() < HEADER_BYTES {
                    break;
                }
            }
            let header_at = (pos - buf_start) as usize;
            let Some(facts) =
                BatchHeader::view(&buf[header_at..]).and_then(BatchFacts::from_header)
            else {
                break;
            };
            let fits = pos + facts.total_bytes <= file_bytes;
            let offsets_ok = expected_base.is_none_or(|b| facts.base_offset == b)
                && facts.base_offset >= self.base_offset
                && facts.last_offset - self.base_offset <= i32::MAX as i64
                && next_segment_base.is_none_or(|n| facts.last_offset < n);
            if !fits || !offsets_ok {
                break;
            }
            if pos + facts.total_bytes > buf_start + buf.len() as u64 {
                let len = (SCAN_CHUNK_BYTES as u64)
                    .max(facts.total_bytes)
                    .min(file_bytes - pos) as usize;
                buf = self.file.read_at(pos, len).await?;
                buf_start = pos;
                if (buf.len() as u64) < facts.total_bytes {
                    break;
                }
            }
            let at = (pos - buf_start) as usize;
            let batch = &buf[at..at + facts.total_bytes as usize];
            if !batch::crc_ok(batch) {
                break;
            }
            let offset_of_max = offset_of_max_timestamp(batch, &facts);
            self.meta.borrow_mut().on_batch(
                self.base_offset,
                pos,
                &facts,
                offset_of_max,
                index_interval_bytes,
            );
            expected_base = Some(facts.last_offset + 1);
            pos += facts.total_bytes;
        }
        Ok(pos)
    }

    /// Dma backend: load the partially filled last block into memory.
    pub(crate) async fn load_tail(&self) -> Result<(), LogError> {
        if !self.file.needs_alignment() {
            return Ok(());
        }
        let size = self.meta.borrow().size_bytes;
        let start = align_down(size);
        let tail = if size > start {
            let data = self.file.read_at(start, (size - start) as usize).await?;
            if (data.len() as u64) < size - start {
                return Err(LogError::CorruptLog {
                    segment_base: self.base_offset,
                    position: start,
                    reason: "short read of the last block",
                });
            }
            data.to_vec()
        } else {
            Vec::new()
        };
        self.meta.borrow_mut().tail = tail;
        Ok(())
    }

    /// Write the in-memory indexes to `.index` / `.timeindex` and fsync them.
    pub(crate) fn write_indexes(&self) -> Result<(), LogError> {
        let files = self.encoded_indexes();
        Ok(write_index_files(files)?)
    }

    /// [`Segment::write_indexes`], with the Dma backend on the executor's blocking thread:
    /// the files are written with buffered I/O and fsynced, which would stall every partition
    /// and connection of the core for as long (milliseconds per roll).
    async fn write_indexes_off_core(&self) -> Result<(), LogError> {
        if !self.file.needs_alignment() {
            return self.write_indexes();
        }
        let files = self.encoded_indexes();
        Ok(glommio::executor()
            .spawn_blocking(move || write_index_files(files))
            .await?)
    }

    /// Both index files' paths and contents, the time index completed with the segment's
    /// largest timestamp.
    fn encoded_indexes(&self) -> [(PathBuf, Vec<u8>); 2] {
        let mut m = self.meta.borrow_mut();
        if m.max_timestamp >= 0 {
            let entry = TimeEntry {
                timestamp: m.max_timestamp,
                relative_offset: (m.offset_of_max_timestamp - self.base_offset).max(0) as u32,
            };
            m.time_index.maybe_push(entry);
        }
        [
            (self.index_path.clone(), m.index.encode()),
            (self.time_index_path.clone(), m.time_index.encode()),
        ]
    }

    /// Make the segment durable and read-only-ready: drop Dma padding, fdatasync, persist the
    /// indexes. Used on roll and on close.
    pub(crate) async fn seal(&self) -> Result<(), LogError> {
        let size = self.meta.borrow().size_bytes;
        if self.file.needs_alignment() {
            // Removes the zero padding of the last block, the zeros written ahead and any
            // unused preallocation (after the zero write in flight, if any, has landed).
            self.zero.settle().await;
            self.file.truncate(size).await?;
            self.zero.truncated(size);
        }
        self.sync().await?;
        self.write_indexes_off_core().await
    }

    /// Whether writes happened since the last fdatasync.
    pub(crate) fn is_dirty(&self) -> bool {
        let m = self.meta.borrow();
        m.writes > m.synced_writes
    }

    /// fdatasync, recording which writes it covers.
    pub(crate) async fn sync(&self) -> Result<(), LogError> {
        let covered = self.meta.borrow().writes;
        self.file.sync().await?;
        let mut m = self.meta.borrow_mut();
        m.synced_writes = m.synced_writes.max(covered);
        Ok(())
    }

    /// The buffered descriptor for zero-copy sends, opened on first use.
    pub(crate) fn send_file(&self) -> std::io::Result<std::sync::Arc<std::fs::File>> {
        if let Some(f) = self.send_file.get() {
            return Ok(f.clone());
        }
        let f = std::sync::Arc::new(std::fs::File::open(&self.log_path)?);
        Ok(self.send_file.get_or_init(|| f).clone())
    }

    /// Read `[position, position + len)`, from the tail cache when it holds the range.
    pub(crate) async fn read_range(
        &self,
        cache: &RefCell<TailCache>,
        position: u64,
        len: usize,
    ) -> Result<Bytes, LogError> {
        let hit = cache.borrow().read(self.base_offset, position, len);
        if let Some(bytes) = hit {
            return Ok(bytes);
        }
        Ok(self.file.read_at(position, len).await?)
    }

    async fn header_at(
        &self,
        cache: &RefCell<TailCache>,
        window: &mut Window,
        position: u64,
        end: u64,
    ) -> Result<BatchFacts, LogError> {
        let corrupt = |reason| LogError::CorruptLog {
            segment_base: self.base_offset,
            position,
            reason,
        };
        if position + HEADER_BYTES as u64 > end {
            return Err(corrupt("batch header past the segment end"));
        }
        let in_window = position >= window.start
            && position + HEADER_BYTES as u64 <= window.start + window.data.len() as u64;
        if !in_window {
            let len = (window.read_bytes as u64).min(end - position) as usize;
            window.data = self.read_range(cache, position, len).await?;
            window.start = position;
            if window.data.len() < HEADER_BYTES {
                return Err(corrupt("short read"));
            }
        }
        let at = (position - window.start) as usize;
        let facts = BatchHeader::view(&window.data[at..])
            .and_then(BatchFacts::from_header)
            .ok_or_else(|| corrupt("bad batch header"))?;
        if position + facts.total_bytes > end {
            return Err(corrupt("batch extends past the segment end"));
        }
        Ok(facts)
    }

    /// First batch at or after `start` satisfying `pred`, walking headers up to `end`.
    async fn find_from(
        &self,
        cache: &RefCell<TailCache>,
        window: &mut Window,
        start: u64,
        end: u64,
        pred: impl Fn(&BatchFacts) -> bool,
    ) -> Result<Option<(u64, BatchFacts)>, LogError> {
        let mut pos = start;
        while pos < end {
            let facts = self.header_at(cache, window, pos, end).await?;
            if pred(&facts) {
                return Ok(Some((pos, facts)));
            }
            pos += facts.total_bytes;
        }
        Ok(None)
    }

    /// The batch containing `offset`, or the first batch after it; `None` if the segment ends
    /// before. Uses the sparse index; a stale or damaged entry falls back to a full walk.
    pub(crate) async fn locate(
        &self,
        cache: &RefCell<TailCache>,
        window: &mut Window,
        offset: i64,
        end: u64,
    ) -> Result<Option<(u64, BatchFacts)>, LogError> {
        let relative = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let entry = self.meta.borrow().index.lookup(relative);
        if let Some(e) = entry {
            let expected_last = self.base_offset + e.relative_offset as i64;
            match self.header_at(cache, window, e.position as u64, end).await {
                Ok(f) if f.last_offset == expected_last => {
                    return self
                        .find_from(cache, window, e.position as u64, end, |f| {
                            f.last_offset >= offset
                        })
                        .await;
                }
                _ => {
                    tracing::warn!(segment = %self.log_path.display(), "index entry does not match the log; walking from the start")
                }
            }
        }
        self.find_from(cache, window, 0, end, |f| f.last_offset >= offset)
            .await
    }

    /// The first batch whose max timestamp is >= `timestamp`, starting from the time index.
    pub(crate) async fn locate_timestamp(
        &self,
        cache: &RefCell<TailCache>,
        timestamp: i64,
        end: u64,
    ) -> Result<Option<(u64, BatchFacts)>, LogError> {
        let start = {
            let m = self.meta.borrow();
            m.time_index
                .lookup_below(timestamp)
                .and_then(|t| m.index.lookup(t.relative_offset))
                .map_or(0, |e| e.position as u64)
        };
        let mut window = Window::new(HEADER_WINDOW_BYTES);
        match self
            .find_from(cache, &mut window, start, end, |f| {
                f.max_timestamp >= timestamp
            })
            .await
        {
            Ok(found) => Ok(found),
            Err(_) if start != 0 => {
                self.find_from(cache, &mut window, 0, end, |f| f.max_timestamp >= timestamp)
                    .await
            }
            Err(e) => Err(e),
        }
    }

    /// Append validated produce requests (a group of them, contiguous in offsets) at the
    /// segment end in one write (two, issued together, where the written blocks end:
    /// `zero_ahead.rs`). Copies the bytes once into the write buffer (one per part) and stamps
    /// offsets there, writes, then updates the metadata and the tail cache. On an I/O error
    /// nothing in memory changes, so the next append rewrites the same region and nothing
    /// acknowledged is lost. Caller holds the log's write lock.
    ///
    /// `zeros`: how far and in what steps zeros may be written ahead (`ZeroPlan::NONE`: none).
    pub(crate) async fn append(
        self: &Rc<Self>,
        cache: &RefCell<TailCache>,
        parts: &[AppendPart<'_>],
        index_interval_bytes: u32,
        now_ms: i64,
        zeros: ZeroPlan,
    ) -> Result<(), LogError> {
        let aligned = self.file.needs_alignment();
        let size = self.meta.borrow().size_bytes;
        let (write_pos, prefix_len) = if aligned {
            let start = align_down(size);
            (start, (size - start) as usize)
        } else {
            (size, 0)
        };
        let records_len: usize = parts.iter().map(|p| p.records.len()).sum();
        let data_end = prefix_len + records_len;
        let alloc_len = if aligned {
            align_up(data_end as u64) as usize
        } else {
            data_end
        };
        // Decided before the buffers are filled: a split write fills two buffers directly.
        let mut split_at = None;
        if aligned {
            let write_end = write_pos + alloc_len as u64;
            split_at = self
                .zero
                .before_append(write_pos, write_end)
                .await
                .map(|at| (at - write_pos) as usize);
            // Claimed past `write_end` before this write is issued, so the two never overlap.
            self.start_zeros_ahead(write_end, size + records_len as u64, zeros);
            self.start_allocation_ahead(write_end, size + records_len as u64, zeros);
        }
        let mut bufs = WriteBufs::new(&self.file, alloc_len, split_at);
        let mut stamped = Vec::with_capacity(parts.iter().map(|p| p.infos.len()).sum());
        {
            // The padding past the data goes to disk: keep it deterministic (zeros). Every
            // byte before it is copied over below.
            let (a, b) = bufs.range_mut(data_end, alloc_len);
            a.fill(0);
            b.fill(0);
            {
                let m = self.meta.borrow();
                debug_assert_eq!(m.tail.len(), prefix_len);
                copy_in(bufs.range_mut(0, prefix_len), &m.tail);
            }
            let mut at = prefix_len;
            for part in parts {
                copy_in(bufs.range_mut(at, at + part.records.len()), part.records);
                let mut offset = part.first_offset;
                for info in part.infos {
                    let from = at + info.position;
                    let lat = part.log_append_time_ms;
                    let epoch = part.leader_epoch;
                    let max_timestamp = match bufs.range_mut(from, from + info.total_bytes) {
                        (batch, []) => batch::stamp(batch, info, offset, epoch, lat),
                        (first, second) => {
                            batch::stamp_split(first, second, info, offset, epoch, lat)
                        }
                    };
                    let last_offset = offset + info.last_offset_delta as i64;
                    let offset_of_max = match (lat, info.record_max_timestamp) {
                        (Some(_), _) => offset,
                        (None, Some((_, delta))) => offset + delta as i64,
                        (None, None) => last_offset,
                    };
                    stamped.push((
                        size + (from - prefix_len) as u64,
                        BatchFacts {
                            base_offset: offset,
                            last_offset,
                            total_bytes: info.total_bytes as u64,
                            max_timestamp,
                            log_append_time: lat.is_some(),
                            compressed: info.record_max_timestamp.is_none(),
                        },
                        offset_of_max,
                    ));
                    offset = last_offset + 1;
                }
                at += part.records.len();
            }
        }
        let written = match self.file.write_bufs_at(bufs, write_pos).await {
            Ok(written) => written,
            Err(e) => {
                if !aligned {
                    // Best effort: do not leave a partial write past the logical end.
                    let _ = self.file.truncate(size).await;
                }
                return Err(e.into());
            }
        };
        let new_size = size + records_len as u64;
        {
            let mut m = self.meta.borrow_mut();
            for (position, facts, offset_of_max) in &stamped {
                m.on_batch(
                    self.base_offset,
                    *position,
                    facts,
                    *offset_of_max,
                    index_interval_bytes,
                );
            }
            m.size_bytes = new_size;
            m.writes += 1;
            m.last_modified_ms = now_ms;
            m.roll_base_ms.get_or_insert(now_ms);
            if aligned {
                let tail_start = align_down(new_size);
                let from = (tail_start - write_pos) as usize;
                let to = (new_size - write_pos) as usize;
                let (a, b) = written.range(from, to);
                m.tail.clear();
                m.tail.extend_from_slice(a);
                m.tail.extend_from_slice(b);
            }
        }
        // A split write is cached as two chunks, and a batch may run from the first into the
        // second (`Log::send_from_cache` follows it across).
        let head_len = written.head.as_slice().len();
        let mut cache = cache.borrow_mut();
        let head_data = prefix_len..data_end.min(head_len);
        let (data, held_bytes) = cached_part(written.head, head_data);
        cache.insert(self.base_offset, size, data, held_bytes);
        if let Some(rest) = written.rest.filter(|_| data_end > head_len) {
            let rest_data = prefix_len.max(head_len) - head_len..data_end - head_len;
            let position = write_pos + (head_len + rest_data.start) as u64;
            let (data, held_bytes) = cached_part(rest, rest_data);
            cache.insert(self.base_offset, position, data, held_bytes);
        }
        Ok(())
    }

    /// Start the next allocation ahead of the appends, if one is due (see `zero_ahead.rs`).
    /// It runs as its own task; appends use the blocks once it has finished.
    fn start_allocation_ahead(self: &Rc<Self>, append_end: u64, data_bytes: u64, plan: ZeroPlan) {
        let Some(to) = self.zero.claim_allocation(append_end, data_bytes, plan) else {
            return;
        };
        let segment = self.clone();
        glommio::spawn_local(async move {
            let result = segment.file.allocate_to(to).await;
            segment.zero.allocation_finished(to, result.is_ok());
            if let Err(e) = result {
                // Only a lost optimisation: appends past the allocation extend the file. None
                // is tried again in this segment (`ZeroAhead::failed`).
                tracing::warn!(segment = %segment.log_path.display(), to, error = %e, "allocation ahead failed; this segment's appends extend the file instead");
            }
        })
        .detach();
    }

    /// Start the next zero write ahead of the appends, if one is due (see `zero_ahead.rs`).
    /// It runs as its own task, so no append waits for it unless it reaches into its range.
    fn start_zeros_ahead(self: &Rc<Self>, append_end: u64, data_bytes: u64, plan: ZeroPlan) {
        let Some((start, end)) = self.zero.claim(append_end, data_bytes, plan) else {
            return;
        };
        let segment = self.clone();
        glommio::spawn_local(async move {
            let result = segment.file.write_zeros(start, end - start).await;
            segment.zero.finished(start, end, result.is_ok());
            if let Err(e) = result {
                // Only a lost optimisation: appends past this point extend the file instead.
                // None is tried again in this segment (`ZeroAhead::failed`).
                tracing::warn!(segment = %segment.log_path.display(), start, error = %e, "zero write ahead failed; this segment's appends extend the file instead");
            }
        })
        .detach();
    }

    /// Cut the segment at `position` (a batch boundary) and rebuild its metadata.
    pub(crate) async fn truncate_at(
        &self,
        position: u64,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<(), LogError> {
        self.zero.settle().await;
        self.file.truncate(position).await?;
        self.zero.truncated(position);
        *self.meta.borrow_mut() = SegMeta::new(self.base_offset, now_ms);
        let end = self.scan(0, position, None, index_interval_bytes).await?;
        {
            let mut m = self.meta.borrow_mut();
            m.size_bytes = end;
            m.writes += 1;
            if end > 0 {
                m.roll_base_ms = Some(now_ms);
            }
        }
        if end < position {
            self.file.truncate(end).await?;
            self.zero.truncated(end);
        }
        self.load_tail().await
    }

    /// Renames the segment's files to `*.deleted` and leaves their deletion to the deleter
    /// thread after `delay` (freeing the blocks stalls the calling thread for milliseconds).
    pub(crate) fn retire_files(&self, delay: std::time::Duration) {
        for p in [&self.log_path, &self.index_path, &self.time_index_path] {
            if let Err(e) = crate::deleter::retire(p, delay) {
                tracing::warn!(path = %p.display(), error = %e, "could not retire segment file; deleting it now");
                if let Err(e) = std::fs::remove_file(p)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %p.display(), error = %e, "could not delete segment file");
                }
            }
        }
    }
}

/// Writes index files in place and fsyncs them. Overwritten, not re-created: a recycled
/// index file's blocks are reused, and shrinking it frees a block only when it crosses one.
fn write_index_files(files: [(PathBuf, Vec<u8>); 2]) -> std::io::Result<()> {
    for (path, bytes) in files {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        f.write_all_at(&bytes, 0)?;
        f.set_len(bytes.len() as u64)?;
        f.sync_data()?;
    }
    Ok(())
}
