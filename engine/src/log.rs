//! The partition log: an ordered list of segments plus offsets, flush policy, retention and
//! recovery. All methods take `&self`: many produce and fetch tasks of one core share a `Log`.
//! Appends, truncation and retention are serialized by an async write lock; reads take no
//! lock (they hold `Rc`s of the segments they read). No `RefCell` borrow crosses an `.await`.

use crate::batch;
use crate::cache::TailCache;
use crate::config::{BackendKind, LogConfig, TimestampType};
use crate::error::LogError;
use crate::read_ahead::{Chunk, ReadAhead};
use crate::recycle::SpareFiles;
use crate::segment::{AppendPart, BatchFacts, Segment, Window, file_name};
use crate::sync::LocalMutex;
use crate::zero_ahead::{
    ALLOCATE_CHUNK_BYTES_MAX, ZERO_CHUNK_BYTES_MAX, ZERO_CHUNK_BYTES_UNFLUSHED_MAX, ZeroPlan,
};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

/// Marker written by [`Log::close`]; its presence at open means the indexes can be trusted.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean_shutdown";
/// Checkpoint of the log start offset advanced by `delete_records_before`.
pub const LOG_START_CHECKPOINT_FILE: &str = "log-start-offset";

/// Largest group of queued appends written in one I/O.
const APPEND_GROUP_BYTES_MAX: u64 = 4 << 20;
/// Largest read issued for one `read` call beyond its first batch (later calls return more).
const READ_WINDOW_BYTES_MAX: usize = 8 << 20;

/// One queued produce request.
struct AppendRequest {
    records: Bytes,
    infos: Vec<batch::BatchInfo>,
    leader_epoch: i32,
    now_ms: i64,
    record_count: i64,
}

/// Where a queued request waits for the group writer's verdict.
struct AppendSlot {
    request: RefCell<Option<AppendRequest>>,
    result: RefCell<Option<Result<AppendInfo, LogError>>>,
}

/// Removes a cancelled append's request from the queue, unless a writer already took it.
struct WithdrawOnDrop<'a> {
    log: &'a Log,
    slot: &'a Rc<AppendSlot>,
}

impl Drop for WithdrawOnDrop<'_> {
    fn drop(&mut self) {
        if self.slot.request.borrow().is_some() {
            self.log
                .pending
                .borrow_mut()
                .retain(|s| !Rc::ptr_eq(s, self.slot));
        }
    }
}

/// The requests of one append group while their write is in flight. Dropped unfinished
/// (the writing future was cancelled), it puts them back at the head of the queue, in order.
struct GroupGuard<'a> {
    log: &'a Log,
    members: Vec<(Rc<AppendSlot>, AppendRequest)>,
}

impl GroupGuard<'_> {
    fn finish(&mut self, mut verdict: impl FnMut(&AppendRequest) -> Result<AppendInfo, LogError>) {
        for (slot, request) in self.members.drain(..) {
            *slot.result.borrow_mut() = Some(verdict(&request));
        }
    }
}

impl Drop for GroupGuard<'_> {
    fn drop(&mut self) {
        let mut pending = self.log.pending.borrow_mut();
        for (slot, request) in self.members.drain(..).rev() {
            *slot.request.borrow_mut() = Some(request);
            pending.push_front(slot);
        }
    }
}

/// Marks the log closed if dropped while armed (an operation cancelled or failed midway).
struct PoisonOnDrop<'a> {
    closed: &'a Cell<bool>,
    armed: bool,
}

impl PoisonOnDrop<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PoisonOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            tracing::error!(
                "log truncation did not complete; the log refuses writes until reopened"
            );
            self.closed.set(true);
        }
    }
}

/// Result of a successful [`Log::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// The timestamp written under LogAppendTime, -1 under CreateTime.
    pub log_append_time_ms: i64,
    /// Log start offset after the append.
    pub log_start_offset: i64,
    /// Records appended (sum over batches of `lastOffsetDelta + 1`).
    pub record_count: u32,
}

/// Result of [`Log::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole stored batches, concatenated, ready to send as a Fetch `records` field.
    pub data: Bytes,
    /// High watermark at the time of the read.
    pub high_watermark: i64,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
    /// Log end offset at the time of the read.
    pub log_end_offset: i64,
}

/// A byte range of a segment file, for sending without copying it through user space
/// (`sendfile`). It always holds whole batches, as far as the offset index is right (a
/// client discards a trailing partial batch, as with Kafka).
#[derive(Debug, Clone)]
pub struct FileRange {
    /// A buffered, read-only descriptor of the segment's `.log` file. Holding it keeps the
    /// data readable after the segment is retired, until the background deletion shrinks it.
    pub file: std::sync::Arc<std::fs::File>,
    /// Start of the range in the file.
    pub position: u64,
    /// Bytes in the range.
    pub len: usize,
    /// Bytes right after the range that may be read into the page cache ahead of the next
    /// read (the same consumer's next fetch, usually): whole or not, they are data of this
    /// segment that O_DIRECT appends will not rewrite. The engine does not read them itself;
    /// the sender decides when, off its hot path. Page cache, not process memory: the kernel
    /// evicts what nobody reads.
    pub read_ahead_bytes: usize,
}

/// Record data of a [`Log::read_for_send`]: in memory, or a file range.
#[derive(Debug, Clone)]
pub enum SendData {
    /// Whole batches in memory (the tail cache, or a read).
    Memory(Bytes),
    /// Whole batches in memory, in consecutive pieces: the tail cache's buffers of several
    /// appends, referenced rather than copied into one. Together they hold whole batches; a
    /// batch of an append written in two parts may run from one piece into the next.
    Pieces(Vec<Bytes>),
    /// Whole batches still on disk.
    File(FileRange),
}

impl Default for SendData {
    fn default() -> Self {
        SendData::Memory(Bytes::new())
    }
}

impl SendData {
    /// Bytes of record data.
    pub fn len(&self) -> usize {
        match self {
            SendData::Memory(b) => b.len(),
            SendData::Pieces(pieces) => pieces.iter().map(Bytes::len).sum(),
            SendData::File(f) => f.len,
        }
    }

