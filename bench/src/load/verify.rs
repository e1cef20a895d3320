//! End-to-end verification. Every e2e payload carries (producer id, sequence number, send time).
//! Producers mark the sequences the broker acknowledged; the consumer checks, per partition,
//! that each producer's sequences arrive in increasing order and at most once. At the end an
//! acknowledged sequence never received is lost.
//!
//! Records whose produce failed are not expected; if one shows up anyway (a broker may store a
//! batch and still time out) it is counted as `unacked_received`, not as an error.

use std::collections::hash_map::Entry;

use serde::Serialize;

/// Bytes at the start of an e2e payload.
pub const HEADER_BYTES: usize = 24;
const MAGIC: u32 = 0x4752_4742; // "GRGB"

/// Writes the e2e header into the first [`HEADER_BYTES`] of `buf`.
pub fn write_header(buf: &mut [u8], producer: u32, seq: u64, send_ns: u64) {
    buf[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    buf[4..8].copy_from_slice(&producer.to_be_bytes());
    buf[8..16].copy_from_slice(&seq.to_be_bytes());
    buf[16..24].copy_from_slice(&send_ns.to_be_bytes());
}

/// Reads (producer, seq, send_ns) from an e2e payload, None if it is not one.
pub fn read_header(buf: &[u8]) -> Option<(u32, u64, u64)> {
    if buf.len() < HEADER_BYTES || buf[0..4] != MAGIC.to_be_bytes() {
        return None;
    }
    let u64_at = |i: usize| u64::from_be_bytes(buf[i..i + 8].try_into().unwrap_or([0; 8]));
    Some((
        u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        u64_at(8),
        u64_at(16),
    ))
}

/// A growable bit set indexed by sequence number.
#[derive(Debug, Clone, Default)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// Sets bit `i`; returns whether it was already set.
    pub fn set(&mut self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let was = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        was
    }

    /// Whether bit `i` is set.
    pub fn get(&self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        self.words.get(w).is_some_and(|x| x & (1 << b) != 0)
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// Iterates over set bits.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, w)| {
            (0..64)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| wi as u64 * 64 + b)
        })
    }
}

/// Consumer-side checker.
#[derive(Debug, Default)]
pub struct ReceiveCheck {
    seen: Vec<BitSet>,
    /// Last sequence per (producer, partition).
    last: std::collections::HashMap<(u32, i32), u64>,
    /// Records received.
    pub received: u64,
    /// Records received twice or more.
    pub duplicated: u64,
    /// Records that arrived after a later sequence of the same producer in that partition.
    pub reordered: u64,
    /// A few descriptions of problems, for the report.
    pub examples: Vec<String>,
}

const MAX_EXAMPLES: usize = 5;

impl ReceiveCheck {
    /// Checks one received record.
    pub fn on_record(&mut self, partition: i32, offset: i64, producer: u32, seq: u64) {
        self.received += 1;
        let p = producer as usize;
        if p >= self.seen.len() {
            self.seen.resize(p + 1, BitSet::default());
        }
        if self.seen[p].set(seq) {
            self.duplicated += 1;
            if self.examples.len() < MAX_EXAMPLES {
                self.examples.push(format!(
                    "duplicate: producer {producer} seq {seq} again at partition {partition} offset {offset}"
                ));
            }
            return;
        }
        // One hash per record (this runs for every record an e2e consumer reads).
        match self.last.entry((producer, partition)) {
            Entry::Occupied(e) if seq < *e.get() => {
                let last = *e.get();
                self.reordered += 1;
                if self.examples.len() < MAX_EXAMPLES {
                    self.examples.push(format!(
                        "reordered: producer {producer} seq {seq} after seq {last} in partition {partition} (offset {offset})"
                    ));
                }
            }
            Entry::Occupied(mut e) => {
                e.insert(seq);
            }
            Entry::Vacant(e) => {
                e.insert(seq);
            }
        }
    }

    /// Adds the state of a checker that saw other partitions.
    pub fn absorb(&mut self, other: ReceiveCheck) {
        for (p, set) in other.seen.into_iter().enumerate() {
            if p >= self.seen.len() {
                self.seen.resize(p + 1, BitSet::default());
            }
            for seq in set.iter() {
                if self.seen[p].set(seq) {
                    self.duplicated += 1;
                }
            }
        }
        self.last.extend(other.last);
        self.received += other.received;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.examples.extend(other.examples);
        self.examples.truncate(MAX_EXAMPLES * 2);
    }

