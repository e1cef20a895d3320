//! The coordinator's life on one core: loading the `__consumer_offsets` partitions this core
//! owns, appending the coordinator's records (group commit: one append and one flush for
//! whatever queued up meanwhile), firing timeouts, and keeping the topic bounded with
//! snapshots.
//!
//! Compaction: once a partition took [`CoordinatorSettings::snapshot_after_records`] records
//! since its last snapshot, the live state of its groups is appended as a snapshot, flushed,
//! and everything before the snapshot's first offset is deleted. Replay applies records in
//! order with the latest value per key winning, so the snapshot plus what follows rebuilds
//! the state exactly; a crash before the deletion leaves older records that the snapshot
//! supersedes anyway.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::coordinator::{
    GroupCoordinator, OFFSETS_TOPIC, OutRecord, PersistFailed, group_partition,
};
use super::records;
use super::settings::CoordinatorSettings;
use super::state::GroupError;
use crate::cores::CoreContext;
use crate::notify::LocalNotify;
use crate::registry::Partition;

/// How often timeouts are checked (session, rebalance, initial delay, retention).
const TICK_INTERVAL_MS: u64 = 100;
/// How often offsets of deleted topics are dropped.
const CLEANUP_INTERVAL_MS: i64 = 5_000;
/// Bytes read per step while loading a partition.
const LOAD_READ_BYTES: usize = 1 << 20;
/// Largest batch the coordinator appends (below the default max.message.bytes).
const BATCH_BYTES_MAX: usize = 512 * 1024;

/// Milliseconds since the epoch (the coordinator's clock; state machine code never reads
/// it, it is passed in).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoadState {
    Loading,
    Loaded,
}

/// One core's coordinator and its bookkeeping. Lives in [`CoreContext`].
pub struct GroupRuntime {
    /// Settings.
    pub settings: CoordinatorSettings,
    coordinator: RefCell<GroupCoordinator>,
    partitions: RefCell<BTreeMap<i32, LoadState>>,
    load_finished: LocalNotify,
    outbox_ready: LocalNotify,
}

impl GroupRuntime {
    /// A runtime with nothing loaded. `boot_nonce` keeps member ids unique across restarts.
    pub fn new(settings: CoordinatorSettings, boot_nonce: u64) -> Self {
        let coordinator = GroupCoordinator::new(
            settings.group.clone(),
            settings.offsets_topic_partitions,
            boot_nonce,
        );
        GroupRuntime {
            settings,
            coordinator: RefCell::new(coordinator),
            partitions: RefCell::new(BTreeMap::new()),
            load_finished: LocalNotify::new(),
            outbox_ready: LocalNotify::new(),
        }
    }

    /// Runs `f` on the coordinator. The borrow ends before this returns, so callers can
    /// await what `f` hands back; the persistence loop is woken if records were queued.
    pub fn with<R>(&self, f: impl FnOnce(&mut GroupCoordinator) -> R) -> R {
        let (r, queued) = {
            let mut c = self.coordinator.borrow_mut();
            let r = f(&mut c);
            (r, c.has_outbox())
        };
        if queued {
            self.outbox_ready.notify_all();
        }
        r
    }

    /// Makes sure the `__consumer_offsets` partition of `group_id` is loaded here, loading
    /// it now if needed. Fails if this core does not have the partition (the topic does not
    /// exist yet, or the request reached the wrong core).
    pub async fn ensure_loaded(
        &self,
        ctx: &Rc<CoreContext>,
        group_id: &str,
    ) -> Result<(), GroupError> {
        let partition = group_partition(group_id, self.settings.offsets_topic_partitions);
        self.ensure_partition_loaded(ctx, partition).await
    }