    /// Whether there is no record data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Result of [`Log::read_for_send`].
#[derive(Debug, Clone)]
pub struct SendRead {
    /// The record data.
    pub data: SendData,
    /// High watermark at the time of the read.
    pub high_watermark: i64,
    /// Log start offset at the time of the read.
    pub log_start_offset: i64,
    /// Log end offset at the time of the read.
    pub log_end_offset: i64,
    /// The data was read from disk into memory for this read (direct cold reads): unlike the
    /// tail cache's buffers or a file range, it is memory held for as long as it is.
    pub read_from_disk: bool,
}

/// With the Dma backend, file ranges are handed out only this far below the active
/// segment's write position: the buffered descriptor's readahead (up to `read_ahead_kb`,
/// 8 MiB here) must never cache a block that an O_DIRECT append is about to rewrite.
const SEND_FILE_MARGIN_BYTES: u64 = 16 << 20;

/// How much of the file after a cold range handed out for sending may be read ahead
/// ([`FileRange::read_ahead_bytes`]). A consumer catching up asks for the next range only
/// once this one is sent, and reading the range alone left the disk idle in between.
const COLD_READ_AHEAD_BYTES: u64 = 4 << 20;

/// Reads ahead of a consumer catching up are this large (the last one of a segment may be
/// shorter), and so are the reads of what a fetch asks for, while nobody waits on the disk
/// ([`ColdReadPace::Ahead`]).
const READ_AHEAD_CHUNK_BYTES: u64 = 1 << 20;

/// Reads of what a fetch asks for while writes wait on the disk ([`ColdReadPace::Paced`]).
const PACED_CHUNK_BYTES: u64 = 256 << 10;

/// A fetch's own reads end at most this far past what it asks for (rounded up to it).
const DEMAND_READ_ALIGN_BYTES: u64 = 4096;

/// A read a cold fetch needs ([`Log::send_direct`]).
enum Planned {
    /// Started, by this fetch or ahead of it.
    Started(Chunk),
    /// Not started yet: this many bytes.
    Missing(usize),
    /// Awaited already.
    Taken,
}

/// How a cold read with `LogConfig::direct_cold_reads` uses the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColdReadPace {
    /// Nobody else is waiting on the disk: read what the fetch asks for in 1 MiB reads
    /// issued at once, and start reads of up to `LogConfig::read_ahead_bytes` past it for the
    /// next fetch.
    Ahead,
    /// Writes are waiting on the disk (an append queues behind every read issued before
    /// it): read what the fetch asks for in 256 KiB reads, one more in flight, and nothing
    /// past it.
    Paced,
}

/// A Kafka partition log stored as a directory of segments.
///
/// `!Send`: it belongs to one core. With [`BackendKind::Dma`] it must be opened and used inside
/// a glommio `LocalExecutor`.
pub struct Log {
    dir: PathBuf,
    backend: BackendKind,
    config: RefCell<LogConfig>,
    /// Ordered by base offset; never empty; the last one is the active segment.
    segments: RefCell<Vec<Rc<Segment>>>,
    cache: RefCell<TailCache>,
    /// Reads ahead of consumers catching up (`LogConfig::direct_cold_reads`).
    read_ahead: RefCell<ReadAhead>,
    write_lock: LocalMutex,
    /// Retired segment files kept for reuse as new segments (Dma backend).
    spares: RefCell<SpareFiles>,
    /// Whether anyone asked this log for durability (`flush`). Zeros are then written ahead in
    /// large chunks (they make fdatasync cheap); otherwise in small ones, because a large zero
    /// write queued ahead of an acks=1 append delays it (BENCHMARKS.md, changes 11 and 26).
    flushes_requested: Cell<bool>,
    /// Moving average of the bytes per append write (weight 1/8 for the newest). Zeros are
    /// written ahead only while appends are small: a large write amortizes what zeros save
    /// (a kernel worker hand-off and a size change per write), while the zeros still cost as
    /// much disk bandwidth as the data (`LogConfig::zeros_ahead_append_bytes_max`).
    append_bytes_avg: Cell<u64>,
    /// Append requests waiting for the write lock, oldest first (bounded by the number of
    /// concurrent `append` calls, which the broker bounds).
    pending: RefCell<VecDeque<Rc<AppendSlot>>>,
    flush_lock: LocalMutex,
    log_start: Cell<i64>,
    log_end: Cell<i64>,
    flushed: Cell<i64>,
    high_watermark: Cell<i64>,
    last_flush_ms: Cell<i64>,
    closed: Cell<bool>,
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn read_log_start_checkpoint(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(LOG_START_CHECKPOINT_FILE)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != "0" {
        return None;
    }
    lines.next()?.trim().parse().ok()
}

fn write_log_start_checkpoint(dir: &Path, offset: i64) -> std::io::Result<()> {
    let tmp = dir.join(format!("{LOG_START_CHECKPOINT_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("0\n{offset}\n").as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, dir.join(LOG_START_CHECKPOINT_FILE))?;
    sync_dir(dir)
}

impl Log {
    /// Open the log in `dir` (created if missing), recovering it: after a clean shutdown the
    /// persisted indexes are used; otherwise the last segment is scanned batch by batch, its
    /// torn or corrupt tail truncated and its indexes rebuilt.
    pub async fn open(
        dir: impl AsRef<Path>,
        config: LogConfig,
        backend: BackendKind,
    ) -> Result<Log, LogError> {
        let dir = dir.as_ref().to_path_buf();
        let config = config.sanitized();
        let now_ms = wall_clock_ms();
        std::fs::create_dir_all(&dir)?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        if clean {
            // Remove before anything changes, so a crash from here on forces a full recovery.
            std::fs::remove_file(&marker)?;
            sync_dir(&dir)?;
        }
        let mut bases = Vec::new();
        let mut others = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".log")
                && let (20, Ok(base)) = (stem.len(), stem.parse::<i64>())
            {
                bases.push(base);
                continue;
            }
            others.push(name);
        }
        bases.sort_unstable();
        // An empty segment before the last holds nothing and would wrongly bound its
        // predecessor's offsets (left by a roll cancelled or crashed mid-create).
        let last_base = bases.last().copied();
        bases.retain(|&base| {
            let path = dir.join(file_name(base, "log"));
            let empty = std::fs::metadata(&path).is_ok_and(|m| m.len() == 0);
            if empty && Some(base) != last_base {
                for ext in ["log", "index", "timeindex"] {
                    let _ = std::fs::remove_file(dir.join(file_name(base, ext)));
                }
                return false;
            }
            true
        });
        for name in others {
            if name.ends_with(crate::deleter::DELETED_SUFFIX) {
                // Retired by a previous process that stopped before deleting it.
                crate::deleter::schedule(dir.join(&name), Duration::ZERO);
                continue;
            }
            // Indexes without a log, and leftovers of interrupted renames, are garbage.
            let orphan_index = ["index", "timeindex"].iter().any(|ext| {
                name.strip_suffix(&format!(".{ext}"))
                    .and_then(|stem| stem.parse::<i64>().ok())
                    .is_some_and(|b| bases.binary_search(&b).is_err())
            });
            if orphan_index || name.ends_with(".tmp") {
                let _ = std::fs::remove_file(dir.join(&name));
            }
        }
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let next = bases.get(i + 1).copied();
            let is_last = next.is_none();
            // Sealed segments were fsynced with their indexes before the next one was created.
            let trust = clean || !is_last;
            let seg = Segment::open_existing(
                &dir,
                base,
                backend,
                trust,
                next,
                config.index_interval_bytes,
                now_ms,
            )
            .await?;
            segments.push(Rc::new(seg));
        }
        let checkpoint = read_log_start_checkpoint(&dir);
        if segments.is_empty() {
            let base = checkpoint.unwrap_or(0).max(0);
            segments.push(Rc::new(Segment::create(&dir, base, backend, now_ms).await?));
            sync_dir(&dir)?;
        }
        let active = segments.last().cloned().expect("segments is never empty");
        active.load_tail().await?;
        if !clean {
            active.sync().await?;
        }
        if config.preallocate {
            let _ = active.file.preallocate(config.segment_bytes).await;
        }
        let log_end = active.meta.borrow().next_offset;
        let first_base = segments[0].base_offset;
        let log_start = checkpoint
            .unwrap_or(first_base)
            .max(first_base)
            .min(log_end);
        Ok(Log {
            dir,
            backend,
            cache: RefCell::new(TailCache::new(config.tail_cache_bytes)),
            read_ahead: RefCell::new(ReadAhead::new(config.read_ahead_bytes)),
            config: RefCell::new(config),
            segments: RefCell::new(segments),
            write_lock: LocalMutex::default(),
            spares: RefCell::new(SpareFiles::default()),
            flushes_requested: Cell::new(false),
            append_bytes_avg: Cell::new(0),
            pending: RefCell::new(VecDeque::new()),
            flush_lock: LocalMutex::default(),
            log_start: Cell::new(log_start),
            log_end: Cell::new(log_end),
            flushed: Cell::new(log_end),
            high_watermark: Cell::new(log_end),
            last_flush_ms: Cell::new(now_ms),
            closed: Cell::new(false),
        })
    }

