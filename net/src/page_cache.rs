//! Cold segment ranges are brought into the page cache off the core before `sendfile`.
//!
//! Why: `sendfile` from a range that is not in the page cache waits for the disk inside the
//! syscall, and with it the whole core: every partition and connection it owns. A consumer
//! catching up from disk raised the end-to-end p99 of producers on the same broker from 2 ms
//! to 17-38 ms that way (docs/BENCHMARKS.md, change 17). So a range that is not resident is
//! first read into the page cache by the core's blocking thread (glommio's pool), and the
//! core sends it once it is there.
//!
//! Read-ahead, which nobody waits for yet, runs at the idle I/O priority class ([`IdleIo`]):
//! the block layer's scheduler (mq-deadline, bfq) sends it only while no write waits, so it
//! does not delay appends. Reads a fetch waits for keep the default class: an idle read may
//! wait as long as writes keep coming (up to 10 s in mq-deadline), and a consumer whose
//! fetch waited that long missed its heartbeats (docs/BENCHMARKS.md, change 28).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock, Weak};

use nix::errno::Errno;
use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use nix::sys::sendfile::sendfile64;

/// Whether `[position, position + len)` is in the page cache and read, so that `sendfile`
/// will not wait for the disk. Two probes, neither of which blocks:
/// - `cachestat` counts the range's pages in the cache, with no side effect. A page missing
///   answers no at once. (Probing a missing page by reading it, as below, starts a readahead
///   from the calling thread, the core, at the appends' I/O priority.)
/// - a one-byte `preadv2(RWF_NOWAIT)` at the ends and every [`PROBE_STRIDE_BYTES`] fails for
///   a page still being read. Such a page can belong to a read-ahead at the idle class that
///   waits behind appends: `sendfile` would wait for it with the whole core.
///
/// Without `cachestat` (kernels before 6.5) only the ends are probed: the kernel reads a
/// range in order, so both ends present means the middle almost always is.
pub fn is_resident(file: &File, position: u64, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let last = position + len as u64 - 1;
    match cached_pages(file, position, len) {
        Some(cached) if cached < last / PAGE_BYTES - position / PAGE_BYTES + 1 => false,
        Some(_) => {
            // Bounded: len / stride probes (a fetch part is at most a few MiB).
            let mut at = position;
            while at < last {
                if !byte_is_resident(file, at) {
                    return false;
                }
                at += PROBE_STRIDE_BYTES;
            }
            byte_is_resident(file, last)
        }
        None => byte_is_resident(file, position) && byte_is_resident(file, last),
    }
}

/// Distance between the probes of a range whose pages are all in the cache.
const PROBE_STRIDE_BYTES: u64 = 256 << 10;

/// Page cache granularity assumed when counting a range's pages (`cachestat` counts pages of
/// the base size, 4 KiB on x86-64 and most arm64 kernels; a larger base page only makes the
/// count look short, which costs a needless load, never a blocked core).
const PAGE_BYTES: u64 = 4096;

/// `cachestat(2)` (Linux 6.5): the same number on every architecture, as for every system
/// call added since 5.1. Not in the `libc` crate for x86-64 yet.
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Pages of the range in the page cache, or None if the kernel cannot tell (no `cachestat`).
fn cached_pages(file: &File, position: u64, len: usize) -> Option<u64> {
    let range = CachestatRange {
        off: position,
        len: len as u64,
    };
    let mut stat = Cachestat::default();
    // SAFETY: both pointers are to live structs of the layout the kernel expects
    // (include/uapi/linux/mman.h), the descriptor is borrowed from `file`, and the call writes
    // only `stat`.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0,
        )
    };
    (rc == 0).then_some(stat.nr_cache)
}

fn byte_is_resident(file: &File, at: u64) -> bool {
    let Ok(offset) = libc::off_t::try_from(at) else {
        return false;
    };
    let mut byte = 0u8;
    let iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // SAFETY: `iov` describes one writable byte that lives until the call returns, and the
    // descriptor is borrowed from `file`, which is open for the whole call.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    n == 1
}