    /// Whether `(producer, seq)` was received.
    pub fn was_received(&self, producer: u32, seq: u64) -> bool {
        self.seen.get(producer as usize).is_some_and(|s| s.get(seq))
    }
}

/// The verification outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Records acknowledged by the broker.
    pub acked: u64,
    /// Records received (duplicates included).
    pub received: u64,
    /// Acknowledged but never received.
    pub lost: u64,
    /// Received more than once.
    pub duplicated: u64,
    /// Received out of order within a partition.
    pub reordered: u64,
    /// Received although their produce request failed (not an error).
    pub unacked_received: u64,
    /// A few examples of problems.
    pub examples: Vec<String>,
}

impl VerifyReport {
    /// True when nothing was lost, duplicated or reordered.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.reordered == 0
    }
}

/// Compares what producers had acknowledged (`acked[producer]`) with what was received.
pub fn verify(acked: &[BitSet], rx: &ReceiveCheck) -> VerifyReport {
    let mut r = VerifyReport {
        received: rx.received,
        duplicated: rx.duplicated,
        reordered: rx.reordered,
        examples: rx.examples.clone(),
        ..Default::default()
    };
    for (p, set) in acked.iter().enumerate() {
        for seq in set.iter() {
            r.acked += 1;
            if !rx.was_received(p as u32, seq) {
                r.lost += 1;
                if r.examples.len() < MAX_EXAMPLES * 2 {
                    r.examples.push(format!(
                        "lost: producer {p} seq {seq} was acknowledged, never received"
                    ));
                }
            }
        }
    }
    for (p, seen) in rx.seen.iter().enumerate() {
        for seq in seen.iter() {
            if !acked.get(p).is_some_and(|a| a.get(seq)) {
                r.unacked_received += 1;
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One producer, 2 partitions, seqs 0..100 alternating partitions; all acked.
    fn clean() -> (Vec<BitSet>, Vec<(i32, u64)>) {
        let mut acked = BitSet::default();
        let mut stream = Vec::new();
        for seq in 0..100u64 {
            acked.set(seq);
            stream.push(((seq % 2) as i32, seq));
        }
        (vec![acked], stream)
    }

    fn run(acked: &[BitSet], stream: &[(i32, u64)]) -> VerifyReport {
        let mut rx = ReceiveCheck::default();
        for (i, (p, seq)) in stream.iter().enumerate() {
            rx.on_record(*p, i as i64, 0, *seq);
        }
        verify(acked, &rx)
    }

    #[test]
    fn clean_run_passes() {
        let (acked, stream) = clean();
        let r = run(&acked, &stream);
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.acked, r.received), (100, 100));
    }

    #[test]
    fn detects_a_lost_record() {
        let (acked, mut stream) = clean();
        stream.remove(41);
        let r = run(&acked, &stream);
        assert_eq!((r.lost, r.duplicated, r.reordered), (1, 0, 0));
        assert!(!r.ok());
        assert!(r.examples[0].contains("seq 41"), "{:?}", r.examples);
    }

    #[test]
    fn detects_a_duplicated_record() {
        let (acked, mut stream) = clean();
        stream.insert(60, stream[20]);
        let r = run(&acked, &stream);
        assert_eq!((r.lost, r.duplicated, r.reordered), (0, 1, 0));
        assert!(!r.ok());
    }

    #[test]
    fn detects_a_reordered_record() {
        let (acked, mut stream) = clean();
        // Swap two records of the same partition (seqs 10 and 12, both partition 0).
        stream.swap(10, 12);
        let r = run(&acked, &stream);
        assert_eq!((r.lost, r.duplicated, r.reordered), (0, 0, 1));
        assert!(!r.ok());
    }

    #[test]
    fn interleaving_across_partitions_is_not_reordering() {
        let (acked, mut stream) = clean();
        // Seq 11 (partition 1) before seq 10 (partition 0): fine, different partitions.
        stream.swap(10, 11);
        assert!(run(&acked, &stream).ok());
    }

    #[test]
    fn unacked_records_are_not_lost_when_missing() {
        let (mut acked, mut stream) = clean();
        acked[0] = BitSet::default();
        for seq in (0..100).filter(|s| *s != 7) {
            acked[0].set(seq);
        }
        stream.retain(|(_, s)| *s != 7);
        assert!(run(&acked, &stream).ok());
    }

    #[test]
    fn header_round_trip() {
        let mut b = [0u8; 40];
        write_header(&mut b, 3, 77, 123456);
        assert_eq!(read_header(&b), Some((3, 77, 123456)));
        assert_eq!(read_header(&[0u8; 40]), None);
    }
}
