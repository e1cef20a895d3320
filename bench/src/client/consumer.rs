//! A fetch-based consumer of assigned partitions (no consumer group). Each `poll` returns the
//! batches of one Fetch per partition leader (all in flight at once), with positions advanced
//! past them; the next Fetch to each leader is already sent when `poll` returns (prefetch). Leaders are re-read from Metadata when a broker says it no
//! longer leads a partition.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    FetchRequest, TopicName,
    fetch_request::{FetchPartition, FetchTopic},
};
use kafka_protocol::protocol::StrBytes;

use super::admin::{EARLIEST, LATEST};
use super::cluster::{Cluster, with_timeout};
use super::conn::ResponseFuture;
use super::error::{ClientError, Result};
use super::records::{Batch, next_fetch_offset, parse_batches};

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The first offset still stored.
    Earliest,
    /// The end of the log: only records produced from now on.
    Latest,
    /// An exact offset.
    Offset(i64),
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Broker waits up to this long for `min_bytes`.
    pub max_wait_ms: i32,
    /// Broker answers as soon as this much data is available.
    pub min_bytes: i32,
    /// Bound on one Fetch response.
    pub max_bytes: i32,
    /// Bound per partition in one Fetch response.
    pub partition_max_bytes: i32,
    /// Send the next Fetch to a leader before its response is handed to the caller only if
    /// the response carried at least this many record bytes: then the consumer is behind, the
    /// next Fetch finds data at once, and the caller's work on this response hides its round
    /// trip. At the tail (small responses) there is nothing to overlap and a prefetch would
    /// only park a long poll in the broker, so there the next Fetch waits for the next `poll`,
    /// as without prefetch, and end-to-end latency at a target rate is measured as before.
    pub prefetch_min_bytes: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 50 << 20,
            partition_max_bytes: 1 << 20,
            prefetch_min_bytes: 512 << 10,
        }
    }
}

/// Batches fetched from one partition.
#[derive(Debug)]
pub struct Fetched {
    /// Partition.
    pub partition: i32,
    /// Records below this offset were already returned (or skipped) and must be ignored: a
    /// broker returns whole batches, which may start before the requested offset.
    pub skip_below: i64,
    /// The batches.
    pub batches: Vec<Batch>,
    /// High watermark reported by the broker.
    pub high_watermark: i64,
    /// When the response arrived, before the consumer's own work on it (sending the next
    /// Fetch, checking CRCs), so end-to-end latency does not include the tool's time.
    pub received_at: Instant,
}

/// A consumer of some partitions of one topic.
pub struct Consumer {
    cluster: Rc<Cluster>,
    topic: String,
    cfg: ConsumerConfig,
    positions: BTreeMap<i32, i64>,
    leaders: BTreeMap<i32, i32>,
    /// At most one Fetch per leader, sent ahead from the offsets its last response ended at.
    in_flight: BTreeMap<i32, InFlightFetch>,
}

/// A Fetch sent and not yet answered.
struct InFlightFetch {
    response: ResponseFuture<FetchRequest>,
    /// The partitions asked for, and the offset asked for each.
    offsets: BTreeMap<i32, i64>,
}

impl Consumer {
    /// A consumer with no partitions assigned.
    pub fn new(cluster: Rc<Cluster>, topic: &str, cfg: ConsumerConfig) -> Self {
        Self {
            cluster,
            topic: topic.to_string(),
            cfg,
            positions: BTreeMap::new(),
            leaders: BTreeMap::new(),
            in_flight: BTreeMap::new(),
        }
    }

    /// Partition count of the topic (from Metadata).
    pub async fn partition_count(&self) -> Result<i32> {
        Ok(self
            .cluster
            .topic_metadata(&self.topic, false)
            .await?
            .partitions
            .len() as i32)
    }