    fn active(&self) -> Rc<Segment> {
        self.segments
            .borrow()
            .last()
            .cloned()
            .expect("segments is never empty")
    }

    /// Append one or more concatenated v2 batches exactly as a Produce request carries them.
    /// All batches are validated first (all-or-nothing), then offsets starting at the log end
    /// are assigned and the bytes written. `now_ms` is the broker's clock, used for
    /// LogAppendTime, `segment.ms` and `flush.ms`.
    ///
    /// Concurrent appends are grouped: whoever holds the write lock writes every queued
    /// request (in arrival order, up to `APPEND_GROUP_BYTES_MAX`) in one I/O, so N producers
    /// on one partition cost one write, not N.
    ///
    /// An append takes its place in the queue on its first poll, before its first wait, so
    /// appends first polled in some order are written in that order (the broker keeps a
    /// connection's pipelined Produce requests in request order this way).
    pub async fn append(
        &self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let config = self.config();
        let infos = batch::validate_records(&records, config.max_message_bytes as usize)?;
        if records.len() as u64 > config.segment_bytes {
            return Err(LogError::RecordListTooLarge {
                records_bytes: records.len(),
                segment_bytes: config.segment_bytes,
            });
        }
        if self.closed.get() {
            return Err(LogError::Closed);
        }
        let record_count: i64 = infos.iter().map(|i| i.last_offset_delta as i64 + 1).sum();
        let slot = Rc::new(AppendSlot {
            request: RefCell::new(Some(AppendRequest {
                records,
                infos,
                leader_epoch,
                now_ms,
                record_count,
            })),
            result: RefCell::new(None),
        });
        self.pending.borrow_mut().push_back(slot.clone());
        // If this future is dropped before its request is taken, withdraw the request.
        let withdraw = WithdrawOnDrop {
            log: self,
            slot: &slot,
        };
        let guard = self.write_lock.lock().await;
        // Every request queued before ours is written before ours; usually a single group.
        while slot.result.borrow().is_none() && !self.pending.borrow().is_empty() {
            self.write_pending_group(&config).await;
        }
        drop(guard);
        drop(withdraw);
        let result = slot.result.borrow_mut().take();
        let info = result.unwrap_or(Err(LogError::Closed))?;
        let unflushed = (self.log_end.get() - self.flushed.get()) as u64;
        let flush_due_by_time = config.flush_ms != u64::MAX
            && now_ms - self.last_flush_ms.get() >= config.flush_ms as i64;
        if unflushed >= config.flush_messages || flush_due_by_time {
            self.flush().await?;
        }
        Ok(info)
    }

    /// Write the oldest queued append requests as one group. Caller holds the write lock.
    async fn write_pending_group(&self, config: &LogConfig) {
        let Some(first) = self.pending.borrow_mut().pop_front() else {
            return;
        };
        let Some(first_request) = first.request.borrow_mut().take() else {
            return;
        };
        let first_last_offset = self.log_end.get() + first_request.record_count - 1;
        let first_bytes = first_request.records.len() as u64;
        let first_now_ms = first_request.now_ms;
        // From here on the taken requests belong to the guard: if this future is cancelled
        // mid-I/O, they go back to the queue for the next lock holder.
        let mut group = GroupGuard {
            log: self,
            members: vec![(first, first_request)],
        };
        if self.closed.get() {
            group.finish(|_| Err(LogError::Closed));
            return;
        }
        if self.should_roll(first_bytes, first_last_offset, first_now_ms, config)
            && let Err(e) = self.roll(first_now_ms, config).await
        {
            group.finish(|_| Err(e.duplicate()));
            return;
        }
        // Gather followers that fit in the active segment without another roll.
        {
            let active = self.active();
            let m = active.meta.borrow();
            let mut bytes = m.size_bytes + first_bytes;
            let mut last_offset = first_last_offset;
            let index_room = (config.segment_index_bytes as usize / crate::index::TIME_ENTRY_BYTES)
                .saturating_sub(m.index.entries.len().max(m.time_index.entries.len()) + 1);
            let mut pending = self.pending.borrow_mut();
            while let Some(next) = pending.front() {
                let (len, count) = match next.request.borrow().as_ref() {
                    Some(r) => (r.records.len() as u64, r.record_count),
                    None => (0, 0),
                };
                let group_bytes = bytes - m.size_bytes + len;
                let fits = bytes + len <= config.segment_bytes
                    && group_bytes <= APPEND_GROUP_BYTES_MAX
                    && (group_bytes / config.index_interval_bytes as u64 + 1) as usize
                        <= index_room
                    && last_offset + count - active.base_offset <= i32::MAX as i64;
                if !fits {
                    break;
                }
                let Some(slot) = pending.pop_front() else {
                    break;
                };
                let Some(request) = slot.request.borrow_mut().take() else {
                    continue;
                };
                bytes += len;
                last_offset += count;
                group.members.push((slot, request));
            }
        }
        let log_append_time = config.timestamp_type == TimestampType::LogAppendTime;
        let mut offset = self.log_end.get();
        let mut parts = Vec::with_capacity(group.members.len());
        for (_, r) in &group.members {
            parts.push(AppendPart {
                records: &r.records,
                infos: &r.infos,
                first_offset: offset,
                leader_epoch: r.leader_epoch,
                log_append_time_ms: log_append_time.then_some(r.now_ms),
            });
            offset += r.record_count;
        }
        let now_ms = group
            .members
            .iter()
            .map(|(_, r)| r.now_ms)
            .max()
            .unwrap_or(0);
        let zeros = self.zeros_wanted(config, parts.iter().map(|p| p.records.len() as u64).sum());
        let written = self
            .active()
            .append(
                &self.cache,
                &parts,
                config.index_interval_bytes,
                now_ms,
                zeros,
            )
            .await;
        drop(parts);
        match written {
            Ok(()) => {
                let mut base_offset = self.log_end.get();
                self.log_end.set(offset);
                let log_start = self.log_start.get();
                group.finish(|r| {
                    let info = AppendInfo {
                        base_offset,
                        last_offset: base_offset + r.record_count - 1,
                        log_append_time_ms: if log_append_time { r.now_ms } else { -1 },
                        log_start_offset: log_start,
                        record_count: r.record_count as u32,
                    };
                    base_offset += r.record_count;
                    Ok(info)
                });
            }
            Err(e) => group.finish(|_| Err(e.duplicate())),
        }
    }