    async fn ensure_partition_loaded(
        &self,
        ctx: &Rc<CoreContext>,
        partition: i32,
    ) -> Result<(), GroupError> {
        loop {
            let state = self.partitions.borrow().get(&partition).copied();
            match state {
                Some(LoadState::Loaded) => return Ok(()),
                Some(LoadState::Loading) => {
                    let done = self.load_finished.notified();
                    if self.partitions.borrow().get(&partition) == Some(&LoadState::Loading) {
                        done.await;
                    }
                }
                None => {
                    let Some(log) = ctx.registry.get(OFFSETS_TOPIC, partition) else {
                        return Err(GroupError::CoordinatorNotAvailable);
                    };
                    self.partitions
                        .borrow_mut()
                        .insert(partition, LoadState::Loading);
                    let result = self.load(&log).await;
                    match result {
                        Ok(()) => {
                            self.partitions
                                .borrow_mut()
                                .insert(partition, LoadState::Loaded);
                        }
                        Err(e) => {
                            self.partitions.borrow_mut().remove(&partition);
                            self.load_finished.notify_all();
                            return Err(e);
                        }
                    }
                    self.load_finished.notify_all();
                }
            }
        }
    }

    /// Replays one partition's log into the coordinator.
    async fn load(&self, part: &Rc<Partition>) -> Result<(), GroupError> {
        let unavailable = GroupError::CoordinatorNotAvailable;
        let marks = part.log.watermarks();
        let mut offset = marks.log_start_offset;
        let (mut applied, mut skipped) = (0u64, 0u64);
        let now = now_ms();
        while offset < marks.log_end_offset {
            let read = part
                .log
                .read(offset, LOAD_READ_BYTES)
                .await
                .map_err(|code| {
                    tracing::error!(
                        partition = part.index,
                        code,
                        "cannot read __consumer_offsets"
                    );
                    unavailable
                })?;
            let Some(next) = next_offset_after(&read.records) else {
                break;
            };
            if next <= offset {
                break;
            }
            let mut buf = read.records.clone();
            let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(|e| {
                tracing::error!(partition = part.index, error = %e, "corrupt __consumer_offsets batch");
                unavailable
            })?;
            let mut c = self.coordinator.borrow_mut();
            for record in sets.into_iter().flat_map(|s| s.records) {
                if record.offset < offset {
                    continue;
                }
                match records::decode(record.key, record.value) {
                    Ok((key, value)) => {
                        c.replay(key, value, now);
                        applied += 1;
                    }
                    Err(e) => {
                        skipped += 1;
                        tracing::warn!(partition = part.index, offset = record.offset, error = %e, "skipping undecodable coordinator record");
                    }
                }
            }
            drop(c);
            offset = next;
        }
        self.with(|c| {
            c.finish_load();
            c.set_appended_since_snapshot(part.index, applied);
        });
        if applied + skipped > 0 {
            tracing::info!(
                partition = part.index,
                applied,
                skipped,
                "loaded __consumer_offsets partition"
            );
        }
        Ok(())
    }

    /// Appends queued records, flushes, and reports durability. Returns whether anything
    /// was written.
    async fn persist(&self, ctx: &Rc<CoreContext>) -> bool {
        let out = self.with(|c| c.take_outbox());
        let Some(last_seq) = out.last().map(|r| r.seq) else {
            return false;
        };
        let mut by_partition: BTreeMap<i32, Vec<OutRecord>> = BTreeMap::new();
        for r in out {
            by_partition.entry(r.partition).or_default().push(r);
        }
        // Partitions are appended and flushed concurrently: one group commit for all.
        let writes = by_partition
            .into_iter()
            .map(|(partition, recs)| async move {
                let kv: Vec<(Bytes, Option<Bytes>)> = recs
                    .iter()
                    .map(|r| records::encode(&r.key, r.value.as_ref()))
                    .collect();
                let outcome = append_durably(ctx, partition, &kv).await;
                if let Err(e) = &outcome {
                    tracing::error!(partition, error = %e, "cannot persist coordinator records");
                }
                outcome
            })
            .collect();
        let result = if crate::join::join_all(writes)
            .await
            .iter()
            .all(Result::is_ok)
        {
            Ok(())
        } else {
            Err(PersistFailed)
        };
        self.with(|c| c.mark_durable(last_seq, result));
        true
    }