    /// Assigns partitions, resolving `start` through ListOffsets.
    pub async fn assign(&mut self, partitions: &[i32], start: StartOffset) -> Result<()> {
        self.refresh_leaders().await?;
        for p in partitions {
            if !self.leaders.contains_key(p) {
                return Err(ClientError::kafka(
                    format!("partition {}-{p}", self.topic),
                    3,
                    None,
                ));
            }
        }
        let offsets = match start {
            StartOffset::Offset(o) => partitions.iter().map(|p| (*p, o)).collect(),
            StartOffset::Earliest => {
                self.cluster
                    .list_offsets(&self.topic, partitions, EARLIEST)
                    .await?
            }
            StartOffset::Latest => {
                self.cluster
                    .list_offsets(&self.topic, partitions, LATEST)
                    .await?
            }
        };
        for (p, o) in offsets {
            self.positions.insert(p, o);
        }
        Ok(())
    }

    /// Latest offsets (log end) of some partitions, from their leaders.
    pub async fn cluster_list_latest(&self, partitions: &[i32]) -> Result<BTreeMap<i32, i64>> {
        self.cluster
            .list_offsets(&self.topic, partitions, LATEST)
            .await
    }

    /// Current position (next offset to read) per partition.
    pub fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    async fn refresh_leaders(&mut self) -> Result<()> {
        let meta = self.cluster.topic_metadata(&self.topic, false).await?;
        self.leaders = meta
            .partitions
            .iter()
            .map(|p| (p.partition, p.leader))
            .collect();
        Ok(())
    }

    /// Sends a Fetch to `leader` for `parts` (partition, offset) and records it as in flight.
    async fn send_fetch(&mut self, leader: i32, parts: BTreeMap<i32, i64>) -> Result<()> {
        let conn = self.cluster.node(leader).await?;
        let mut ft = FetchTopic::default();
        ft.topic = TopicName(StrBytes::from_string(self.topic.clone()));
        ft.partitions = parts
            .iter()
            .map(|(p, pos)| {
                let mut fp = FetchPartition::default();
                fp.partition = *p;
                fp.current_leader_epoch = -1;
                fp.fetch_offset = *pos;
                fp.log_start_offset = -1;
                fp.partition_max_bytes = self.cfg.partition_max_bytes;
                fp
            })
            .collect();
        let mut req = FetchRequest::default();
        req.replica_id = (-1).into();
        req.max_wait_ms = self.cfg.max_wait_ms;
        req.min_bytes = self.cfg.min_bytes;
        req.max_bytes = self.cfg.max_bytes;
        req.isolation_level = 0;
        req.session_id = 0;
        req.session_epoch = -1;
        req.topics = vec![ft];
        let v = conn.version_of::<FetchRequest>()?;
        let response = conn.send(&req, v).await?;
        self.in_flight.insert(
            leader,
            InFlightFetch {
                response,
                offsets: parts,
            },
        );
        Ok(())
    }

    /// Partitions led by `leader` that no in-flight Fetch covers, at their positions (or at
    /// `ahead`, the offsets a response just being handled moves them to).
    fn unfetched_of(&self, leader: i32, ahead: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
        self.positions
            .iter()
            .filter(|(p, _)| self.leaders.get(p) == Some(&leader))
            .filter(|(p, _)| !self.in_flight.values().any(|f| f.offsets.contains_key(p)))
            .map(|(p, pos)| (*p, ahead.get(p).copied().unwrap_or(*pos)))
            .collect()
    }

    /// One round of fetches: a Fetch per leader (all in flight at once), and the batches of each
    /// response. When the consumer is behind (see [`ConsumerConfig::prefetch_min_bytes`]), the
    /// next Fetch to that leader is sent as soon as the response's batch headers give the next
    /// offsets (prefetch), so the broker works on it while the caller reads the records
    /// returned here; at most one Fetch per leader is in flight.
    ///
    /// Positions stay exact: a partition is in at most one in-flight Fetch, a response's data
    /// is used only if it was asked for at the partition's current position, and on any error
    /// the in-flight Fetches (sent from not yet returned positions) are dropped, so the next
    /// poll fetches again from the positions last returned.
    pub async fn poll(&mut self) -> Result<Vec<Fetched>> {
        let r = self.poll_inner().await;
        if r.is_err() {
            self.in_flight.clear();
        }
        r
    }