    /// Whether and how zeros go ahead of the active segment's appends, given this append's
    /// size (see `append_bytes_avg`): while appends average under
    /// `zeros_ahead_append_bytes_max`, in chunks of up to 4 MiB for logs that are flushed and
    /// 256 KiB for the others; above it, blocks allocated ahead instead (`allocate_ahead`,
    /// `zero_ahead.rs`).
    fn zeros_wanted(&self, config: &LogConfig, append_bytes: u64) -> ZeroPlan {
        let before = self.append_bytes_avg.get();
        let avg = if before == 0 {
            append_bytes
        } else {
            before - before / 8 + append_bytes / 8
        };
        self.append_bytes_avg.set(avg);
        let max = config.zeros_ahead_append_bytes_max;
        let small = avg < max;
        if before != 0 && (before < max) != small {
            tracing::debug!(dir = %self.dir.display(), avg_append_bytes = avg, zeros_ahead = small, "zeros ahead switched");
        }
        if !small && config.allocate_ahead {
            return ZeroPlan {
                limit_bytes: config.segment_bytes,
                chunk_max_bytes: 0,
                allocate_chunk_max_bytes: ALLOCATE_CHUNK_BYTES_MAX,
            };
        }
        if !(config.zeros_ahead && small) {
            return ZeroPlan::NONE;
        }
        ZeroPlan {
            limit_bytes: config.segment_bytes,
            chunk_max_bytes: if self.flushes_requested.get() {
                ZERO_CHUNK_BYTES_MAX
            } else {
                ZERO_CHUNK_BYTES_UNFLUSHED_MAX
            },
            allocate_chunk_max_bytes: 0,
        }
    }

    fn should_roll(
        &self,
        append_bytes: u64,
        last_offset: i64,
        now_ms: i64,
        config: &LogConfig,
    ) -> bool {
        let active = self.active();
        let m = active.meta.borrow();
        if m.size_bytes == 0 {
            return false;
        }
        let index_max = config.segment_index_bytes as usize;
        m.size_bytes + append_bytes > config.segment_bytes
            || m.roll_base_ms
                .is_some_and(|t| now_ms - t >= config.segment_ms as i64)
            || (m.index.entries.len() + 1) * crate::index::OFFSET_ENTRY_BYTES > index_max
            || (m.time_index.entries.len() + 1) * crate::index::TIME_ENTRY_BYTES > index_max
            || last_offset - active.base_offset > i32::MAX as i64
    }