    /// Snapshots and trims partitions that grew past the threshold.
    async fn compact(&self, ctx: &Rc<CoreContext>) {
        let loaded: Vec<i32> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(_, s)| **s == LoadState::Loaded)
            .map(|(p, _)| *p)
            .collect();
        for partition in loaded {
            let due = self.with(|c| c.appended_since_snapshot(partition))
                >= self.settings.snapshot_after_records;
            if !due {
                continue;
            }
            let snapshot = self.with(|c| {
                c.snapshot_taken(partition);
                c.snapshot_records(partition)
            });
            let Some(part) = ctx.registry.get(OFFSETS_TOPIC, partition) else {
                continue;
            };
            let start = part.log.watermarks().log_end_offset;
            let kv: Vec<(Bytes, Option<Bytes>)> = snapshot
                .iter()
                .map(|(k, v)| records::encode(k, v.as_ref()))
                .collect();
            if let Err(e) = append_durably(ctx, partition, &kv).await {
                tracing::error!(partition, error = %e, "cannot write coordinator snapshot");
                continue;
            }
            match part.log.delete_records_before(start).await {
                Ok(new_start) => {
                    tracing::info!(
                        partition,
                        records = kv.len(),
                        new_start,
                        "compacted __consumer_offsets partition"
                    )
                }
                Err(code) => tracing::warn!(partition, code, "cannot trim __consumer_offsets"),
            }
        }
    }
}

/// The offset after the last batch in `records` (whole batches), from the batch headers.
fn next_offset_after(records: &Bytes) -> Option<i64> {
    let mut pos = 0usize;
    let mut next = None;
    while records.len().saturating_sub(pos) >= 27 {
        let h = &records[pos..];
        let base = i64::from_be_bytes(h[0..8].try_into().ok()?);
        let len = i32::from_be_bytes(h[8..12].try_into().ok()?);
        let last_delta = i32::from_be_bytes(h[23..27].try_into().ok()?);
        if len < 0 {
            break;
        }
        next = Some(base + i64::from(last_delta) + 1);
        pos += 12 + len as usize;
    }
    next
}