    async fn poll_inner(&mut self) -> Result<Vec<Fetched>> {
        let unknown_leader = self
            .positions
            .keys()
            .any(|p| self.leaders.get(p).is_none_or(|l| *l < 0));
        if unknown_leader {
            self.in_flight.clear();
            self.refresh_leaders().await?;
            glommio::timer::sleep(Duration::from_millis(100)).await;
            return Ok(Vec::new());
        }
        let leaders: BTreeSet<i32> = self.leaders_of_positions();
        for leader in leaders {
            if self.in_flight.contains_key(&leader) {
                continue;
            }
            let parts = self.unfetched_of(leader, &BTreeMap::new());
            if !parts.is_empty() {
                self.send_fetch(leader, parts).await?;
            }
        }
        let timeout = self.cluster.config().request_timeout
            + Duration::from_millis(self.cfg.max_wait_ms.max(0) as u64);
        let mut out = Vec::new();
        // New positions, applied only once every response of this round was handled.
        let mut advanced: BTreeMap<i32, i64> = BTreeMap::new();
        let mut stale_leaders = false;
        let waiting: Vec<i32> = self.in_flight.keys().copied().collect();
        for leader in waiting {
            let Some(f) = self.in_flight.remove(&leader) else {
                continue;
            };
            let resp = with_timeout(timeout, "Fetch", f.response.wait()).await?;
            let received_at = Instant::now();
            ClientError::check(resp.error_code, || format!("fetch {}", self.topic))?;
            // Headers only: where each partition continues.
            let mut accepted = Vec::new();
            let mut next_offsets = BTreeMap::new();
            let mut stale_here = false;
            let mut response_bytes = 0usize;
            for t in resp.responses {
                for p in t.partitions {
                    let part = p.partition_index;
                    let Some(asked) = f.offsets.get(&part).copied() else {
                        continue; // not asked for
                    };
                    if next_offsets.contains_key(&part) {
                        continue; // listed twice by the broker: the first copy counts
                    }
                    if self.positions.get(&part) != Some(&asked) {
                        continue; // re-assigned since; this data is not next
                    }
                    match p.error_code {
                        0 => {}
                        // NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, FENCED/UNKNOWN_LEADER_EPOCH
                        6 | 5 | 74 | 76 => {
                            stale_here = true;
                            continue;
                        }
                        code => {
                            let ctx = format!("fetch {}-{part}", self.topic);
                            return Err(ClientError::kafka(ctx, code, None));
                        }
                    }
                    let records = p.records.unwrap_or_default();
                    response_bytes += records.len();
                    let next = next_fetch_offset(&records, asked)?;
                    next_offsets.insert(part, next);
                    accepted.push((part, asked, records, p.high_watermark, next));
                }
            }
            // Prefetch when behind (see `prefetch_min_bytes`), unless this leader may have
            // lost partitions (refetched after the Metadata refresh below instead).
            if stale_here {
                stale_leaders = true;
            } else if response_bytes >= self.cfg.prefetch_min_bytes {
                let parts = self.unfetched_of(leader, &next_offsets);
                if !parts.is_empty() {
                    self.send_fetch(leader, parts).await?;
                }
            }
            // Now the per-byte work (CRC, decompression), while the next Fetch is served.
            for (partition, asked, records, high_watermark, next) in accepted {
                let batches = if records.is_empty() {
                    Vec::new()
                } else {
                    parse_batches(records)?
                };
                advanced.insert(partition, next);
                out.push(Fetched {
                    partition,
                    skip_below: asked,
                    batches,
                    high_watermark,
                    received_at,
                });
            }
        }
        self.positions.extend(advanced);
        if stale_leaders {
            self.refresh_leaders().await?;
        }
        Ok(out)
    }