    /// Seal the active segment and start a new one at the log end. Caller holds the write lock.
    async fn roll(&self, now_ms: i64, config: &LogConfig) -> Result<(), LogError> {
        let active = self.active();
        if active.meta.borrow().size_bytes == 0 {
            return Ok(());
        }
        active.seal().await?;
        let base = self.log_end.get();
        let spare = self.spares.borrow_mut().take(std::time::Instant::now());
        let seg = match spare {
            Some(spare) => {
                match Segment::recycle(&self.dir, base, self.backend, now_ms, &spare).await {
                    Ok(seg) => seg,
                    Err(e) => {
                        tracing::warn!(spare = %spare.log.display(), error = %e, "could not reuse a retired segment file");
                        spare.delete(Duration::ZERO);
                        Segment::create(&self.dir, base, self.backend, now_ms).await?
                    }
                }
            }
            None => Segment::create(&self.dir, base, self.backend, now_ms).await?,
        };
        let seg = Rc::new(seg);
        // In the list before the next await: a cancelled roll never leaves an unlisted file
        // behind (an empty one left by a cancelled create is removed at open).
        self.segments.borrow_mut().push(seg.clone());
        // Every sealed segment was fsynced when it was sealed.
        self.flushed.set(self.flushed.get().max(base));
        if config.preallocate
            && let Err(e) = seg.file.preallocate(config.segment_bytes).await
        {
            tracing::warn!(error = %e, "segment preallocation failed");
        }
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Whole batches starting with the one containing `offset`, up to `max_bytes` (at least one
    /// whole batch if any exists below `max_offset`, as KIP-74), never a batch whose base offset
    /// is >= `max_offset` (the broker passes the high watermark). Data comes from one segment
    /// and at most 8 MiB per call (plus a larger first batch). Reading at the log end
    /// returns no data; below the log start or past the end is `OffsetOutOfRange`.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<ReadResult, LogError> {
        let limit = self.read_limit(offset, max_offset)?;
        let data = self
            .first_found(offset, limit, async |seg| {
                self.read_segment(&seg, offset, max_bytes, limit).await
            })
            .await?
            .unwrap_or_default();
        Ok(ReadResult {
            data,
            high_watermark: self.high_watermark.get(),
            log_start_offset: self.log_start.get(),
            log_end_offset: self.log_end.get(),
        })
    }

    /// Like [`Log::read`], but data that is no longer in the tail cache comes back as a
    /// [`FileRange`] of the segment file instead of being read, so the caller can send it with
    /// `sendfile` (no user-space copy, no memory held per response). Only whole sealed data
    /// is handed out this way: ranges below the high watermark, and with the Dma backend,
    /// in a sealed segment or well below the active segment's write position.
    ///
    /// With `LogConfig::direct_cold_reads` (Dma backend), such data is read instead, with
    /// O_DIRECT, and reads are started ahead of the next fetch ([`ColdReadPace::Ahead`]).
    pub async fn read_for_send(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<SendRead, LogError> {
        self.read_for_send_paced(offset, max_bytes, max_offset, ColdReadPace::Ahead)
            .await
    }

    /// [`Log::read_for_send`], with cold reads using the disk as `pace` says (with
    /// `LogConfig::direct_cold_reads`; otherwise `pace` changes nothing).
    pub async fn read_for_send_paced(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        pace: ColdReadPace,
    ) -> Result<SendRead, LogError> {
        self.read_for_send_bounded(offset, max_bytes, max_offset, pace, usize::MAX)
            .await
    }

    /// [`Log::read_for_send_paced`], reading at most `disk_bytes_max` from disk into memory
    /// (direct cold reads), but always the first batch whole (KIP-74), so a caller holding a
    /// memory budget for data read for responses still lets every consumer progress. Data
    /// from the tail cache or sent as a file range is not bounded by it.
    pub async fn read_for_send_bounded(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        pace: ColdReadPace,
        disk_bytes_max: usize,
    ) -> Result<SendRead, LogError> {
        let limit = self.read_limit(offset, max_offset)?;
        let (data, read_from_disk) = self
            .first_found(offset, limit, async |seg| {
                self.send_segment(&seg, offset, max_bytes, limit, pace, disk_bytes_max)
                    .await
            })
            .await?
            .unwrap_or_default();
        Ok(SendRead {
            data,
            high_watermark: self.high_watermark.get(),
            log_start_offset: self.log_start.get(),
            log_end_offset: self.log_end.get(),
            read_from_disk,
        })
    }

    /// What `read_for_send_bounded` sends from `seg`, and whether it was read from disk
    /// into memory for it.
    async fn send_segment(
        &self,
        seg: &Rc<Segment>,
        offset: i64,
        max_bytes: usize,
        limit: i64,
        pace: ColdReadPace,
        disk_bytes_max: usize,
    ) -> Result<Option<(SendData, bool)>, LogError> {
        let (end, next_offset) = {
            let m = seg.meta.borrow();
            (m.size_bytes, m.next_offset)
        };
        let is_active = Rc::ptr_eq(seg, &self.active());
        let sendable_end = match (is_active, self.backend) {
            (true, BackendKind::Dma) => end.saturating_sub(SEND_FILE_MARGIN_BYTES),
            _ => end,
        };
        let interval = self.config.borrow().index_interval_bytes as usize;
        let mut window = Window::new(2 * interval);
        let direct = self.backend == BackendKind::Dma && self.config.borrow().direct_cold_reads;
        let continued = match direct {
            true => self.continuation(seg, offset, end),
            false => None,
        };
        let located = match continued {
            Some(found) => Some(found),
            None => seg.locate(&self.cache, &mut window, offset, end).await?,
        };
        let Some((position, first)) = located else {
            return Ok(None);
        };
        let want = (max_bytes.min(READ_WINDOW_BYTES_MAX) as u64)
            .max(first.total_bytes)
            .min(end - position);
        // The tail cache holds it: its own buffers go out, whole batches below `limit`.
        let cached = self.cache.borrow().holds_from(seg.base_offset, position);
        if cached && let Some(data) = self.send_from_cache(seg, position, &first, want, limit) {
            return Ok(Some((data, false)));
        }
        if !cached && direct {
            let want = want.min(disk_bytes_max as u64).max(first.total_bytes);
            let sent = self
                .send_direct(seg, position, &first, want, end, limit, pace)
                .await?;
            if let Some(data) = sent {
                return Ok(Some((data, true)));
            }
            return Ok(self
                .read_segment(seg, offset, max_bytes.min(disk_bytes_max), limit)
                .await?
                .map(|data| (SendData::Memory(data), true)));
        }
        // Data up to `limit` only: a segment reaching past it is read (rare: the high
        // watermark trails the log end only while an append completes). So is data not yet
        // safe to send from the file (see `SEND_FILE_MARGIN_BYTES`).
        if cached || next_offset > limit || position + first.total_bytes > sendable_end {
            let max_bytes = match cached {
                true => max_bytes,
                false => max_bytes.min(disk_bytes_max),
            };
            return Ok(self
                .read_segment(seg, offset, max_bytes, limit)
                .await?
                .map(|data| (SendData::Memory(data), !cached)));
        }
        // Cut at a batch boundary known without reading the data: the segment end, or the
        // start of an indexed batch; the first batch always goes whole (KIP-74).
        let first_end = position + first.total_bytes;
        let cut = if position + want >= sendable_end {
            sendable_end.min(end)
        } else {
            position + want
        };
        let cut = if cut == end {
            end
        } else {
            seg.meta
                .borrow()
                .index
                .batch_start_at_or_below(cut)
                .filter(|&p| p > first_end)
                .unwrap_or(first_end)
        };
        let file = match seg.send_file() {
            Ok(file) => file,
            // Retired (renamed) while this read waited on the disk: its O_DIRECT descriptor
            // is still open, so read through that instead.
            Err(_) => {
                return Ok(self
                    .read_segment(seg, offset, max_bytes.min(disk_bytes_max), limit)
                    .await?
                    .map(|data| (SendData::Memory(data), true)));
            }
        };
        let len = (cut - position) as usize;
        // Within what may be sent from the file (`SEND_FILE_MARGIN_BYTES`): a buffered read
        // past it could cache a block that an append is about to rewrite.
        let read_ahead_end = sendable_end.min(cut + COLD_READ_AHEAD_BYTES).max(cut);
        Ok(Some((
            SendData::File(FileRange {
                file,
                position,
                len,
                read_ahead_bytes: (read_ahead_end - cut) as usize,
            }),
            false,
        )))
    }

    /// Walks the segments from the one holding `offset` while they start below `limit`, and
    /// returns the first thing `per_segment` finds (a segment past its data yields `None`).
    async fn first_found<T>(
        &self,
        offset: i64,
        limit: i64,
        mut per_segment: impl AsyncFnMut(Rc<Segment>) -> Result<Option<T>, LogError>,
    ) -> Result<Option<T>, LogError> {
        let mut next = self.segment_for(offset);
        while let Some(seg) = next {
            if offset >= limit || seg.base_offset >= limit {
                break;
            }
            let base = seg.base_offset;
            if let Some(found) = per_segment(seg).await? {
                return Ok(Some(found));
            }
            next = self.segment_after(base);
        }
        Ok(None)
    }

    /// The offset a read from `offset` stops before: `max_offset`, at most the log end.
    /// `OffsetOutOfRange` below the log start or past the log end.
    fn read_limit(&self, offset: i64, max_offset: i64) -> Result<i64, LogError> {
        let log_start = self.log_start.get();
        let log_end = self.log_end.get();
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        Ok(max_offset.min(log_end))
    }

    /// The segment that would contain `offset` (the first one if `offset` precedes all).
    fn segment_for(&self, offset: i64) -> Option<Rc<Segment>> {
        let segs = self.segments.borrow();
        let i = segs
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        segs.get(i).cloned()
    }

    fn segment_after(&self, base: i64) -> Option<Rc<Segment>> {
        let segs = self.segments.borrow();
        let i = segs.partition_point(|s| s.base_offset <= base);
        segs.get(i).cloned()
    }

    /// Whole batches from `position` (where `first` starts) as slices of the tail cache's
    /// buffers, no copy: at least the first batch, then more while under `want` bytes and
    /// below offset `limit`. `None` if the cache cannot serve it that way (the caller then
    /// reads, which copies), e.g. when its data no longer starts with `first`.
    fn send_from_cache(
        &self,
        seg: &Segment,
        position: u64,
        first: &BatchFacts,
        want: u64,
        limit: i64,
    ) -> Option<SendData> {
        if first.base_offset >= limit {
            return Some(SendData::default());
        }
        let slices = self
            .cache
            .borrow()
            .slices(seg.base_offset, position, want as usize)?;
        let cut = whole_batches(slices, first.base_offset, want, limit);
        if cut.is_none() {
            tracing::warn!(
                segment = seg.base_offset,
                position,
                "tail cache and offset index disagree; reading instead"
            );
        }
        cut.map(|(data, _, _)| data)
    }

    /// Where batch `offset` starts in `seg` and its facts, if a read ahead starts with it
    /// (the rest of the read that served the previous fetch).
    fn continuation(&self, seg: &Segment, offset: i64, end: u64) -> Option<(u64, BatchFacts)> {
        let (position, bytes) = self
            .read_ahead
            .borrow()
            .starting_with(seg.base_offset, offset)?;
        let facts = batch::BatchHeader::view(&bytes).and_then(BatchFacts::from_header)?;
        (facts.base_offset == offset && position + facts.total_bytes <= end)
            .then_some((position, facts))
    }

    /// Sends cold data read with O_DIRECT: from `position` (where `first` starts), at most
    /// `want` bytes of whole batches below offset `limit`, from reads started ahead by earlier
    /// fetches where there are some, the rest read now. Then starts reads past it for the
    /// next fetch, as `pace` allows. `None` if the data read does not start with `first` (the
    /// caller then reads the usual way, which reports a corrupt log).
    #[allow(clippy::too_many_arguments)]
    async fn send_direct(
        &self,
        seg: &Rc<Segment>,
        position: u64,
        first: &BatchFacts,
        want: u64,
        end: u64,
        limit: i64,
        pace: ColdReadPace,
    ) -> Result<Option<SendData>, LogError> {
        if first.base_offset >= limit {
            return Ok(Some(SendData::default()));
        }
        let (step, in_flight_max) = match pace {
            ColdReadPace::Ahead => (READ_AHEAD_CHUNK_BYTES, usize::MAX),
            ColdReadPace::Paced => (PACED_CHUNK_BYTES, 2),
        };
        // What covers [position, position + want), each from where the one before ends:
        // reads already started (which may begin earlier), or reads to start. Those end at a
        // `step` boundary (so later reads ahead are whole steps), but not much past `stop`:
        // a fetch of many partitions with small limits must not read a step for each.
        let stop = position + want;
        let chunk_end = |at: u64| {
            ((at / step + 1) * step)
                .min(end)
                .min(stop.next_multiple_of(DEMAND_READ_ALIGN_BYTES))
        };
        let mut planned: Vec<(u64, Planned)> = Vec::new();
        let mut at = position;
        while at < stop {
            let (next, plan) = match self.read_ahead.borrow_mut().take(seg.base_offset, at) {
                Some(chunk) => (chunk.position + chunk.len as u64, Planned::Started(chunk)),
                None => (
                    chunk_end(at),
                    Planned::Missing((chunk_end(at) - at) as usize),
                ),
            };
            planned.push((at, plan));
            at = next;
        }
        // (where this fetch's bytes start in the chunk, the chunk's position, its bytes)
        let mut used: Vec<(u64, u64, Bytes)> = Vec::with_capacity(planned.len());
        for i in 0..planned.len() {
            // Start the missing reads up to `in_flight_max` from the one awaited.
            for (from, plan) in planned.iter_mut().skip(i).take(in_flight_max) {
                if let Planned::Missing(len) = *plan {
                    *plan = Planned::Started(Chunk::start(seg, *from, len));
                }
            }
            let (from, plan) = &mut planned[i];
            let Planned::Started(chunk) = std::mem::replace(plan, Planned::Taken) else {
                break;
            };
            let chunk_position = chunk.position;
            let expected = chunk.len;
            let bytes = chunk.bytes().await?;
            let short = bytes.len() < expected;
            used.push((*from, chunk_position, bytes));
            if short {
                break;
            }
        }
        drop(planned);
        let pieces: Vec<Bytes> = used
            .iter()
            .map(|(from, at, bytes)| {
                let start = ((from - at) as usize).min(bytes.len());
                let end = (stop.saturating_sub(*at) as usize).clamp(start, bytes.len());
                bytes.slice(start..end)
            })
            .filter(|b| !b.is_empty())
            .collect();
        let Some((data, taken, next_offset)) =
            whole_batches(pieces, first.base_offset, want, limit)
        else {
            return Ok(None);
        };
        // Keep what was read past the batches sent: the next fetch starts there.
        let sent_end = position + taken as u64;
        {
            let mut ahead = self.read_ahead.borrow_mut();
            for (_, at, bytes) in used {
                let chunk_end = at + bytes.len() as u64;
                if chunk_end > sent_end {
                    let from = sent_end.saturating_sub(at) as usize;
                    let first_batch = (at + from as u64 == sent_end).then_some(next_offset);
                    ahead.insert(Chunk::done(
                        seg.base_offset,
                        at + from as u64,
                        bytes.slice(from..),
                        first_batch,
                    ));
                }
            }
        }
        if pace == ColdReadPace::Ahead {
            self.start_reads_ahead(seg, sent_end, end, step);
        }
        Ok(Some(data))
    }

    /// Starts reads of `seg` from `from` on, in `step`s, as far as the read-ahead budget has
    /// room and the segment has data (`end`).
    fn start_reads_ahead(&self, seg: &Rc<Segment>, from: u64, end: u64, step: u64) {
        let mut ahead = self.read_ahead.borrow_mut();
        let mut at = ahead.covered_to(seg.base_offset, from);
        while at < end {
            let len = (((at / step + 1) * step).min(end) - at) as usize;
            if !ahead.has_room(len) {
                break;
            }
            ahead.insert(Chunk::start(seg, at, len));
            at = ahead.covered_to(seg.base_offset, at);
        }
    }

    async fn read_segment(
        &self,
        seg: &Segment,
        offset: i64,
        max_bytes: usize,
        limit: i64,
    ) -> Result<Option<Bytes>, LogError> {
        let end = seg.meta.borrow().size_bytes;
        // One read usually covers both the header walk from the index entry and the data.
        let interval = self.config.borrow().index_interval_bytes as usize;
        let mut window = Window::new(max_bytes.min(READ_WINDOW_BYTES_MAX) + 2 * interval);
        let Some((position, first)) = seg.locate(&self.cache, &mut window, offset, end).await?
        else {
            return Ok(None);
        };
        if first.base_offset >= limit {
            return Ok(Some(Bytes::new()));
        }
        // Bounded per call: a consumer asking for more simply fetches again.
        let want = (max_bytes.min(READ_WINDOW_BYTES_MAX) as u64)
            .max(first.total_bytes)
            .min(end - position) as usize;
        // What the header walk already read is enough if it holds the first batch whole; a
        // read then returns up to `position - window start` (< one index interval and one
        // batch) less than it could, which the next fetch picks up.
        let buf = match window.get(position, first.total_bytes as usize, want) {
            Some(buf) => buf,
            None => seg.read_range(&self.cache, position, want).await?,
        };
        let mut taken = 0usize;
        for (header, bytes) in batch::BatchIter::new(&buf) {
            if header.base_offset.get() >= limit || (taken > 0 && taken + bytes.len() > want) {
                break;
            }
            taken += bytes.len();
        }
        if taken == 0 {
            return Err(LogError::CorruptLog {
                segment_base: seg.base_offset,
                position,
                reason: "unreadable batch",
            });
        }
        Ok(Some(buf.slice(..taken)))
    }

    /// Make everything appended so far durable. Concurrent callers share one fdatasync (group
    /// commit): whoever waits for the flush lock finds its data already covered. Returns the
    /// flushed offset (exclusive).
    pub async fn flush(&self) -> Result<i64, LogError> {
        self.flushes_requested.set(true);
        let target = self.log_end.get();
        if self.flushed.get() >= target {
            return Ok(self.flushed.get());
        }
        let _guard = self.flush_lock.lock().await;
        if self.flushed.get() >= target {
            return Ok(self.flushed.get());
        }
        // Covers everything fully written now, including appends that arrived while waiting.
        let end = self.log_end.get();
        let dirty: Vec<Rc<Segment>> = self
            .segments
            .borrow()
            .iter()
            .filter(|s| s.is_dirty())
            .cloned()
            .collect();
        for seg in dirty {
            seg.sync().await?;
        }
        self.flushed
            .set(self.flushed.get().max(end).min(self.log_end.get()));
        self.last_flush_ms.set(wall_clock_ms());
        Ok(self.flushed.get())
    }

    /// First offset readable (advanced by retention and `delete_records_before`).
    pub fn log_start_offset(&self) -> i64 {
        self.log_start.get()
    }

    /// Next offset to assign.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end.get()
    }

    /// Offsets below this are durable (fdatasynced).
    pub fn flushed_offset(&self) -> i64 {
        self.flushed.get()
    }

    /// High watermark (set by the broker; initialised to the log end at open).
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.get()
    }