fn encode_batch(kv: &[(Bytes, Option<Bytes>)], timestamp_ms: i64) -> Result<Bytes, String> {
    let recs: Vec<Record> = kv
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: timestamp_ms,
            key: Some(k.clone()),
            value: v.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

/// Appends `kv` to a `__consumer_offsets` partition of this core in batches of at most
/// [`BATCH_BYTES_MAX`], then flushes.
async fn append_durably(
    ctx: &Rc<CoreContext>,
    partition: i32,
    kv: &[(Bytes, Option<Bytes>)],
) -> Result<(), String> {
    let part = ctx
        .registry
        .get(OFFSETS_TOPIC, partition)
        .ok_or_else(|| format!("partition {partition} of {OFFSETS_TOPIC} is not on this core"))?;
    let now = now_ms();
    let mut start = 0;
    while start < kv.len() {
        let mut end = start;
        let mut bytes = 0usize;
        while end < kv.len() {
            let size = kv[end].0.len() + kv[end].1.as_ref().map_or(0, |v| v.len()) + 32;
            if end > start && bytes + size > BATCH_BYTES_MAX {
                break;
            }
            bytes += size;
            end += 1;
        }
        let batch = encode_batch(&kv[start..end], now)?;
        part.log
            .append(batch)
            .await
            .map_err(|code| format!("append failed with error code {code}"))?;
        start = end;
    }
    part.log
        .flush()
        .await
        .map_err(|code| format!("flush failed with error code {code}"))?;
    part.appended.notify_all();
    Ok(())
}

/// The per-core coordinator loop: loads owned partitions, persists queued records as soon
/// as they appear, ticks timers every [`TICK_INTERVAL_MS`], compacts. Ends when the core
/// drains, after a last flush of queued records.
pub async fn run(ctx: Rc<CoreContext>) {
    let rt = &ctx.groups;
    let mut next_tick_ms = 0i64;
    let mut next_cleanup_ms = now_ms() + CLEANUP_INTERVAL_MS;
    loop {
        // Pick up partitions that appeared (start-up, or the topic was just created).
        let owned: Vec<i32> = ctx
            .registry
            .topic_partitions(OFFSETS_TOPIC)
            .iter()
            .map(|p| p.index)
            .collect();
        for p in owned {
            if !rt.partitions.borrow().contains_key(&p)
                && let Err(e) = rt.ensure_partition_loaded(&ctx, p).await
            {
                tracing::warn!(partition = p, error = %e, "cannot load __consumer_offsets partition");
            }
        }
        let now = now_ms();
        if now >= next_tick_ms {
            rt.with(|c| c.tick(now));
            next_tick_ms = now + TICK_INTERVAL_MS as i64;
        }
        if now >= next_cleanup_ms {
            let image = ctx.metadata();
            rt.with(|c| {
                c.drop_offsets_of_missing_partitions(|topic, partition| {
                    image
                        .topics
                        .get(topic)
                        .is_some_and(|t| (0..t.partitions).contains(&partition))
                })
            });
            next_cleanup_ms = now + CLEANUP_INTERVAL_MS;
        }
        if rt.persist(&ctx).await {
            // Keep draining while commits arrive: each pass is one group commit.
            continue;
        }
        rt.compact(&ctx).await;
        if ctx.draining.get() {
            rt.persist(&ctx).await;
            return;
        }
        let woken = rt.outbox_ready.notified();
        if rt.with(|c| c.has_outbox()) {
            continue;
        }
        let sleep = glommio::timer::sleep(Duration::from_millis(TICK_INTERVAL_MS));
        futures_lite::future::or(woken, async {
            sleep.await;
        })
        .await;
    }
}

impl GroupRuntime {
    /// The runtime of one core at start-up: settings from the broker config, except that an
    /// existing `__consumer_offsets` keeps its partition count (group placement depends on
    /// it).
    pub fn for_core(
        config: &crate::config::BrokerConfig,
        image: &crate::metadata::MetadataImage,
    ) -> Self {
        let mut settings = config.coordinator.clone();
        if let Some(topic) = image.topics.get(OFFSETS_TOPIC) {
            settings.offsets_topic_partitions = topic.partitions;
        }
        Self::new(settings, rand::random::<u64>() & 0xffff_ffff_ffff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_report_their_end() {
        let kv: Vec<(Bytes, Option<Bytes>)> = vec![
            (Bytes::from_static(b"k1"), Some(Bytes::from_static(b"v1"))),
            (Bytes::from_static(b"k2"), None),
            (Bytes::from_static(b"k3"), Some(Bytes::from_static(b"v3"))),
        ];
        let mut two = BytesMut::new();
        two.extend_from_slice(&encode_batch(&kv, 1_000).unwrap());
        // A second batch whose base offset the log would set to 3.
        let mut second = BytesMut::from(&encode_batch(&kv[..1], 1_001).unwrap()[..]);
        second[0..8].copy_from_slice(&3i64.to_be_bytes());
        two.extend_from_slice(&second);
        let two = two.freeze();
        assert_eq!(next_offset_after(&two), Some(4));
        assert_eq!(next_offset_after(&Bytes::new()), None);
        let mut buf = two.clone();
        let sets = RecordBatchDecoder::decode_all(&mut buf).unwrap();
        let got: Vec<(i64, Option<Bytes>, Option<Bytes>)> = sets
            .into_iter()
            .flat_map(|s| s.records)
            .map(|r| (r.offset, r.key, r.value))
            .collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[1], (1, Some(Bytes::from_static(b"k2")), None));
        assert_eq!(got[3].0, 3);
    }
}
