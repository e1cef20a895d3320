//! A fetch-based consumer of assigned partitions (no consumer group). Each `poll` sends one
//! Fetch per partition leader (all in flight at once) and returns the batches received, with
//! positions advanced past them. Leaders are re-read from Metadata when a broker says it no
//! longer leads a partition.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::{
    FetchRequest, TopicName,
    fetch_request::{FetchPartition, FetchTopic},
};
use kafka_protocol::protocol::StrBytes;

use super::admin::{EARLIEST, LATEST};
use super::cluster::{Cluster, with_timeout};
use super::error::{ClientError, Result};
use super::records::{Batch, parse_batches};

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
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 50 << 20,
            partition_max_bytes: 1 << 20,
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
}

/// A consumer of some partitions of one topic.
pub struct Consumer {
    cluster: Rc<Cluster>,
    topic: String,
    cfg: ConsumerConfig,
    positions: BTreeMap<i32, i64>,
    leaders: BTreeMap<i32, i32>,
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

    /// One round of fetches (one request per leader, concurrently).
    pub async fn poll(&mut self) -> Result<Vec<Fetched>> {
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for (p, pos) in &self.positions {
            let leader = self.leaders.get(p).copied().unwrap_or(-1);
            by_leader.entry(leader).or_default().push((*p, *pos));
        }
        if by_leader.contains_key(&-1) {
            self.refresh_leaders().await?;
            glommio::timer::sleep(Duration::from_millis(100)).await;
            return Ok(Vec::new());
        }
        let topic = TopicName(StrBytes::from_string(self.topic.clone()));
        let mut pending = Vec::new();
        for (leader, parts) in &by_leader {
            let conn = self.cluster.node(*leader).await?;
            let mut ft = FetchTopic::default();
            ft.topic = topic.clone();
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
            pending.push(conn.send(&req, v).await?);
        }
        let timeout = self.cluster.config().request_timeout
            + Duration::from_millis(self.cfg.max_wait_ms.max(0) as u64);
        let mut out = Vec::new();
        let mut stale_leaders = false;
        for f in pending {
            let resp = with_timeout(timeout, "Fetch", f.wait()).await?;
            ClientError::check(resp.error_code, || format!("fetch {}", self.topic))?;
            for t in resp.responses {
                for p in t.partitions {
                    let ctx = || format!("fetch {}-{}", self.topic, p.partition_index);
                    match p.error_code {
                        0 => {}
                        // NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, FENCED/UNKNOWN_LEADER_EPOCH
                        6 | 5 | 74 | 76 => {
                            stale_leaders = true;
                            continue;
                        }
                        code => return Err(ClientError::kafka(ctx(), code, None)),
                    }
                    let Some(pos) = self.positions.get(&p.partition_index).copied() else {
                        continue;
                    };
                    let batches = match p.records {
                        Some(r) if !r.is_empty() => parse_batches(r)?,
                        _ => Vec::new(),
                    };
                    let mut next = pos;
                    for b in &batches {
                        next = next.max(b.next_offset());
                    }
                    self.positions.insert(p.partition_index, next);
                    out.push(Fetched {
                        partition: p.partition_index,
                        skip_below: pos,
                        batches,
                        high_watermark: p.high_watermark,
                    });
                }
            }
        }
        if stale_leaders {
            self.refresh_leaders().await?;
        }
        Ok(out)
    }
}
