//! O_DIRECT buffers, written or filled by a read, lent to other threads as `Bytes`, without a
//! copy.
//!
//! The tail cache keeps the very buffers an append wrote, so a consumer at the tail is served
//! from memory. With the Dma backend those are glommio `DmaBuffer`s: `!Send`, and dropping
//! one on another thread would corrupt its executor's buffer pool. But the connection that
//! sends the data may run on any core. Copying every fetched byte into a fresh `Bytes` was
//! the broker's largest cost when serving the tail (a copy plus page faults on new memory).
//!
//! [`lend`] wraps the buffer in an owner that `Bytes::from_owner` can share with any thread:
//! - the bytes are only read (an append never writes a buffer again once it is written), and
//!   the memory stays allocated as long as the owner holds its `Rc`;
//! - the `Rc` is never cloned or dropped off its home thread. When the last `Bytes` goes
//!   away elsewhere, the owner moves the `Rc`, untouched, into its home thread's lock-free
//!   return queue; the home thread drops what came back at its next append, read or
//!   retention check ([`release_returned`]);
//! - if the home thread has ended, the queue is never drained and the buffer is leaked,
//!   never dropped on the wrong thread.
//!
//! Reads go out the same way ([`lend_read`]): a glommio `ReadResult` holds its buffer by `Rc`
//! too, and copying every read into fresh memory cost a copy and the first touch of the new
//! pages for data that is only sent.

use std::mem::ManuallyDrop;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_queue::SegQueue;
use glommio::io::{DmaBuffer, ReadResult};

/// A buffer that must be dropped on the thread that made it: a written buffer, or the result
/// of an O_DIRECT read (which holds its buffer by `Rc`).
enum HomeBuf {
    Written(Rc<DmaBuffer>),
    Read(ReadResult),
}

impl HomeBuf {
    fn bytes(&self) -> &[u8] {
        match self {
            HomeBuf::Written(b) => b.as_bytes(),
            HomeBuf::Read(r) => r,
        }
    }
}

/// A buffer on its way back to its home thread.
struct Homeward(ManuallyDrop<HomeBuf>);

// SAFETY: a `Homeward` is only moved between threads, never used: nothing reads through it,
// and its `Rc` is dropped only by `release_returned` on the home thread (or leaked, with the
// queue, if that thread is gone). Moving an `Rc` without touching its count is sound.
unsafe impl Send for Homeward {}

/// One thread's queue of returned buffers.
struct Home {
    returned: SegQueue<Homeward>,
}

thread_local! {
    static HOME: Arc<Home> = Arc::new(Home { returned: SegQueue::new() });
}

/// The `Bytes` owner of a lent buffer.
struct Lent {
    buf: ManuallyDrop<HomeBuf>,
    home: Arc<Home>,
}

// SAFETY: `Bytes::from_owner` calls `as_ref` once, on the creating (home) thread, and may
// drop the owner on any thread. `Drop` below touches the `Rc` only on the home thread and
// otherwise moves it into the home queue unchanged. The slice handed out stays valid on
// every thread: the memory lives until that `Rc` is dropped at home, and nobody writes it.
unsafe impl Send for Lent {}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        self.buf.bytes()
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // SAFETY: `buf` is taken exactly once, here, and never used again.
        let buf = unsafe { ManuallyDrop::take(&mut self.buf) };
        let at_home = HOME
            .try_with(|h| Arc::ptr_eq(h, &self.home))
            .unwrap_or(false);
        if at_home {
            drop(buf);
        } else {
            self.home.returned.push(Homeward(ManuallyDrop::new(buf)));
        }
    }
}

/// Shares `buf` (already written, never written again) as `Bytes` that any thread may hold.
/// Also drops the buffers that came back to this thread since the last call.
pub(crate) fn lend(buf: Rc<DmaBuffer>) -> Bytes {
    lend_home_buf(HomeBuf::Written(buf))
}

/// Shares the data of an O_DIRECT read as `Bytes` that any thread may hold, without a copy
/// (as [`lend`]).
pub(crate) fn lend_read(read: ReadResult) -> Bytes {
    lend_home_buf(HomeBuf::Read(read))
}

fn lend_home_buf(buf: HomeBuf) -> Bytes {
    release_returned();
    let home = HOME.with(Arc::clone);
    Bytes::from_owner(Lent {
        buf: ManuallyDrop::new(buf),
        home,
    })
}

/// Drops the buffers other threads have returned to this one.
pub(crate) fn release_returned() {
    let _ = HOME.try_with(|h| {
        while let Some(Homeward(buf)) = h.returned.pop() {
            drop(ManuallyDrop::into_inner(buf));
        }
    });
}

/// Buffers returned to this thread and not yet dropped (for tests).
#[cfg(test)]
fn returned_count() -> usize {
    HOME.with(|h| h.returned.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::LocalExecutorBuilder;

    /// Compares `bytes` with `expected` on a new thread, and drops them there.
    fn same_and_dropped_elsewhere(bytes: Bytes, expected: Vec<u8>) -> bool {
        std::thread::spawn(move || bytes[..] == expected[..])
            .join()
            .unwrap()
    }

    /// A lent buffer's bytes read the same on another thread; dropped there, it comes back
    /// to its home thread and is dropped only by `release_returned`, there.
    #[test]
    fn returns_home_to_be_dropped() {
        LocalExecutorBuilder::default()
            .spawn(|| async move {
                let dir = tempfile::tempdir().unwrap();
                let file = glommio::io::DmaFile::create(dir.path().join("f"))
                    .await
                    .unwrap();
                let mut buf = file.alloc_dma_buffer(8192);
                buf.as_bytes_mut()
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b = (i % 251) as u8);
                let rc = Rc::new(buf);
                let weak = Rc::downgrade(&rc);
                let bytes = lend(rc).slice(100..5000);
                let expected: Vec<u8> = (100..5000).map(|i| (i % 251) as u8).collect();
                assert!(
                    same_and_dropped_elsewhere(bytes, expected),
                    "bytes differ on another thread"
                );
                assert_eq!(returned_count(), 1);
                assert!(weak.upgrade().is_some(), "dropped off its home thread");
                release_returned();
                assert_eq!(returned_count(), 0);
                assert!(weak.upgrade().is_none(), "not dropped at home");

                // Dropped at home: freed at once, nothing queued.
                let rc = Rc::new(file.alloc_dma_buffer(4096));
                let weak = Rc::downgrade(&rc);
                drop(lend(rc));
                assert!(weak.upgrade().is_none());
                assert_eq!(returned_count(), 0);
                file.close().await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// The data of an O_DIRECT read, lent without a copy, reads the same on another thread
    /// and comes home to be dropped there.
    #[test]
    fn lent_reads_return_home() {
        LocalExecutorBuilder::default()
            .spawn(|| async move {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("f");
                let data: Vec<u8> = (0..16384u32).map(|i| (i % 253) as u8).collect();
                std::fs::write(&path, &data).unwrap();
                let file = glommio::io::DmaFile::open(&path).await.unwrap();
                // Unaligned on purpose: glommio reads the aligned blocks around it.
                let read = file.read_at(1000, 9000).await.unwrap();
                let bytes = lend_read(read).slice(10..8000);
                let expected = data[1010..9000].to_vec();
                assert!(
                    same_and_dropped_elsewhere(bytes, expected),
                    "bytes differ on another thread"
                );
                assert_eq!(returned_count(), 1);
                release_returned();
                assert_eq!(returned_count(), 0);
                file.close().await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