    /// Advance the high watermark to `hw`, clamped to `[log_start, log_end]`. It never moves
    /// backwards here (only `truncate_to` lowers it), so concurrent produce tasks finishing
    /// out of order cannot make consumers see it shrink.
    pub fn set_high_watermark(&self, hw: i64) {
        let hw = hw.clamp(self.log_start.get(), self.log_end.get());
        self.high_watermark.set(self.high_watermark.get().max(hw));
    }

    /// For ListOffsets by timestamp: the first record with timestamp >= `timestamp_ms`, as
    /// (offset, timestamp). Record-level for uncompressed batches; for compressed ones the
    /// batch's base offset and max timestamp (the records are not decompressed).
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let candidates: Vec<Rc<Segment>> = {
            let segs = self.segments.borrow();
            segs.iter()
                .filter(|s| {
                    let m = s.meta.borrow();
                    m.max_timestamp >= timestamp_ms && m.next_offset > self.log_start.get()
                })
                .cloned()
                .collect()
        };
        for seg in candidates {
            let end = seg.meta.borrow().size_bytes;
            let Some((position, facts)) =
                seg.locate_timestamp(&self.cache, timestamp_ms, end).await?
            else {
                continue;
            };
            let mut found = (facts.base_offset, facts.max_timestamp);
            if !facts.log_append_time && !facts.compressed {
                let batch = seg
                    .read_range(&self.cache, position, facts.total_bytes as usize)
                    .await?;
                if let Some((delta, ts)) = batch::find_record_by_timestamp(&batch, timestamp_ms) {
                    found = (facts.base_offset + delta as i64, ts);
                }
            }
            return Ok(Some((found.0.max(self.log_start.get()), found.1)));
        }
        Ok(None)
    }

    /// Largest timestamp in the log and the offset of its first record (ListOffsets
    /// MAX_TIMESTAMP); `None` for an empty log.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let segs = self.segments.borrow();
        let mut best: Option<(i64, i64)> = None;
        for s in segs.iter() {
            let m = s.meta.borrow();
            if m.max_timestamp >= 0 && best.is_none_or(|(ts, _)| m.max_timestamp > ts) {
                best = Some((m.max_timestamp, m.offset_of_max_timestamp));
            }
        }
        best
    }

    /// DeleteRecords: advance the log start to `offset` (-1 = the high watermark) and delete
    /// segments entirely below it. `offset` above the high watermark is `OffsetOutOfRange`.
    /// Returns the new log start offset (the low watermark).
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let removed = {
            let _guard = self.write_lock.lock().await;
            let hw = self.high_watermark.get();
            let target = if offset == -1 { hw } else { offset };
            if target < 0 || target > hw {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start: self.log_start.get(),
                    log_end: hw,
                });
            }
            if target > self.log_start.get() {
                write_log_start_checkpoint(&self.dir, target)?;
                self.log_start.set(target);
            }
            self.remove_leading_segments(|segs, i| segs[i + 1].base_offset <= target)
        };
        self.delete_segment_files(removed);
        Ok(self.log_start.get())
    }

    /// Take leading non-active segments while `pred(segments, index)` holds; advance the log
    /// start past them. Caller holds the write lock.
    fn remove_leading_segments(
        &self,
        mut pred: impl FnMut(&[Rc<Segment>], usize) -> bool,
    ) -> Vec<Rc<Segment>> {
        let mut segs = self.segments.borrow_mut();
        let mut n = 0;
        while n + 1 < segs.len() && pred(&segs, n) {
            n += 1;
        }
        let removed: Vec<Rc<Segment>> = segs.drain(..n).collect();
        if let Some(first) = segs.first() {
            self.log_start
                .set(self.log_start.get().max(first.base_offset));
            self.cache
                .borrow_mut()
                .drop_segments_below(first.base_offset);
            self.read_ahead
                .borrow_mut()
                .drop_segments_below(first.base_offset);
        }
        removed
    }

    fn delete_segment_files(&self, removed: Vec<Rc<Segment>>) {
        // Readers holding an Rc keep reading through their open descriptors, and the delay
        // gives them time to finish before the blocks are freed.
        let config = self.config();
        let delay = Duration::from_millis(config.file_delete_delay_ms);
        let recycle = config.recycle_segments && self.backend == BackendKind::Dma;
        let mut spares = self.spares.borrow_mut();
        for seg in removed {
            if !(recycle && spares.keep(&seg, delay)) {
                seg.retire_files(delay);
            }
        }
        spares.trim(std::time::Instant::now());
    }

    /// Drop every offset >= `offset` (for replication). Truncation happens at a batch
    /// boundary: a batch containing `offset` is removed whole, so the log end may end up
    /// below `offset`. Truncating at or below the log start empties the log and restarts
    /// it at `offset`. If it fails or is cancelled midway, the log refuses writes (`Closed`)
    /// until reopened, which recovers it.
    pub async fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        let _guard = self.write_lock.lock().await;
        if offset >= self.log_end.get() {
            return Ok(());
        }
        let now_ms = wall_clock_ms();
        let config = self.config();
        let offset = offset.max(0);
        // Truncation rewrites in-memory state across several awaits. If it is cancelled or
        // fails midway, the log refuses further writes (reopen it to recover) rather than
        // append after a half-rebuilt segment.
        let poison = PoisonOnDrop {
            closed: &self.closed,
            armed: true,
        };
        self.cache.borrow_mut().clear();
        self.read_ahead.borrow_mut().clear();
        // A spare's old offsets could continue the truncated log's (see `recycle.rs`).
        self.spares.borrow_mut().clear();
        let removed: Vec<Rc<Segment>> = {
            let mut segs = self.segments.borrow_mut();
            let keep = if offset <= self.log_start.get() {
                0
            } else {
                segs.partition_point(|s| s.base_offset < offset)
            };
            segs.drain(keep..).rev().collect()
        };
        // Newest first, so a crash midway leaves a prefix of the old log, never a hole.
        let delay = Duration::from_millis(config.file_delete_delay_ms);
        for seg in &removed {
            seg.retire_files(delay);
        }
        let remaining = self.segments.borrow().last().cloned();
        match remaining {
            Some(active) => {
                let end = active.meta.borrow().size_bytes;
                let cut = active
                    .locate(&self.cache, &mut Window::new(0), offset, end)
                    .await?
                    .map_or(end, |(pos, _)| pos);
                active
                    .truncate_at(cut, config.index_interval_bytes, now_ms)
                    .await?;
                self.log_end.set(active.meta.borrow().next_offset);
            }
            None => {
                let seg = Segment::create(&self.dir, offset, self.backend, now_ms).await?;
                self.segments.borrow_mut().push(Rc::new(seg));
                write_log_start_checkpoint(&self.dir, offset)?;
                self.log_start.set(offset);
                self.log_end.set(offset);
            }
        }
        sync_dir(&self.dir)?;
        let end = self.log_end.get();
        self.log_start.set(self.log_start.get().min(end));
        self.flushed.set(self.flushed.get().min(end));
        self.high_watermark.set(self.high_watermark.get().min(end));
        poison.disarm();
        Ok(())
    }

    /// Periodic housekeeping (the broker calls it, e.g. every few seconds): roll by
    /// `segment.ms`, delete segments by `retention.ms` and `retention.bytes`, and flush by
    /// `flush.ms`. Only segments entirely below the high watermark are deleted. File deletion
    /// happens after the write lock is released, so appends are not stalled by it.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<(), LogError> {
        // Periodic, so buffers lent to other cores come home even when nothing is appended.
        crate::lent::release_returned();
        let config = self.config();
        let removed = {
            let _guard = self.write_lock.lock().await;
            if self.closed.get() {
                return Err(LogError::Closed);
            }
            let hw = self.high_watermark.get();
            let cutoff =
                (config.retention_ms >= 0).then(|| now_ms.saturating_sub(config.retention_ms));
            let (active_due, active_expired) = {
                let active = self.active();
                let m = active.meta.borrow();
                let due = m.size_bytes > 0
                    && m.roll_base_ms
                        .is_some_and(|t| now_ms - t >= config.segment_ms as i64);
                let expired = m.size_bytes > 0
                    && cutoff.is_some_and(|c| m.segment_time_ms() < c)
                    && self.log_end.get() <= hw
                    && self
                        .segments
                        .borrow()
                        .iter()
                        .all(|s| cutoff.is_some_and(|c| s.meta.borrow().segment_time_ms() < c));
                (due, expired)
            };
            if active_due || active_expired {
                // An expired active segment is rolled so that it can be deleted (as Kafka does).
                self.roll(now_ms, &config).await?;
            }
            let deletable = |segs: &[Rc<Segment>], i: usize| segs[i + 1].base_offset <= hw;
            let mut removed = self.remove_leading_segments(|segs, i| {
                deletable(segs, i)
                    && cutoff.is_some_and(|c| segs[i].meta.borrow().segment_time_ms() < c)
            });
            if config.retention_bytes >= 0 {
                let mut excess = self.size_bytes() as i64 - config.retention_bytes;
                removed.extend(self.remove_leading_segments(|segs, i| {
                    let size = segs[i].meta.borrow().size_bytes as i64;
                    if deletable(segs, i) && excess - size >= 0 {
                        excess -= size;
                        true
                    } else {
                        false
                    }
                }));
            }
            removed
        };
        self.delete_segment_files(removed);
        self.spares.borrow_mut().trim(std::time::Instant::now());
        if config.flush_ms != u64::MAX
            && now_ms - self.last_flush_ms.get() >= config.flush_ms as i64
        {
            self.flush().await?;
        }
        Ok(())
    }

    /// Change the configuration; takes effect on the next append / retention pass.
    pub fn set_config(&self, config: LogConfig) {
        let config = config.sanitized();
        self.cache
            .borrow_mut()
            .set_max_bytes(config.tail_cache_bytes);
        self.read_ahead
            .borrow_mut()
            .set_max_bytes(config.read_ahead_bytes);
        *self.config.borrow_mut() = config;
    }

    /// The current configuration.
    pub fn config(&self) -> LogConfig {
        self.config.borrow().clone()
    }

    /// Flush, seal the active segment's indexes and write the clean-shutdown marker, so the
    /// next open skips the recovery scan. Appends fail with `Closed` afterwards; reads work.
    pub async fn close(&self) -> Result<(), LogError> {
        let _guard = self.write_lock.lock().await;
        if self.closed.get() {
            return Ok(());
        }
        self.flush().await?;
        self.active().seal().await?;
        let f = std::fs::File::create(self.dir.join(CLEAN_SHUTDOWN_FILE))?;
        f.sync_all()?;
        sync_dir(&self.dir)?;
        self.closed.set(true);
        Ok(())
    }

    /// Remove every file of the log and its directory.
    pub async fn delete(self) -> Result<(), LogError> {
        let _guard = self.write_lock.lock().await;
        self.closed.set(true);
        self.cache.borrow_mut().clear();
        self.read_ahead.borrow_mut().clear();
        self.spares.borrow_mut().forget();
        // Renamed away at once (a topic re-created with this name starts empty), deleted in
        // the background (freeing blocks would stall this thread).
        crate::deleter::retire_dir(&self.dir)?;
        Ok(())
    }

    /// Retired segment files kept for reuse as new segments (ready or still in their delay).
    pub fn spare_file_count(&self) -> usize {
        self.spares.borrow().count()
    }

    /// Bytes of stored batches over all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments
            .borrow()
            .iter()
            .map(|s| s.meta.borrow().size_bytes)
            .sum()
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segments (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.segments.borrow().len()
    }

    /// Appends written as two writes (into blocks allocated ahead) in the segments this log
    /// holds (for tests and tools).
    pub fn split_appends(&self) -> u64 {
        self.segments
            .borrow()
            .iter()
            .map(|s| s.zero.split_appends())
            .sum()
    }

    /// Base offsets of the segments, oldest first (for tests and tools).
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments
            .borrow()
            .iter()
            .map(|s| s.base_offset)
            .collect()
    }
}

