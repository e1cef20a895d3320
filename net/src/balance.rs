//! Spreading data connections evenly over the cores.
//!
//! Every core has its own `SO_REUSEPORT` listener, and the kernel picks one by a hash of the
//! connection's addresses, so busy clients often share a core while another idles: with 4
//! producer connections on 2 cores, one core gets 3 or all 4 of them more often than not and
//! does every socket copy and CRC check of their requests alone. Counting every connection
//! would not fix it: clients keep an idle bootstrap connection beside each busy one, and
//! alternating placement can put all the busy ones on one core.
//!
//! So what is counted is connections that carry data: a connection is placed when its first
//! Produce or Fetch has been answered, on the core with the fewest data connections, and if
//! that is another core its socket moves there (over the core mesh) before the next request
//! is read. Counts stay within one of each other, apart from simultaneous placements racing.
//! A connection is counted on its new core from the moment it is placed, before it moves, so
//! a burst of placements sees each one at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Data connections per core, shared by every core.
#[derive(Debug)]
pub struct ConnectionCounts {
    per_core: Box<[AtomicUsize]>,
}

impl ConnectionCounts {
    /// Counts for `cores` cores, all zero.
    pub fn new(cores: usize) -> Arc<Self> {
        Arc::new(ConnectionCounts {
            per_core: (0..cores.max(1)).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// Data connections per core.
    pub fn per_core(&self) -> Vec<usize> {
        self.per_core
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Where a data connection now served by core `here` (and not counted yet) belongs: the
    /// core with the fewest data connections, `here` among equals (a move costs a hop).
    pub fn least_loaded(&self, here: usize) -> usize {
        let count = |core: usize| self.per_core[core].load(Ordering::Relaxed);
        let here = here.min(self.per_core.len() - 1);
        (0..self.per_core.len())
            .min_by_key(|&core| (count(core), core != here))
            .unwrap_or(here)
    }

    /// Counts one connection on `core` until the returned slot is dropped.
    pub fn claim(self: &Arc<Self>, core: usize) -> ConnectionSlot {
        let core = core.min(self.per_core.len() - 1);
        self.per_core[core].fetch_add(1, Ordering::Relaxed);
        ConnectionSlot {
            counts: self.clone(),
            core,
        }
    }
}

/// One connection's place in [`ConnectionCounts`]; it travels with the connection and is
/// released when the connection ends, wherever that happens.
#[derive(Debug)]
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    core: usize,
}

impl ConnectionSlot {
    /// The core this connection is counted on.
    pub fn core(&self) -> usize {
        self.core
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.counts.per_core[self.core].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_placed_by_one_core_spread_over_all() {
        let counts = ConnectionCounts::new(2);
        // A burst all served by core 0 so far: placed alternately, each counted at once.
        let slots: Vec<ConnectionSlot> = (0..4)
            .map(|_| counts.claim(counts.least_loaded(0)))
            .collect();
        assert_eq!(counts.per_core(), vec![2, 2]);
        assert_eq!(
            slots.iter().map(ConnectionSlot::core).collect::<Vec<_>>(),
            vec![0, 1, 0, 1],
            "a tie keeps the connection where it is"
        );
        drop(slots);
        assert_eq!(counts.per_core(), vec![0, 0]);
    }

    #[test]
    fn a_closed_connection_makes_room_on_its_core() {
        let counts = ConnectionCounts::new(3);
        let a = counts.claim(0);
        let _b = counts.claim(1);
        let _c = counts.claim(2);
        assert_eq!(counts.least_loaded(2), 2);
        drop(a);
        // Core 0 now serves fewer: connections placed anywhere go there.
        assert_eq!(counts.least_loaded(1), 0);
        assert_eq!(counts.least_loaded(2), 0);
        assert_eq!(counts.per_core(), vec![0, 1, 1]);
    }
}