    fn leaders_of_positions(&self) -> BTreeSet<i32> {
        self.positions
            .keys()
            .filter_map(|p| self.leaders.get(p).copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;
    use crate::client::fake_broker::{FakeBroker, FakeConfig};
    use crate::client::producer::AckCallback;
    use crate::client::{BatchAck, ClientConfig, Producer, ProducerConfig, block_on};

    /// Records per partition in the tests; small batches, so a fetch holds several of them.
    const RECORDS_PER_PARTITION: i64 = 200;

    fn broker(partitions: i32, fail_fetch: Option<(usize, i16)>) -> FakeBroker {
        let broker = FakeBroker::start(FakeConfig {
            topic: "t".into(),
            partitions,
            fail_every_nth_fetch: fail_fetch,
            cut_fetch_mid_batch: true,
            ..Default::default()
        });
        let addr = broker.addr.clone();
        block_on(move || async move {
            let cluster = Cluster::connect(ClientConfig::new(&addr)).await.unwrap();
            let acked = Rc::new(Cell::new(0i64));
            let a = acked.clone();
            let on_ack: AckCallback = Rc::new(move |b: &BatchAck<'_>| {
                assert!(b.error.is_none(), "{:?}", b.error);
                a.set(a.get() + b.record_count as i64);
            });
            let cfg = ProducerConfig {
                batch_bytes: 300,
                ..Default::default()
            };
            let p = Producer::new(cluster, "t", cfg, on_ack).await.unwrap();
            for p_idx in 0..partitions {
                for i in 0..RECORDS_PER_PARTITION {
                    let v = format!("p{p_idx}-{i:06}");
                    p.send(Some(p_idx), None, Some(v.as_bytes()), &[], 0, 0)
                        .await
                        .unwrap();
                }
            }
            p.close().await.unwrap();
            assert_eq!(acked.get(), RECORDS_PER_PARTITION * partitions as i64);
        })
        .unwrap();
        broker
    }

    fn small_fetches() -> ConsumerConfig {
        ConsumerConfig {
            max_wait_ms: 10,
            // A few batches per partition per fetch, cut mid-batch by the fake broker.
            partition_max_bytes: 700,
            // Prefetch after every response with data, to test it with small ones.
            prefetch_min_bytes: 1,
            ..Default::default()
        }
    }

    /// What one poll delivered, as (partition, offset, value) in delivery order, with records
    /// below `skip_below` dropped as callers must.
    fn delivered(fetched: &[Fetched]) -> Vec<(i32, i64, String)> {
        let mut out = Vec::new();
        for f in fetched {
            for b in &f.batches {
                for r in b.records() {
                    let r = r.unwrap();
                    if r.offset < f.skip_below {
                        continue;
                    }
                    let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                    out.push((f.partition, r.offset, v));
                }
            }
        }
        out
    }

    /// Each partition's records must arrive once each, in order, from `from` to the end.
    fn assert_exact(got: &[(i32, i64, String)], partitions: i32, from: i64) {
        let mut per: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for (p, o, v) in got {
            assert_eq!(v, &format!("p{p}-{o:06}"), "value at {p}:{o}");
            per.entry(*p).or_default().push(*o);
        }
        for p in 0..partitions {
            let want: Vec<i64> = (from..RECORDS_PER_PARTITION).collect();
            assert_eq!(per.get(&p), Some(&want), "partition {p}");
        }
    }

    /// Polls until `n` records arrived (or 50 polls in a row brought none); returns them and
    /// how many polls brought nothing.
    async fn consume_until(c: &mut Consumer, n: usize) -> (Vec<(i32, i64, String)>, usize) {
        let (mut got, mut empty, mut empty_in_a_row) = (Vec::new(), 0, 0);
        while got.len() < n && empty_in_a_row < 50 {
            let d = delivered(&c.poll().await.unwrap());
            if d.is_empty() {
                empty += 1;
                empty_in_a_row += 1;
            } else {
                empty_in_a_row = 0;
            }
            got.extend(d);
        }
        (got, empty)
    }

    #[test]
    fn prefetch_delivers_every_record_once_in_order_from_mid_batch() {
        let broker = broker(3, None);
        let addr = broker.addr.clone();
        let got = block_on(move || async move {
            let cluster = Cluster::connect(ClientConfig::new(&addr)).await.unwrap();
            let mut c = Consumer::new(cluster, "t", small_fetches());
            // Offset 5 is inside the first batch: the broker returns it whole.
            c.assign(&[0, 1, 2], StartOffset::Offset(5)).await.unwrap();
            let (got, empty) =
                consume_until(&mut c, 3 * (RECORDS_PER_PARTITION as usize - 5)).await;
            // All data is there: every prefetched response must be usable, none wasted.
            assert_eq!(empty, 0);
            // Past the end nothing more arrives (a duplicate would show up here).
            let mut more = Vec::new();
            for _ in 0..5 {
                more.extend(delivered(&c.poll().await.unwrap()));
            }
            assert!(more.is_empty(), "{more:?}");
            assert!(c.positions().values().all(|p| *p == RECORDS_PER_PARTITION));
            got
        })
        .unwrap();
        assert_exact(&got, 3, 5);
    }

    #[test]
    fn next_fetch_is_in_flight_while_the_caller_reads() {
        let broker = broker(1, None);
        let addr = broker.addr.clone();
        let b = std::sync::Arc::new(broker);
        let (after_poll, after_wait) = block_on(move || async move {
            let seen = || b.fetches_seen();
            let cluster = Cluster::connect(ClientConfig::new(&addr)).await.unwrap();
            let mut c = Consumer::new(cluster, "t", small_fetches());
            c.assign(&[0], StartOffset::Earliest).await.unwrap();
            let first = c.poll().await.unwrap();
            assert!(!delivered(&first).is_empty());
            let after_poll = seen();
            // The caller is "reading": the next Fetch must reach the broker meanwhile.
            glommio::timer::sleep(Duration::from_millis(100)).await;
            (after_poll, seen())
        })
        .unwrap();
        assert!(after_poll >= 1);
        assert_eq!(after_wait, 2, "one prefetch, no more (bounded)");
    }

    #[test]
    fn no_prefetch_below_the_threshold() {
        let broker = broker(1, None);
        let addr = broker.addr.clone();
        let b = std::sync::Arc::new(broker);
        let (after_poll, after_wait, got) = block_on(move || async move {
            let cluster = Cluster::connect(ClientConfig::new(&addr)).await.unwrap();
            let cfg = ConsumerConfig {
                prefetch_min_bytes: 1 << 20,
                ..small_fetches()
            };
            let mut c = Consumer::new(cluster, "t", cfg);
            c.assign(&[0], StartOffset::Earliest).await.unwrap();
            let first = delivered(&c.poll().await.unwrap());
            assert!(!first.is_empty());
            let after_poll = b.fetches_seen();
            glommio::timer::sleep(Duration::from_millis(100)).await;
            let after_wait = b.fetches_seen();
            let (mut got, _) = consume_until(&mut c, RECORDS_PER_PARTITION as usize).await;
            got.splice(0..0, first);
            (after_poll, after_wait, got)
        })
        .unwrap();
        assert_eq!(
            (after_poll, after_wait),
            (1, 1),
            "the next Fetch waits for poll"
        );
        assert_exact(&got, 1, 0);
    }

    #[test]
    fn stale_leader_errors_drop_nothing_and_duplicate_nothing() {
        // Every 3rd Fetch answers NOT_LEADER_OR_FOLLOWER for all partitions.
        let broker = broker(2, Some((3, 6)));
        let addr = broker.addr.clone();
        let got = block_on(move || async move {
            let cluster = Cluster::connect(ClientConfig::new(&addr)).await.unwrap();
            let mut c = Consumer::new(cluster, "t", small_fetches());
            c.assign(&[0, 1], StartOffset::Earliest).await.unwrap();
            consume_until(&mut c, 2 * RECORDS_PER_PARTITION as usize)
                .await
                .0
        })
        .unwrap();
        assert_exact(&got, 2, 0);
    }

    #[test]
    fn seeking_while_a_prefetch_is_in_flight_discards_it() {
        let broker = broker(1, None);
        let addr = broker.addr.clone();
        let (first, after) = block_on(move || async move {
            let cluster = Cluster::connect(ClientConfig::new(&addr)).await.unwrap();
            let mut c = Consumer::new(cluster, "t", small_fetches());
            c.assign(&[0], StartOffset::Earliest).await.unwrap();
            let first = delivered(&c.poll().await.unwrap());
            // A prefetch from where `first` ended is in flight; go back to offset 3.
            c.assign(&[0], StartOffset::Offset(3)).await.unwrap();
            let (after, _) = consume_until(&mut c, RECORDS_PER_PARTITION as usize - 3).await;
            (first, after)
        })
        .unwrap();
        assert!(first.len() > 3);
        assert_exact(&after, 1, 3);
    }
}
