//! The backend seam: segment file I/O through glommio O_DIRECT (`Dma`) or `std::fs` (`Std`).
//!
//! Everything above this module is backend-agnostic except for one fact: a `Dma` write must
//! start on a block boundary and cover whole blocks, so the segment keeps the partially
//! filled last block in memory and rewrites it with each append (see `segment.rs`).

use crate::config::BackendKind;
use crate::woken::woken_only;
use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;

/// O_DIRECT block size used for alignment. 4 KiB satisfies both 512-byte and 4 KiB devices.
pub(crate) const BLOCK_BYTES: u64 = 4096;

pub(crate) fn align_down(v: u64) -> u64 {
    v & !(BLOCK_BYTES - 1)
}

pub(crate) fn align_up(v: u64) -> u64 {
    (v + BLOCK_BYTES - 1) & !(BLOCK_BYTES - 1)
}

/// An open segment `.log` file.
pub(crate) enum SegFile {
    Std(std::fs::File),
    Dma(DmaFile),
}

/// A buffer being filled for one write.
pub(crate) enum WriteBuf {
    Heap(Vec<u8>),
    Dma(DmaBuffer),
}

impl WriteBuf {
    pub(crate) fn len(&self) -> usize {
        match self {
            WriteBuf::Heap(v) => v.len(),
            WriteBuf::Dma(b) => b.len(),
        }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            WriteBuf::Heap(v) => v.as_mut_slice(),
            WriteBuf::Dma(b) => b.as_bytes_mut(),
        }
    }
}

/// The buffers of one append write: one, or two when the write is split where the written
/// blocks end (`zero_ahead.rs`). Each is filled in place, so no byte is copied twice.
pub(crate) struct WriteBufs {
    head: WriteBuf,
    /// `[head.len(), ..)` of the write, when split.
    rest: Option<WriteBuf>,
}

impl WriteBufs {
    /// Buffers for a write of `len` bytes, split at `split_at` (both block multiples).
    pub(crate) fn new(file: &SegFile, len: usize, split_at: Option<usize>) -> WriteBufs {
        match split_at {
            Some(at) if at > 0 && at < len => WriteBufs {
                head: file.alloc(at),
                rest: Some(file.alloc(len - at)),
            },
            _ => WriteBufs {
                head: file.alloc(len),
                rest: None,
            },
        }
    }

    /// Bytes `[from, to)` of the write: the part in the first buffer they touch, then the part
    /// in the second (empty unless the range crosses the split).
    pub(crate) fn range_mut(&mut self, from: usize, to: usize) -> (&mut [u8], &mut [u8]) {
        let head = self.head.as_mut_slice();
        let (in_head, in_rest) = split_range(head.len(), from, to);
        match self.rest.as_mut().map(WriteBuf::as_mut_slice) {
            Some(rest) if in_head.is_empty() => (&mut rest[in_rest], Default::default()),
            Some(rest) => (&mut head[in_head], &mut rest[in_rest]),
            None => (&mut head[from..to], Default::default()),
        }
    }
}

/// Where bytes `[from, to)` of a write lie when its first buffer holds `head_len` bytes: the
/// range in the first buffer and the range in the second (either may be empty).
fn split_range(head_len: usize, from: usize, to: usize) -> (Range<usize>, Range<usize>) {
    let in_head = from.min(head_len)..to.min(head_len);
    let in_rest = from.max(head_len) - head_len..to.max(head_len) - head_len;
    (in_head, in_rest)
}

/// What [`SegFile::write_bufs_at`] returns: the written buffers, shared (the second starts
/// where the first ends).
pub(crate) struct WrittenBufs {
    pub head: SharedBuf,
    pub rest: Option<SharedBuf>,
}

impl WrittenBufs {
    /// Bytes `[from, to)` of the write, in at most two pieces (see `WriteBufs::range_mut`).
    pub(crate) fn range(&self, from: usize, to: usize) -> (&[u8], &[u8]) {
        let head = self.head.as_slice();
        let (in_head, in_rest) = split_range(head.len(), from, to);
        match self.rest.as_ref().map(SharedBuf::as_slice) {
            Some(rest) if in_head.is_empty() => (&rest[in_rest], &[]),
            Some(rest) => (&head[in_head], &rest[in_rest]),
            None => (&head[from..to], &[]),
        }
    }
}

/// A written buffer, kept by the tail cache instead of copying the data again.
#[derive(Clone)]
pub(crate) enum SharedBuf {
    Heap(Bytes),
    Dma(Rc<DmaBuffer>),
}