/// While producers write, a cold read goes to the disk this much at a time, with the next
/// step started while one is waited for: at most two steps in flight per core. With the
/// whole range started at once (a response's parts, several MiB), every acks=1 append queued
/// behind those reads in the disk: producers beside a catch-up consumer saw end-to-end p99 of
/// 2.7 to 3.4 s. Medians of runs alternated in one spell: 1.66 s in steps of 512 KiB, 0.44 s
/// in steps of 256 KiB (the disk's read request size here), 0.1 s in steps of 128 KiB but with
/// the catch-up a little slower; 256 KiB kept (BENCHMARKS.md, change 33).
pub const PACED_READ_STEP_BYTES: usize = 256 << 10;

/// Reads `[position, position + len)` into the page cache on the core's blocking thread and
/// waits for it, without copying the data anywhere: the reads are started
/// (`POSIX_FADV_WILLNEED`), then waited for by a `sendfile` to `/dev/null`. All at once, or
/// with `paced` (producers write) [`PACED_READ_STEP_BYTES`] at a time. Must run inside a
/// glommio executor. Best effort: an error only means the caller's `sendfile` reads the disk
/// itself.
pub async fn load(file: Arc<File>, position: u64, len: usize, paced: bool) {
    let step = if paced { PACED_READ_STEP_BYTES } else { len };
    let result = glommio::executor()
        .spawn_blocking(move || load_blocking(&file, position, len, step))
        .await;
    if let Err(e) = result {
        tracing::debug!(position, len, error = %e, "could not preload a segment range");
    }
}

/// A byte range of a file: the file, the start, the length.
pub type Range = (Arc<File>, u64, usize);

/// On the core's blocking thread, in order: drops `sent` from the page cache, then starts
/// reading `ranges` into it; returns once that job is queued. `ranges`: a response's file
/// parts before they are sent, and read-ahead for a consumer's next fetch, so its range is
/// resident when asked for (a catch-up consumer otherwise leaves the disk idle between
/// fetches). `sent`: ranges a connection sent and its client has read (see
/// [`SentCold`]); the pages freed first are the ones the reads then fill. Off the core
/// because `POSIX_FADV_WILLNEED` allocates the pages and submits the reads in the call,
/// which took a core's time from the partitions it serves. Must run inside a glommio
/// executor. Best effort.
pub async fn start_reads(sent: Vec<Range>, ranges: Vec<Range>, ahead: Vec<Range>) {
    if sent.is_empty() && ranges.iter().chain(&ahead).all(|(_, _, len)| *len == 0) {
        return;
    }
    let mut job = Box::pin(glommio::executor().spawn_blocking(move || {
        for (file, position, len) in &sent {
            // A page still held by a socket buffer is skipped by the kernel, and stays. Best
            // effort, and no reason not to read what follows.
            let _ = advise(
                file,
                *position,
                *len,
                PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
        for (file, position, len) in &ranges {
            if *len > 0 {
                advise_will_need(file, *position, *len)?;
            }
        }
        // Only what nobody waits for yet reads at the idle class: the scheduler may hold an
        // idle read for as long as writes keep coming (10 s in mq-deadline), and a fetch
        // waiting that long held its connection, and the consumer's heartbeats, past the
        // session timeout.
        let _idle = IdleIo::enter();
        for (file, position, len) in &ahead {
            if *len > 0 {
                advise_will_need(file, *position, *len)?;
            }
        }
        Ok::<(), std::io::Error>(())
    }));
    // Polled once here, the job is queued for the blocking thread before whatever the caller
    // asks of that thread next (such as loading the first part), not when a task gets to it.
    let report = |result: std::io::Result<()>| {
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not read ahead");
        }
    };
    match futures_lite::future::poll_once(&mut job).await {
        Some(result) => report(result),
        None => {
            glommio::spawn_local(async move { report(job.await) }).detach();
        }
    }
}

/// The file ranges a connection sent in its last response, to be dropped from the page cache
/// with its next one (`fetch.cold.pages.keep=false`). By then the client has read them: a
/// consumer asks for more once it has the last response. A catch-up read then keeps
/// reusing the pages it frees instead of taking new ones: in a VM that hands freed memory
/// back to its host, the first touch of a new page costs a fault in the host, which made
/// the consumer's copy of each byte cost 3 to 12 times more (BENCHMARKS change 30). It costs
/// short catch-ups, though (about a quarter of their speed here), so it is off by default. At most
/// one response's file parts (bounded by the request size).
///
/// Holds the files weakly: a descriptor held here would keep a retired segment's file from
/// being recycled or closed while the connection sits idle. Pages of a file nobody holds any
/// more are not dropped (its segment is gone or going).
#[derive(Default)]
pub struct SentCold {
    ranges: Vec<(Weak<File>, u64, usize)>,
    /// False: keep the pages (`fetch.cold.pages.keep`), and remember nothing.
    drop_pages: bool,
}

impl SentCold {
    /// A tracker that drops sent pages if `drop_pages`.
    pub fn new(drop_pages: bool) -> SentCold {
        SentCold {
            ranges: Vec::new(),
            drop_pages,
        }
    }

    /// The ranges to drop now (those of the last response whose files are still open),
    /// forgetting them.
    pub fn take(&mut self) -> Vec<Range> {
        self.ranges
            .drain(..)
            .filter_map(|(file, position, len)| Some((file.upgrade()?, position, len)))
            .collect()
    }

    /// Remembers the ranges of the response just sent.
    pub fn sent<'a>(&mut self, ranges: impl Iterator<Item = (&'a Arc<File>, u64, usize)>) {
        if self.drop_pages {
            self.ranges
                .extend(ranges.map(|(file, position, len)| (Arc::downgrade(file), position, len)));
        }
    }
}

