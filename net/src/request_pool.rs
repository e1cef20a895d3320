//! Reusable buffers for large request bodies (Produce requests, mostly).
//!
//! Allocating a fresh zeroed buffer for every large request cost the broker a `memset` and,
//! worse, page faults: the allocator hands big blocks back to the kernel and takes fresh
//! pages for the next request. Profiles of a 1 KB produce load put that near a tenth of the
//! broker's cycles. Here each core keeps the buffers of finished requests and reads the next
//! body into one of them, already initialized, so nothing is cleared or faulted in again.
//!
//! A body is handed out as `Bytes` (slices of it travel to the partition's owning core), so
//! a buffer may be released on any thread: it goes back to its core's lock-free queue. Each
//! core keeps at most [`POOLED_BYTES_MAX`] of idle buffers; anything beyond is freed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use crossbeam_queue::SegQueue;

/// Bodies smaller than this are allocated as before: cheap, and mostly served by the
/// allocator's own free lists.
pub const POOLED_MIN_BYTES: usize = 64 << 10;

/// Idle buffer memory one core keeps at most.
pub const POOLED_BYTES_MAX: usize = 64 << 20;

/// Buffers come in power-of-two sizes from [`POOLED_MIN_BYTES`] up to 2^(16 + CLASSES - 1).
const CLASSES: usize = 16;

/// One core's idle buffers, by size class.
pub struct RequestPool {
    classes: [SegQueue<Vec<u8>>; CLASSES],
    idle_bytes: AtomicUsize,
}

impl RequestPool {
    /// An empty pool.
    pub fn new() -> Arc<Self> {
        Arc::new(RequestPool {
            classes: std::array::from_fn(|_| SegQueue::new()),
            idle_bytes: AtomicUsize::new(0),
        })
    }

    /// Bytes of idle buffers held.
    pub fn idle_bytes(&self) -> usize {
        self.idle_bytes.load(Ordering::Relaxed)
    }

    fn class_of(size: usize) -> Option<usize> {
        if size < POOLED_MIN_BYTES {
            return None;
        }
        let class = size.next_power_of_two().trailing_zeros() as usize
            - POOLED_MIN_BYTES.trailing_zeros() as usize;
        (class < CLASSES).then_some(class)
    }

    /// A buffer of at least `size` initialized bytes (pooled if the size qualifies), to be
    /// filled and then frozen into a body.
    pub fn take(self: &Arc<Self>, size: usize) -> BodyBuf {
        let buf = match Self::class_of(size) {
            None => vec![0u8; size],
            Some(class) => match self.classes[class].pop() {
                Some(buf) => {
                    self.idle_bytes.fetch_sub(buf.len(), Ordering::Relaxed);
                    buf
                }
                None => vec![0u8; POOLED_MIN_BYTES << class],
            },
        };
        BodyBuf {
            body: Body {
                buf,
                len: size,
                pool: self.clone(),
            },
        }
    }

    fn give_back(&self, buf: Vec<u8>) {
        let Some(class) = Self::class_of(buf.len()).filter(|&c| POOLED_MIN_BYTES << c == buf.len())
        else {
            return;
        };
        // Relaxed and racy by design: two threads may both pass the check and overshoot
        // the bound by a buffer each, never more.
        if self.idle_bytes.load(Ordering::Relaxed) + buf.len() > POOLED_BYTES_MAX {
            return;
        }
        self.idle_bytes.fetch_add(buf.len(), Ordering::Relaxed);
        self.classes[class].push(buf);
    }
}

/// A body being read: its buffer goes back to the pool if it is dropped unfrozen.
pub struct BodyBuf {
    body: Body,
}

impl BodyBuf {
    /// The `size` bytes to fill (initialized, with whatever a previous request left).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.body.len;
        &mut self.body.buf[..len]
    }

    /// The filled body, as `Bytes` whose memory returns to the pool when the last slice
    /// of it is released, on whatever thread.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self.body)
    }
}

/// The `Bytes` owner of a pooled body: returns its buffer when the last slice goes.
struct Body {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<RequestPool>,
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(pool: &Arc<RequestPool>, size: usize, byte: u8) -> Bytes {
        let mut b = pool.take(size);
        b.as_mut_slice().iter_mut().for_each(|x| *x = byte);
        b.freeze()
    }

    /// A released body's memory serves the next one of its size class, whichever thread
    /// released it; small bodies are not pooled; idle memory stays under the bound.
    #[test]
    fn buffers_are_reused_and_bounded() {
        let pool = RequestPool::new();
        let a = body(&pool, 100_000, 1);
        assert_eq!(a.len(), 100_000);
        assert!(a.iter().all(|&b| b == 1));
        let addr = a.as_ptr();
        let slice = a.slice(10..20);
        drop(a);
        assert_eq!(pool.idle_bytes(), 0, "returned while a slice lives");
        std::thread::spawn(move || drop(slice)).join().unwrap();
        assert_eq!(pool.idle_bytes(), 128 << 10);
        let b = body(&pool, 70_000, 2);
        assert_eq!(b.as_ptr(), addr, "not reused");
        assert_eq!(b.len(), 70_000);
        assert!(b.iter().all(|&x| x == 2));
        drop(b);

        drop(body(&pool, 1000, 3));
        assert_eq!(pool.idle_bytes(), 128 << 10, "small bodies are not pooled");

        // A buffer dropped before it was frozen (a failed read) goes back too.
        drop(pool.take(200_000));
        assert_eq!(pool.idle_bytes(), (128 << 10) + (256 << 10));

        let many: Vec<Bytes> = (0..20).map(|_| body(&pool, 5 << 20, 4)).collect();
        drop(many);
        assert!(pool.idle_bytes() <= POOLED_BYTES_MAX);
        assert!(pool.idle_bytes() >= POOLED_BYTES_MAX - (8 << 20));
    }
}