impl SharedBuf {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            SharedBuf::Heap(b) => b,
            SharedBuf::Dma(b) => b.as_bytes(),
        }
    }

    /// Memory this buffer keeps alive. A DMA buffer may come from glommio's registered
    /// region (`io_memory`), a buddy allocator that hands out power-of-two blocks, so a
    /// 260 KiB write holds 512 KiB there. Counting that (also for DMA buffers that came from
    /// the heap, where it overstates) keeps the tail cache's budget a bound on the memory it
    /// holds, and the cache within the region, so writes keep using registered buffers.
    pub(crate) fn held_bytes(&self) -> usize {
        match self {
            SharedBuf::Heap(b) => b.len(),
            SharedBuf::Dma(b) => b.len().next_power_of_two(),
        }
    }

    /// The whole buffer as `Bytes` any thread may hold, without a copy (see `lent.rs`). The
    /// buffer must never be written again.
    pub(crate) fn into_bytes(self) -> Bytes {
        match self {
            SharedBuf::Heap(b) => b,
            SharedBuf::Dma(b) => crate::lent::lend(b),
        }
    }
}

thread_local! {
    /// Zero-filled DMA buffers, one per power-of-two size, shared by every zero write of this
    /// core (the kernel only reads them).
    static ZERO_BUFFERS: std::cell::RefCell<Vec<Rc<DmaBuffer>>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Devices (st_dev) for which glommio's io_uring poll-ring probe has been run correctly.
    static PROBED_DEVICES: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// glommio decides once per device and thread whether reads may use the IOPOLL ring, by
/// reading the first block of the first file it opens there. On an empty file that read
/// succeeds trivially, so glommio wrongly enables IOPOLL and every later read on a device
/// without poll queues (virtio, most cloud disks) fails with EOPNOTSUPP. Open a one-block
/// file first so the probe sees real data and decides correctly.
async fn probe_device_once(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let dev = std::fs::metadata(dir)?.dev();
    if PROBED_DEVICES.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let probe_path = dir.join(".gregor-dma-probe.tmp");
    std::fs::write(&probe_path, vec![0u8; BLOCK_BYTES as usize])?;
    let probe = woken_only(OpenOptions::new().read(true).dma_open(&probe_path)).await;
    let _ = std::fs::remove_file(&probe_path);
    woken_only(probe?.close()).await?;
    PROBED_DEVICES.with(|p| p.borrow_mut().push(dev));
    Ok(())
}

impl SegFile {
    /// Open (creating if missing) a segment file for reading and writing.
    pub(crate) async fn open(path: &Path, backend: BackendKind) -> io::Result<SegFile> {
        match backend {
            BackendKind::Std => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)?;
                Ok(SegFile::Std(file))
            }
            BackendKind::Dma => {
                probe_device_once(path).await?;
                let file = woken_only(
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .dma_open(path),
                )
                .await?;
                Ok(SegFile::Dma(file))
            }
        }
    }

    /// Whether writes must be block-aligned (and so carry the partial last block).
    pub(crate) fn needs_alignment(&self) -> bool {
        matches!(self, SegFile::Dma(_))
    }

    /// A buffer for a write of `len` bytes (Dma: `len` must be a multiple of the block). Its
    /// contents are unspecified: the caller writes every byte (the padding as zeros), so the
    /// append path does not clear the whole buffer only to copy over it.
    pub(crate) fn alloc(&self, len: usize) -> WriteBuf {
        match self {
            SegFile::Std(_) => WriteBuf::Heap(vec![0u8; len]),
            SegFile::Dma(f) => WriteBuf::Dma(f.alloc_dma_buffer(len)),
        }
    }

    /// Write the whole buffer at `pos`. Returns the buffer, shared, for the tail cache.
    pub(crate) async fn write_at(&self, buf: WriteBuf, pos: u64) -> io::Result<SharedBuf> {
        match (self, buf) {
            (SegFile::Std(f), WriteBuf::Heap(v)) => {
                f.write_all_at(&v, pos)?;
                Ok(SharedBuf::Heap(Bytes::from(v)))
            }
            (SegFile::Dma(f), WriteBuf::Dma(b)) => {
                debug_assert_eq!(pos % BLOCK_BYTES, 0);
                let len = b.len();
                let shared = Rc::new(b);
                let written = woken_only(f.write_rc_at(shared.clone(), pos)).await?;
                if written != len {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "short O_DIRECT write",
                    ));
                }
                Ok(SharedBuf::Dma(shared))
            }
            _ => Err(io::Error::other("write buffer does not match the backend")),
        }
    }

    /// Write the buffers at `pos`; when split, both parts are issued together.
    pub(crate) async fn write_bufs_at(&self, bufs: WriteBufs, pos: u64) -> io::Result<WrittenBufs> {
        let WriteBufs { head, rest } = bufs;
        match rest {
            None => Ok(WrittenBufs {
                head: self.write_at(head, pos).await?,
                rest: None,
            }),
            Some(rest) => {
                let rest_pos = pos + head.len() as u64;
                let (head, rest) = futures_lite::future::zip(
                    self.write_at(head, pos),
                    self.write_at(rest, rest_pos),
                )
                .await;
                Ok(WrittenBufs {
                    head: head?,
                    rest: Some(rest?),
                })
            }
        }
    }

    /// Read up to `len` bytes at `pos` (fewer at end of file). Dma: the read's own buffer, lent
    /// (`lent.rs`), not copied.
    pub(crate) async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        match self {
            SegFile::Std(f) => {
                let mut out = vec![0u8; len];
                let mut done = 0usize;
                while done < len {
                    let n = f.read_at(&mut out[done..], pos + done as u64)?;
                    if n == 0 {
                        break;
                    }
                    done += n;
                }
                out.truncate(done);
                Ok(Bytes::from(out))
            }
            SegFile::Dma(f) => {
                let result = woken_only(f.read_at(pos, len)).await?;
                Ok(crate::lent::lend_read(result))
            }
        }
    }

    /// Write `len` zero bytes at `pos` (Dma only; `len` a power of two, block-aligned `pos`).
    pub(crate) async fn write_zeros(&self, pos: u64, len: u64) -> io::Result<()> {
        let SegFile::Dma(f) = self else {
            return Err(io::Error::other("zero writes are for the Dma backend"));
        };
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let cached = ZERO_BUFFERS.with(|b| b.borrow().iter().find(|z| z.len() == len).cloned());
        let zeros = match cached {
            Some(z) => z,
            None => {
                let mut b = f.alloc_dma_buffer(len);
                b.as_bytes_mut().fill(0);
                let z = Rc::new(b);
                ZERO_BUFFERS.with(|b| b.borrow_mut().push(z.clone()));
                z
            }
        };
        let written = woken_only(f.write_rc_at(zeros, pos)).await?;
        if written != len {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short zero write"));
        }
        Ok(())
    }

    pub(crate) async fn sync(&self) -> io::Result<()> {
        match self {
            SegFile::Std(f) => f.sync_data(),
            SegFile::Dma(f) => Ok(woken_only(f.fdatasync()).await?),
        }
    }

    pub(crate) async fn truncate(&self, len: u64) -> io::Result<()> {
        match self {
            SegFile::Std(f) => f.set_len(len),
            SegFile::Dma(f) => Ok(woken_only(f.truncate(len)).await?),
        }
    }

    pub(crate) async fn size(&self) -> io::Result<u64> {
        match self {
            SegFile::Std(f) => Ok(f.metadata()?.len()),
            SegFile::Dma(f) => Ok(woken_only(f.file_size()).await?),
        }
    }

    /// Allocate the file's blocks up to `len` and make that its size (Dma; blocks that hold
    /// data are left alone, the others read as zeros until written).
    pub(crate) async fn allocate_to(&self, len: u64) -> io::Result<()> {
        match self {
            SegFile::Std(_) => Ok(()),
            SegFile::Dma(f) => Ok(woken_only(f.pre_allocate(len, false)).await?),
        }
    }

    /// Reserve disk blocks without changing the file size, so a crash never exposes
    /// preallocated zeros as log data and recovery sees the true end.
    pub(crate) async fn preallocate(&self, len: u64) -> io::Result<()> {
        match self {
            // Portable backend: no reservation (std has no fallocate).
            SegFile::Std(_) => Ok(()),
            SegFile::Dma(f) => Ok(woken_only(f.pre_allocate(len, true)).await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_range;

    #[test]
    fn ranges_split_at_the_first_buffer_end() {
        assert_eq!(split_range(4096, 100, 200), (100..200, 0..0));
        assert_eq!(split_range(4096, 4000, 5000), (4000..4096, 0..904));
        assert_eq!(split_range(4096, 4096, 5000), (4096..4096, 0..904));
        assert_eq!(split_range(4096, 5000, 6000), (4096..4096, 904..1904));
        assert_eq!(split_range(4096, 0, 0), (0..0, 0..0));
    }
}