/// The calling thread's I/O priority set to the idle class until dropped, then restored: the
/// blocking thread also runs other work (saving metadata), which keeps its own priority.
/// Reads (and readahead) that the thread starts meanwhile carry the class; the kernel takes a
/// bio's priority from its submitter. Best effort: if the calls fail, nothing changes.
struct IdleIo {
    previous: Option<libc::c_long>,
}

/// `ioprio_set`/`ioprio_get` constants (linux/ioprio.h): the target is the calling thread.
const IOPRIO_WHO_PROCESS: libc::c_long = 1;
const IOPRIO_CLASS_IDLE: libc::c_long = 3;
const IOPRIO_CLASS_SHIFT: u32 = 13;

impl IdleIo {
    fn enter() -> IdleIo {
        // SAFETY: ioprio_get/ioprio_set take plain integers and touch no memory of ours.
        let previous = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) };
        let idle = IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT;
        if previous < 0 || previous == idle {
            return IdleIo { previous: None };
        }
        // SAFETY: as above.
        let set = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, idle) };
        IdleIo {
            previous: (set == 0).then_some(previous),
        }
    }
}

impl Drop for IdleIo {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            // SAFETY: as in `enter`.
            unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, previous) };
        }
    }
}

fn advise_will_need(file: &File, position: u64, len: usize) -> std::io::Result<()> {
    advise(file, position, len, PosixFadviseAdvice::POSIX_FADV_WILLNEED)
}

fn advise(
    file: &File,
    position: u64,
    len: usize,
    advice: PosixFadviseAdvice,
) -> std::io::Result<()> {
    let offset = i64::try_from(position).map_err(std::io::Error::other)?;
    let len = i64::try_from(len).map_err(std::io::Error::other)?;
    posix_fadvise(file.as_raw_fd(), offset, len, advice)?;
    Ok(())
}

/// Loads the range `step` bytes at a time: the reads of a step start (with the next step's
/// while it is waited for), then a `sendfile` to `/dev/null` waits for them.
fn load_blocking(file: &File, position: u64, len: usize, step: usize) -> std::io::Result<()> {
    if len == 0 {
        // `posix_fadvise` reads a zero length as "to the end of the file".
        return Ok(());
    }
    let step = step.max(1);
    let end = position + len as u64;
    advise_will_need(file, position, step.min(len))?;
    let mut at = position;
    // Bounded: each pass moves `at` on by at least one byte.
    while at < end {
        let step_end = (at + step as u64).min(end);
        if step_end < end {
            advise_will_need(file, step_end, step.min((end - step_end) as usize))?;
        }
        if !wait_for_pages(file, at, (step_end - at) as usize)? {
            break;
        }
        at = step_end;
    }
    Ok(())
}

