//! Sparse offset and time indexes, kept in memory and persisted in Kafka's file formats.
//!
//! `.index`: 8-byte entries `[relative_offset u32 BE][position u32 BE]`; an entry says the
//! batch starting at `position` ends at offset `base + relative_offset` (Kafka's convention).
//! `.timeindex`: 12-byte entries `[timestamp i64 BE][relative_offset u32 BE]`: the largest
//! timestamp seen so far and the offset it belongs to; timestamps strictly increase.

/// Bytes per offset index entry.
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes per time index entry.
pub const TIME_ENTRY_BYTES: usize = 12;

/// One `.index` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One `.timeindex` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct OffsetIndex {
    pub entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    /// Position of the last indexed batch ending at or before `relative_offset`, or 0.
    /// Scanning forward from there finds the batch containing the offset.
    pub fn lookup(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let n = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// Position of the last indexed batch starting at or before `position` (a batch
    /// boundary, as far as the index is right).
    pub fn batch_start_at_or_below(&self, position: u64) -> Option<u64> {
        let n = self
            .entries
            .partition_point(|e| (e.position as u64) <= position);
        n.checked_sub(1).map(|i| self.entries[i].position as u64)
    }

    pub fn push(&mut self, entry: OffsetEntry) {
        debug_assert!(
            self.entries
                .last()
                .is_none_or(|l| l.relative_offset < entry.relative_offset)
        );
        self.entries.push(entry);
    }

    pub fn truncate_to_position(&mut self, position: u64) {
        let n = self
            .entries
            .partition_point(|e| (e.position as u64) < position);
        self.entries.truncate(n);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        out
    }

    /// Decode and sanity-check a `.index` file against the segment's size: entries must
    /// strictly increase in both offset and position, and point inside the log.
    pub fn decode(bytes: &[u8], log_bytes: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_BYTES) {
            return None;
        }
        let mut index = OffsetIndex {
            entries: Vec::with_capacity(bytes.len() / OFFSET_ENTRY_BYTES),
        };
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let e = OffsetEntry {
                relative_offset: u32::from_be_bytes(chunk[0..4].try_into().ok()?),
                position: u32::from_be_bytes(chunk[4..8].try_into().ok()?),
            };
            if let Some(last) = index.entries.last()
                && (e.relative_offset <= last.relative_offset || e.position <= last.position)
            {
                return None;
            }
            if e.position as u64 >= log_bytes {
                return None;
            }
            index.entries.push(e);
        }
        Some(index)
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct TimeIndex {
    pub entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// The last entry with a timestamp strictly below `timestamp`: every batch up to that
    /// entry's offset has a max timestamp below the target, so a scan can start there.
    pub fn lookup_below(&self, timestamp: i64) -> Option<TimeEntry> {
        let n = self.entries.partition_point(|e| e.timestamp < timestamp);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// Append if the timestamp grows (Kafka's `maybeAppend`).
    pub fn maybe_push(&mut self, entry: TimeEntry) {
        if self
            .entries
            .last()
            .is_none_or(|l| entry.timestamp > l.timestamp)
        {
            self.entries.push(entry);
        }
    }

    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let n = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(n);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.timestamp.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        out
    }

    /// Decode and sanity-check a `.timeindex`: timestamps strictly increase, offsets do not
    /// decrease and stay below `relative_end` (the segment's next offset).
    pub fn decode(bytes: &[u8], relative_end: u64) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_BYTES) {
            return None;
        }
        let mut index = TimeIndex {
            entries: Vec::with_capacity(bytes.len() / TIME_ENTRY_BYTES),
        };
        for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let e = TimeEntry {
                timestamp: i64::from_be_bytes(chunk[0..8].try_into().ok()?),
                relative_offset: u32::from_be_bytes(chunk[8..12].try_into().ok()?),
            };
            if let Some(last) = index.entries.last()
                && (e.timestamp <= last.timestamp || e.relative_offset < last.relative_offset)
            {
                return None;
            }
            if e.relative_offset as u64 >= relative_end {
                return None;
            }
            index.entries.push(e);
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_boundaries() {
        let mut idx = OffsetIndex::default();
        for i in 0..10u32 {
            idx.push(OffsetEntry {
                relative_offset: i * 10 + 9,
                position: i * 1000,
            });
        }
        assert_eq!(idx.lookup(0), None);
        assert_eq!(idx.lookup(8), None);
        assert_eq!(idx.lookup(9).unwrap().position, 0);
        assert_eq!(idx.lookup(10).unwrap().position, 0);
        assert_eq!(idx.lookup(19).unwrap().position, 1000);
        assert_eq!(idx.lookup(1_000_000).unwrap().position, 9000);
        let enc = idx.encode();
        let dec = OffsetIndex::decode(&enc, 9001).unwrap();
        assert_eq!(dec.entries, idx.entries);
        assert!(
            OffsetIndex::decode(&enc, 9000).is_none(),
            "position past log end"
        );
        assert!(
            OffsetIndex::decode(&enc[..enc.len() - 1], 9001).is_none(),
            "torn entry"
        );
        let mut bad = enc.clone();
        bad[8..12].copy_from_slice(&0u32.to_be_bytes());
        assert!(
            OffsetIndex::decode(&bad, 9001).is_none(),
            "non-increasing offsets"
        );
        idx.truncate_to_position(1000);
        assert_eq!(idx.entries.len(), 1);
    }

    #[test]
    fn time_lookup_boundaries() {
        let mut idx = TimeIndex::default();
        idx.maybe_push(TimeEntry {
            timestamp: 100,
            relative_offset: 0,
        });
        idx.maybe_push(TimeEntry {
            timestamp: 100,
            relative_offset: 5,
        });
        idx.maybe_push(TimeEntry {
            timestamp: 200,
            relative_offset: 7,
        });
        assert_eq!(idx.entries.len(), 2);
        assert_eq!(idx.lookup_below(100), None);
        assert_eq!(idx.lookup_below(101).unwrap().relative_offset, 0);
        assert_eq!(idx.lookup_below(200).unwrap().relative_offset, 0);
        assert_eq!(idx.lookup_below(201).unwrap().relative_offset, 7);
        let dec = TimeIndex::decode(&idx.encode(), 8).unwrap();
        assert_eq!(dec.entries, idx.entries);
        assert!(TimeIndex::decode(&idx.encode(), 7).is_none());
    }
}