/// The whole batches at the start of `pieces` (consecutive bytes of a segment, where a batch
/// may run from one piece into the next): the first one whole, then more while under `want`
/// bytes and below offset `limit`; with the bytes they take and the offset after the last.
/// `None` if the first batch is not `first_base` or not whole (the data and the offset index
/// disagree).
fn whole_batches(
    pieces: Vec<Bytes>,
    first_base: i64,
    want: u64,
    limit: i64,
) -> Option<(SendData, usize, i64)> {
    let mut taken = 0usize;
    let mut next_offset = first_base;
    for (header, len) in batch::PiecesBatchIter::new(&pieces) {
        if taken == 0 && header.base_offset.get() != first_base {
            return None;
        }
        if header.base_offset.get() >= limit || (taken > 0 && (taken + len) as u64 > want) {
            break;
        }
        taken += len;
        next_offset = header.last_offset() + 1;
    }
    let total = taken;
    let mut out = Vec::with_capacity(pieces.len());
    for piece in pieces {
        if taken == 0 {
            break;
        }
        let len = piece.len().min(taken);
        out.push(piece.slice(..len));
        taken -= len;
    }
    match out.len() {
        0 => None,
        1 => out.pop().map(|b| (SendData::Memory(b), total, next_offset)),
        _ => Some((SendData::Pieces(out), total, next_offset)),
    }
}

/// The `.log` file name of a segment with this base offset (`00000000000000000042.log`).
pub fn segment_file_name(base_offset: i64) -> String {
    file_name(base_offset, "log")
}