/// Waits until `[position, position + len)` is in the page cache, by sending it to
/// `/dev/null`. False if the file ended first (truncated meanwhile: the caller reports it).
fn wait_for_pages(file: &File, position: u64, len: usize) -> std::io::Result<bool> {
    static DEV_NULL: OnceLock<std::io::Result<File>> = OnceLock::new();
    let null = match DEV_NULL.get_or_init(|| File::options().write(true).open("/dev/null")) {
        Ok(f) => f,
        Err(e) => return Err(std::io::Error::new(e.kind(), e.to_string())),
    };
    let mut offset = i64::try_from(position).map_err(std::io::Error::other)?;
    let mut left = len;
    // Bounded: every pass moves at least one byte, or ends the loop.
    while left > 0 {
        match sendfile64(null, file, Some(&mut offset), left) {
            Ok(0) => return Ok(false),
            Ok(n) => left -= n.min(left),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Whether the page holding byte `at` is in the page cache. `mincore` of a mapping reads
    /// nothing, whereas even a `RWF_NOWAIT` read of a missing page starts a readahead.
    pub(crate) fn page_is_resident(file: &File, at: u64) -> bool {
        let page = 4096u64;
        // SAFETY: a fresh read-only shared mapping of one page of an open file, unmapped
        // below; nothing reads through it.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                page as usize,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                (at / page * page) as libc::off_t,
            );
            assert_ne!(map, libc::MAP_FAILED, "mmap");
            let mut resident = 0u8;
            let rc = libc::mincore(map, page as usize, &mut resident);
            libc::munmap(map, page as usize);
            assert_eq!(rc, 0, "mincore");
            resident & 1 == 1
        }
    }

    pub(crate) fn cold_file(dir: &std::path::Path, len: usize) -> Arc<File> {
        let path = dir.join("seg.log");
        {
            let mut f = File::create(&path).unwrap();
            f.write_all(&vec![7u8; len]).unwrap();
            f.sync_all().unwrap();
        }
        let file = File::open(&path).unwrap();
        // Clean pages go at DONTNEED, so the file is cold as after a restart. A page the
        // kernel still holds (CI once kept one) is dropped on a later try.
        for _ in 0..100 {
            posix_fadvise(
                file.as_raw_fd(),
                0,
                len as i64,
                PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            )
            .unwrap();
            if !(0..len as u64)
                .step_by(64 << 10)
                .any(|at| page_is_resident(&file, at))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Arc::new(file)
    }

    /// A range with one page missing in its middle is not resident, and asking does not read
    /// that page in (no readahead started by the asking thread, a core in the broker).
    #[test]
    fn a_page_missing_mid_range_is_seen_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let len = 4usize << 20;
        let file = cold_file(dir.path(), len);
        assert!(
            cached_pages(&file, 0, len).is_some(),
            "cachestat (Linux 6.5+) is unavailable"
        );
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut &*file, &mut all).unwrap();
        assert!(is_resident(&file, 0, len), "read but not resident");
        let hole = (2u64 << 20) + (40 << 10);
        for _ in 0..100 {
            let _ = posix_fadvise(
                file.as_raw_fd(),
                hole as i64,
                4096,
                PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
            if !page_is_resident(&file, hole) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!page_is_resident(&file, hole), "page not dropped");
        assert!(!is_resident(&file, 0, len), "hole not seen");
        assert!(!is_resident(&file, hole, 1));
        assert!(is_resident(&file, 0, 1 << 20), "the rest is still resident");
        assert!(!page_is_resident(&file, hole), "asking read the page in");
    }

    #[test]
    fn start_reads_reads_the_range_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let file = cold_file(dir.path(), 16 << 20);
        let (position, len) = (4u64 << 20, 4usize << 20);
        assert!(
            !page_is_resident(&file, position + (2 << 20)),
            "still cached"
        );
        let ahead = file.clone();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                start_reads(Vec::new(), Vec::new(), vec![(ahead, position, len)]).await;
                // The reads go on after the call returns: give the disk up to 10 s.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while !page_is_resident(&file, position + len as u64 - 1) {
                    assert!(std::time::Instant::now() < deadline, "not read ahead");
                    glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                }
                assert!(page_is_resident(&file, position));
                // Only the range (the kernel's own readahead adds at most its window).
                assert!(
                    !page_is_resident(&file, 15 << 20),
                    "read far past the range"
                );
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn load_brings_a_dropped_range_back() {
        // All at once, and a step at a time (producers write): the whole range either way,
        // including a last step shorter than the others.
        for paced in [false, true] {
            load_brings_back(paced, (1 << 20) + 4096, 2 * PACED_READ_STEP_BYTES + 8192);
        }
    }

    fn load_brings_back(paced: bool, position: u64, range_len: usize) {
        let dir = tempfile::tempdir().unwrap();
        let len = 8 << 20;
        let file = cold_file(dir.path(), len);
        assert!(
            !is_resident(&file, position, range_len),
            "range still cached"
        );
        assert!(
            is_resident(&file, position, 0),
            "an empty range is always resident"
        );
        let loaded = file.clone();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                load(loaded, position, range_len, paced).await;
                // The blocking thread's other work keeps its own I/O priority.
                let after = glommio::executor().spawn_blocking(io_priority).await;
                assert_ne!(after >> IOPRIO_CLASS_SHIFT, IOPRIO_CLASS_IDLE, "left idle");
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            is_resident(&file, position, range_len),
            "range not loaded (paced {paced})"
        );
        // Only the range was read (readahead may add a little past it, not the whole file).
        assert!(
            !is_resident(&file, len as u64 - 1, 1),
            "read far past the range"
        );
    }

    fn io_priority() -> libc::c_long {
        // SAFETY: ioprio_get takes plain integers.
        let p = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) };
        assert!(p >= 0, "ioprio_get failed");
        p
    }

    /// Remembering a sent range does not keep its file open (a retired segment's file must
    /// be free to recycle); a file still open comes back to be dropped, once.
    #[test]
    fn sent_ranges_hold_their_files_weakly() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Arc::new(File::create(dir.path().join("kept")).unwrap());
        let gone = Arc::new(File::create(dir.path().join("gone")).unwrap());
        let mut sent = SentCold::new(true);
        sent.sent([(&kept, 0, 10), (&gone, 5, 20)].into_iter());
        assert_eq!(Arc::strong_count(&gone), 1, "held by the record");
        drop(gone);
        let back = sent.take();
        assert_eq!(back.len(), 1);
        assert!(Arc::ptr_eq(&back[0].0, &kept));
        assert_eq!((back[0].1, back[0].2), (0, 10));
        assert!(sent.take().is_empty(), "taken twice");
        let mut keep = SentCold::new(false);
        keep.sent([(&kept, 0, 10)].into_iter());
        assert!(
            keep.take().is_empty(),
            "remembered with fetch.cold.pages.keep"
        );
    }

    /// Reads started under the guard carry the idle class (the kernel takes a bio's
    /// priority from its submitting thread); the thread's own priority comes back after.
    #[test]
    fn idle_io_lasts_as_long_as_the_guard() {
        std::thread::spawn(|| {
            let before = io_priority();
            assert_ne!(before >> IOPRIO_CLASS_SHIFT, IOPRIO_CLASS_IDLE);
            {
                let _idle = IdleIo::enter();
                assert_eq!(io_priority() >> IOPRIO_CLASS_SHIFT, IOPRIO_CLASS_IDLE);
                // Nested (already idle): stays idle, and the outer guard restores.
                drop(IdleIo::enter());
                assert_eq!(io_priority() >> IOPRIO_CLASS_SHIFT, IOPRIO_CLASS_IDLE);
            }
            assert_eq!(io_priority(), before);
        })
        .join()
        .unwrap();
    }
}
