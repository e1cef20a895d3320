//! Partitioning like the Java client's default: murmur2 of the key, so keyed records land on the
//! same partition a Java (or librdkafka `murmur2_random`) producer would choose.

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    match rest.len() {
        3 => {
            h ^= (rest[2] as u32) << 16;
            h ^= (rest[1] as u32) << 8;
            h ^= rest[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (rest[1] as u32) << 8;
            h ^= rest[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= rest[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Partition for a key, as Java's `BuiltInPartitioner.partitionForKey`: `toPositive(murmur2) % n`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Chooses partitions for records without an explicit one: keyed records by murmur2, unkeyed
/// records stick to one partition until a batch is sealed, then move on (the "sticky" strategy,
/// which keeps batches full at low rates).
#[derive(Debug, Clone)]
pub struct Partitioner {
    sticky: i32,
}

impl Default for Partitioner {
    fn default() -> Self {
        Self::new()
    }
}

impl Partitioner {
    /// Starts the sticky partition at a random place so several producers spread out.
    pub fn new() -> Self {
        Self {
            sticky: rand::random::<u16>() as i32,
        }
    }

    /// Partition for a record.
    pub fn partition(&self, key: Option<&[u8]>, partitions: i32) -> i32 {
        match key {
            Some(k) => partition_for_key(k, partitions),
            None => self.sticky.rem_euclid(partitions.max(1)),
        }
    }

    /// Called when the batch of the sticky partition was sealed: move to the next partition.
    pub fn on_batch_sealed(&mut self) {
        self.sticky = self.sticky.wrapping_add(1) & 0x7fff_ffff;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_java_reference_values() {
        // Values from Kafka's UtilsTest.testMurmur2.
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input), *want, "{:?}", std::str::from_utf8(input));
        }
    }

    #[test]
    fn keyed_partition_is_stable_and_in_range() {
        for n in 1..20 {
            let p = partition_for_key(b"user-42", n);
            assert!((0..n).contains(&p));
            assert_eq!(p, partition_for_key(b"user-42", n));
        }
    }

    #[test]
    fn sticky_moves_on_after_seal() {
        let mut p = Partitioner::new();
        let a = p.partition(None, 4);
        assert_eq!(a, p.partition(None, 4));
        p.on_batch_sealed();
        assert_eq!((a + 1) % 4, p.partition(None, 4));
    }
}
