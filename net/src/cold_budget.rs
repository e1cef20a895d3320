//! The memory a core's fetch responses hold in data read from disk for them
//! (`fetch.cold.reads=direct`), bounded per core by `fetch.cold.read.bytes.per.core`.
//!
//! Data from the tail cache is already paid for by the cache's budget, and a file range sent
//! with `sendfile` holds no memory. But data read with O_DIRECT for a response lives until the
//! response has been written to the socket, which a slow (or stopped) client can put off for
//! as long as it likes, and each fetch may read up to `fetch.max.bytes`: without a bound, many
//! consumers catching up at once would hold that much each.
//!
//! A fetch reserves what it may read from disk on each core it reads on, up to what the
//! core has free; its parts read at most their share of that (but always their first batch,
//! KIP-74, so every consumer progresses). What was read is then charged until the last
//! reference to it is dropped, on whichever core that happens, and the reservation is let go.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use gregor_engine::SendData;

/// One core's budget. Reserved and charged on its core; released wherever the data's last
/// reference goes (a connection's core), hence an atomic.
pub struct ColdReadBudget {
    held_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl ColdReadBudget {
    /// A budget of `max_bytes`, none of it held.
    pub fn new(max_bytes: usize) -> Self {
        ColdReadBudget {
            held_bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes,
        }
    }

    /// Bytes reserved or held by responses now.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::Relaxed)
    }

    /// Reserves up to `wanted` bytes, as much as is free (possibly none).
    pub fn reserve(&self, wanted: usize) -> Reservation {
        // Only this core reserves; other cores only release. So the budget cannot be
        // overdrawn between the load and the add.
        let free = self.max_bytes.saturating_sub(self.held_bytes());
        let bytes = free.min(wanted);
        self.held_bytes.fetch_add(bytes, Ordering::Relaxed);
        Reservation {
            held_bytes: self.held_bytes.clone(),
            bytes,
        }
    }

    /// `data` (read from disk for a response), charged to this budget until its last
    /// reference is dropped. Not copied: each piece is wrapped.
    pub fn charge(&self, data: SendData) -> SendData {
        match data {
            SendData::Memory(bytes) => SendData::Memory(self.charged(bytes)),
            SendData::Pieces(pieces) => {
                SendData::Pieces(pieces.into_iter().map(|b| self.charged(b)).collect())
            }
            file @ SendData::File(_) => file,
        }
    }

    fn charged(&self, bytes: Bytes) -> Bytes {
        if bytes.is_empty() {
            return bytes;
        }
        let len = bytes.len();
        self.held_bytes.fetch_add(len, Ordering::Relaxed);
        Bytes::from_owner(Charged {
            bytes,
            _charge: Charge {
                held_bytes: self.held_bytes.clone(),
                bytes: len,
            },
        })
    }
}

/// Bytes a fetch may read from disk, held in the budget until dropped.
pub struct Reservation {
    held_bytes: Arc<AtomicUsize>,
    bytes: usize,
}

impl Reservation {
    /// Bytes reserved.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.held_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Data read for a response, with its charge.
struct Charged {
    bytes: Bytes,
    /// Held only to be dropped with the data.
    _charge: Charge,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

struct Charge {
    held_bytes: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.held_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_and_charges_come_back_when_dropped() {
        let budget = ColdReadBudget::new(100);
        let first = budget.reserve(60);
        assert_eq!(first.bytes(), 60);
        let second = budget.reserve(60);
        assert_eq!(second.bytes(), 40, "only what is free");
        assert_eq!(budget.reserve(1).bytes(), 0);
        let data = budget.charge(SendData::Pieces(vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"de"),
        ]));
        assert_eq!(budget.held_bytes(), 105);
        drop(first);
        drop(second);
        assert_eq!(budget.held_bytes(), 5);
        let SendData::Pieces(pieces) = data else {
            panic!("pieces stay pieces");
        };
        assert_eq!(&pieces[0][..], b"abc");
        let kept = pieces[2].slice(1..);
        drop(pieces);
        assert_eq!(budget.held_bytes(), 2, "a slice keeps its piece charged");
        drop(kept);
        assert_eq!(budget.held_bytes(), 0);
    }

    #[test]
    fn a_charged_piece_is_the_same_memory() {
        let budget = ColdReadBudget::new(1 << 20);
        let bytes = Bytes::from(vec![7u8; 4096]);
        let address = bytes.as_ptr();
        let SendData::Memory(charged) = budget.charge(SendData::Memory(bytes)) else {
            panic!("memory stays memory");
        };
        // The vectored encoder finds record data by address: no copy may happen here.
        assert_eq!(charged.as_ptr(), address);
        assert_eq!(charged.len(), 4096);
    }
}
