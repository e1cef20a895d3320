//! One core's group coordinator: the groups whose `__consumer_offsets` partition this core
//! owns, their committed offsets, and the queue of records that must reach that topic.
//!
//! Synchronous and clock-free like [`super::state`]: request handlers borrow it, call one
//! method, drop the borrow, then await the returned receiver (a parked join/sync, or the
//! durability of their records). A per-core task drains [`GroupCoordinator::take_outbox`],
//! appends and flushes, then calls [`GroupCoordinator::mark_durable`]; many commits share one
//! flush (group commit).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::oneshot::{self, Receiver, Sender};
use super::records::{OffsetValue, RecordKey, RecordValue};
use super::state::{
    Group, GroupConfig, GroupError, GroupState, JoinRequest, JoinResponse, MemberIdGen, Reply,
    SyncRequest, SyncResponse,
};

/// Kafka's `offsets.topic.num.partitions` default.
pub const OFFSETS_TOPIC_PARTITIONS_DEFAULT: i32 = 50;
/// Name of the internal topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Longest group id accepted (a bound; Kafka has none but 32 KiB strings are abuse).
pub const GROUP_ID_MAX_BYTES: usize = 4096;

/// The `__consumer_offsets` partition of a group: Java's `String.hashCode` of the id, as
/// Kafka computes it, so operators find a group's partition where they expect it.
pub fn group_partition(group_id: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group_id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs: maps i32::MIN to 0 rather than overflowing.
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// A record waiting to be appended to `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Partition of `__consumer_offsets`.
    pub partition: i32,
    /// Position in this coordinator's write order; `mark_durable(seq)` covers it.
    pub seq: u64,
    /// Key.
    pub key: RecordKey,
    /// Value, `None` for a tombstone.
    pub value: Option<RecordValue>,
}

/// Appending or flushing coordinator records failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistFailed;

/// Waits for records to be durable.
pub type DurableTicket = Receiver<Result<(), PersistFailed>>;

/// An OffsetCommit request, protocol-independent.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// Group id.
    pub group_id: String,
    /// Generation, -1 for an offsets-only commit.
    pub generation_id: i32,
    /// Member id, empty for an offsets-only commit.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// (topic, partition, offset, leader epoch, metadata).
    pub offsets: Vec<CommitOffset>,
}

/// One partition of an OffsetCommit.
#[derive(Debug, Clone)]
pub struct CommitOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Leader epoch, -1 if none.
    pub leader_epoch: i32,
    /// Metadata string.
    pub metadata: String,
}

/// A ListGroups entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Protocol type ("" for offsets-only groups).
    pub protocol_type: String,
    /// State.
    pub state: GroupState,
}

/// A DescribeGroups member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata of the selected protocol.
    pub metadata: Bytes,
    /// Assignment.
    pub assignment: Bytes,
}

/// A DescribeGroups entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// `None` if the group does not exist (Kafka answers state Dead).
    pub state: GroupState,
    /// Whether the group exists.
    pub exists: bool,
    /// Protocol type.
    pub protocol_type: String,
    /// Selected protocol.
    pub protocol_name: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

/// Per-partition outcomes of a commit and, if anything was written, its durability ticket.
pub type CommitOutcome = (Vec<Result<(), GroupError>>, Option<DurableTicket>);

/// One core's coordinator.
pub struct GroupCoordinator {
    cfg: GroupConfig,
    offsets_partitions: i32,
    groups: HashMap<String, Group>,
    ids: MemberIdGen,
    outbox: Vec<OutRecord>,
    last_seq: u64,
    durable_seq: u64,
    waiters: Vec<(u64, Sender<Result<(), PersistFailed>>)>,
    /// Records appended per partition since its last snapshot (drives compaction).
    appended_since_snapshot: BTreeMap<i32, u64>,
}

impl GroupCoordinator {
    /// A coordinator with no groups. `boot_nonce` keeps member ids unique across restarts.
    pub fn new(cfg: GroupConfig, offsets_partitions: i32, boot_nonce: u64) -> Self {
        GroupCoordinator {
            cfg,
            offsets_partitions: offsets_partitions.max(1),
            groups: HashMap::new(),
            ids: MemberIdGen::new(boot_nonce),
            outbox: Vec::new(),
            last_seq: 0,
            durable_seq: 0,
            waiters: Vec::new(),
            appended_since_snapshot: BTreeMap::new(),
        }
    }

    /// Settings.
    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    /// Partition count of `__consumer_offsets`.
    pub fn offsets_partitions(&self) -> i32 {
        self.offsets_partitions
    }

    /// A group, if it exists.
    pub fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    fn push(&mut self, group_id: &str, key: RecordKey, value: Option<RecordValue>) -> u64 {
        self.last_seq += 1;
        let partition = group_partition(group_id, self.offsets_partitions);
        *self.appended_since_snapshot.entry(partition).or_default() += 1;
        self.outbox.push(OutRecord {
            partition,
            seq: self.last_seq,
            key,
            value,
        });
        self.last_seq
    }

    /// Queues the group's membership record if it changed.
    fn persist_if_dirty(&mut self, group_id: &str) {
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        if !g.dirty {
            return;
        }
        g.dirty = false;
        let value = RecordValue::Group(g.to_value());
        self.push(
            group_id,
            RecordKey::Group {
                group: group_id.to_string(),
            },
            Some(value),
        );
    }

    /// A receiver that resolves once every record queued so far is durable.
    pub fn durable_ticket(&mut self) -> DurableTicket {
        let (tx, rx) = oneshot::channel();
        if self.last_seq <= self.durable_seq {
            let _ = tx.send(Ok(()));
        } else {
            self.waiters.push((self.last_seq, tx));
        }
        rx
    }

    /// Records to append, in order. The caller appends them, flushes, and reports back
    /// with [`Self::mark_durable`] and the highest `seq` it made durable.
    pub fn take_outbox(&mut self) -> Vec<OutRecord> {
        std::mem::take(&mut self.outbox)
    }

    /// Whether records wait to be appended.
    pub fn has_outbox(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Reports the outcome of appending records up to `seq`. On failure the waiters get an
    /// error (the client retries; its commit may or may not survive a crash).
    pub fn mark_durable(&mut self, seq: u64, result: Result<(), PersistFailed>) {
        if result.is_ok() {
            self.durable_seq = self.durable_seq.max(seq);
        }
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|(s, _)| *s <= seq);
        self.waiters = waiting;
        for (_, tx) in done {
            let _ = tx.send(result);
        }
    }

    fn validate_group_id(group_id: &str) -> Result<(), GroupError> {
        if group_id.is_empty() || group_id.len() > GROUP_ID_MAX_BYTES {
            Err(GroupError::InvalidGroupId)
        } else {
            Ok(())
        }
    }

    /// JoinGroup.
    pub fn join(&mut self, group_id: &str, req: JoinRequest, now_ms: i64) -> Reply<JoinResponse> {
        if let Err(e) = Self::validate_group_id(group_id) {
            return Reply::Now(JoinResponse::error(e, &req.member_id));
        }
        if !self.groups.contains_key(group_id) {
            if !req.member_id.is_empty() {
                return Reply::Now(JoinResponse::error(
                    GroupError::UnknownMemberId,
                    &req.member_id,
                ));
            }
            self.groups
                .insert(group_id.to_string(), Group::new(group_id, now_ms));
        }
        let Some(g) = self.groups.get_mut(group_id) else {
            return Reply::Now(JoinResponse::error(
                GroupError::CoordinatorNotAvailable,
                &req.member_id,
            ));
        };
        let reply = g.join(req, now_ms, &self.cfg, &mut self.ids);
        self.persist_if_dirty(group_id);
        reply
    }

    /// SyncGroup. Answers the leader's sync only after the new assignment is durable is not
    /// required by clients; the record is queued and the answers go out at once.
    pub fn sync(&mut self, group_id: &str, req: SyncRequest, now_ms: i64) -> Reply<SyncResponse> {
        let Some(g) = self.groups.get_mut(group_id) else {
            return Reply::Now(SyncResponse::error(GroupError::UnknownMemberId));
        };
        let reply = g.sync(req, now_ms);
        self.persist_if_dirty(group_id);
        reply
    }

    /// Heartbeat.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        match self.groups.get_mut(group_id) {
            None => Err(GroupError::UnknownMemberId),
            Some(g) => g.heartbeat(member_id, group_instance_id, generation_id, now_ms),
        }
    }

    /// LeaveGroup for a batch of (member id, instance id); one result per member.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now_ms: i64,
    ) -> Vec<Result<(), GroupError>> {
        let Some(g) = self.groups.get_mut(group_id) else {
            return members
                .iter()
                .map(|_| Err(GroupError::UnknownMemberId))
                .collect();
        };
        let results = members
            .iter()
            .map(|(id, inst)| g.leave(id, inst.as_deref(), now_ms, &self.cfg))
            .collect();
        self.persist_if_dirty(group_id);
        results
    }

    /// OffsetCommit: validates, applies to memory and queues the records. Returns one
    /// result per input offset and, if anything was written, a ticket to await before
    /// answering (the commit is acknowledged only once durable).
    pub fn commit_offsets(
        &mut self,
        req: CommitRequest,
        now_ms: i64,
    ) -> Result<CommitOutcome, GroupError> {
        Self::validate_group_id(&req.group_id)?;
        if !self.groups.contains_key(&req.group_id) {
            if req.generation_id >= 0 {
                // A member of a group this coordinator does not know (Kafka's answer).
                return Err(GroupError::IllegalGeneration);
            }
            self.groups
                .insert(req.group_id.clone(), Group::new(&req.group_id, now_ms));
        }
        let Some(g) = self.groups.get_mut(&req.group_id) else {
            return Err(GroupError::CoordinatorNotAvailable);
        };
        g.validate_commit(
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            now_ms,
        )?;
        let max_metadata_bytes = self.cfg.offset_metadata_max_bytes;
        let mut results = Vec::with_capacity(req.offsets.len());
        let mut accepted = Vec::new();
        for o in req.offsets {
            if o.metadata.len() > max_metadata_bytes {
                results.push(Err(GroupError::OffsetMetadataTooLarge));
                continue;
            }
            if o.partition < 0 || o.topic.is_empty() {
                results.push(Err(GroupError::UnknownTopicOrPartition));
                continue;
            }
            let value = OffsetValue {
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata: o.metadata,
                commit_timestamp_ms: now_ms,
            };
            g.offsets
                .insert((o.topic.clone(), o.partition), value.clone());
            accepted.push((o.topic, o.partition, value));
            results.push(Ok(()));
        }
        if accepted.is_empty() {
            return Ok((results, None));
        }
        for (topic, partition, value) in accepted {
            let key = RecordKey::Offset {
                group: req.group_id.clone(),
                topic,
                partition,
            };
            self.push(&req.group_id, key, Some(RecordValue::Offset(value)));
        }
        Ok((results, Some(self.durable_ticket())))
    }

    /// OffsetFetch: the committed offsets of the given partitions, or all of them. Unknown
    /// groups and partitions yield `None` (clients read that as "no committed offset").
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<OffsetValue>)> {
        let g = self.groups.get(group_id);
        match partitions {
            Some(ps) => ps
                .iter()
                .map(|(t, p)| {
                    let v = g.and_then(|g| g.offsets.get(&(t.clone(), *p)).cloned());
                    (t.clone(), *p, v)
                })
                .collect(),
            None => g
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), v)| (t.clone(), *p, Some(v.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// ListGroups, filtered by state (empty filter = all) and protocol type (empty = all).
    pub fn list_groups(&self, states: &[GroupState], types: &[String]) -> Vec<GroupListing> {
        let mut out: Vec<GroupListing> = self
            .groups
            .values()
            .filter(|g| g.state() != GroupState::Dead)
            .filter(|g| states.is_empty() || states.contains(&g.state()))
            .filter(|g| {
                types.is_empty() || types.contains(&g.protocol_type.clone().unwrap_or_default())
            })
            .map(|g| GroupListing {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state(),
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// DescribeGroups for one group.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        let Some(g) = self
            .groups
            .get(group_id)
            .filter(|g| g.state() != GroupState::Dead)
        else {
            return GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                exists: false,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let protocol = g.protocol_name.clone().unwrap_or_default();
        GroupDescription {
            group_id: group_id.to_string(),
            state: g.state(),
            exists: true,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            members: g
                .members()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata(&protocol).cloned().unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Removes a group and all its offsets; writes tombstones.
    fn remove_group(&mut self, group_id: &str, now_ms: i64) {
        let Some(mut g) = self.groups.remove(group_id) else {
            return;
        };
        g.mark_dead(now_ms);
        let offsets: Vec<(String, i32)> = g.offsets.keys().cloned().collect();
        for (topic, partition) in offsets {
            let key = RecordKey::Offset {
                group: group_id.to_string(),
                topic,
                partition,
            };
            self.push(group_id, key, None);
        }
        let key = RecordKey::Group {
            group: group_id.to_string(),
        };
        self.push(group_id, key, None);
    }

    /// DeleteGroups for one group: only an empty group may be deleted.
    pub fn delete_group(
        &mut self,
        group_id: &str,
        now_ms: i64,
    ) -> Result<DurableTicket, GroupError> {
        Self::validate_group_id(group_id)?;
        match self.groups.get(group_id).map(Group::state) {
            None | Some(GroupState::Dead) => Err(GroupError::GroupIdNotFound),
            Some(GroupState::Empty) => {
                self.remove_group(group_id, now_ms);
                Ok(self.durable_ticket())
            }
            Some(_) => Err(GroupError::NonEmptyGroup),
        }
    }

    /// OffsetDelete: removes committed offsets of partitions the group does not consume.
    /// Returns per-partition results and a durability ticket.
    #[allow(clippy::type_complexity)]
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<(Vec<Result<(), GroupError>>, DurableTicket), GroupError> {
        Self::validate_group_id(group_id)?;
        let Some(g) = self.groups.get_mut(group_id) else {
            return Err(GroupError::GroupIdNotFound);
        };
        let subscribed: Vec<String> = match g.state() {
            GroupState::Dead => return Err(GroupError::GroupIdNotFound),
            GroupState::Empty => Vec::new(),
            _ => match g.subscribed_topics() {
                Some(t) => t,
                // Not the consumer protocol: Kafka refuses with NON_EMPTY_GROUP.
                None => return Err(GroupError::NonEmptyGroup),
            },
        };
        let mut results = Vec::with_capacity(partitions.len());
        let mut removed = Vec::new();
        for (t, p) in partitions {
            if subscribed.contains(t) {
                results.push(Err(GroupError::GroupSubscribedToTopic));
                continue;
            }
            if g.offsets.remove(&(t.clone(), *p)).is_some() {
                removed.push((t.clone(), *p));
            }
            results.push(Ok(()));
        }
        for (topic, partition) in removed {
            let key = RecordKey::Offset {
                group: group_id.to_string(),
                topic,
                partition,
            };
            self.push(group_id, key, None);
        }
        Ok((results, self.durable_ticket()))
    }

    /// Acts on time for every group: timeouts, session expiry, offset retention, and the
    /// removal of empty groups with no offsets left.
    pub fn tick(&mut self, now_ms: i64) {
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            let state_before = g.state();
            let generation_before = g.generation_id;
            g.tick(now_ms, &self.cfg);
            if g.state() == GroupState::Empty
                && (state_before != GroupState::Empty || generation_before != g.generation_id)
            {
                g.dirty = true;
            }
            let expired = g.expire_offsets(now_ms, &self.cfg);
            let drop_group = g.is_idle();
            self.persist_if_dirty(&id);
            for (topic, partition) in expired {
                let key = RecordKey::Offset {
                    group: id.clone(),
                    topic,
                    partition,
                };
                self.push(&id, key, None);
            }
            if drop_group {
                self.remove_group(&id, now_ms);
            }
        }
    }

    /// Drops committed offsets of partitions that no longer exist (deleted topics, as Kafka
    /// does); `exists(topic, partition)` answers from the current metadata.
    pub fn drop_offsets_of_missing_partitions(&mut self, exists: impl Fn(&str, i32) -> bool) {
        let mut gone: Vec<(String, String, i32)> = Vec::new();
        for (id, g) in &mut self.groups {
            let missing: Vec<(String, i32)> = g
                .offsets
                .keys()
                .filter(|(t, p)| !exists(t, *p))
                .cloned()
                .collect();
            for k in missing {
                g.offsets.remove(&k);
                gone.push((id.clone(), k.0, k.1));
            }
        }
        for (group, topic, partition) in gone {
            let key = RecordKey::Offset {
                group: group.clone(),
                topic,
                partition,
            };
            self.push(&group, key, None);
        }
    }

    /// Applies one record read back from `__consumer_offsets` (log order, latest wins).
    pub fn replay(&mut self, key: RecordKey, value: Option<RecordValue>, now_ms: i64) {
        let group_id = key.group().to_string();
        match (key, value) {
            (
                RecordKey::Offset {
                    topic, partition, ..
                },
                Some(RecordValue::Offset(v)),
            ) => {
                self.groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(&group_id, now_ms))
                    .offsets
                    .insert((topic, partition), v);
            }
            (
                RecordKey::Offset {
                    topic, partition, ..
                },
                None,
            ) => {
                if let Some(g) = self.groups.get_mut(&group_id) {
                    g.offsets.remove(&(topic, partition));
                }
            }
            (RecordKey::Group { .. }, Some(RecordValue::Group(v))) => {
                self.groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(&group_id, now_ms))
                    .restore(v, now_ms);
            }
            (RecordKey::Group { .. }, None) => {
                self.groups.remove(&group_id);
            }
            // A value of the wrong kind for its key: cannot come from this code; ignore.
            _ => {
                tracing::warn!(group = %group_id, "mismatched key and value kinds in __consumer_offsets")
            }
        }
    }

    /// After replay: drops groups left with neither members nor offsets.
    pub fn finish_load(&mut self) {
        self.groups.retain(|_, g| {
            g.member_count() > 0 || !g.offsets.is_empty() || g.protocol_type.is_some()
        });
    }

    /// Sets the record count of `partition` since its last snapshot (after loading it).
    pub fn set_appended_since_snapshot(&mut self, partition: i32, records: u64) {
        self.appended_since_snapshot.insert(partition, records);
    }

    /// Every live record of the groups on `partition`: a snapshot that, replayed alone,
    /// rebuilds their state. Written before older records are deleted.
    pub fn snapshot_records(&self, partition: i32) -> Vec<(RecordKey, Option<RecordValue>)> {
        let mut ids: Vec<&String> = self
            .groups
            .keys()
            .filter(|g| group_partition(g, self.offsets_partitions) == partition)
            .collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let g = &self.groups[id];
            out.push((
                RecordKey::Group { group: id.clone() },
                Some(RecordValue::Group(g.to_value())),
            ));
            for ((topic, p), v) in &g.offsets {
                out.push((
                    RecordKey::Offset {
                        group: id.clone(),
                        topic: topic.clone(),
                        partition: *p,
                    },
                    Some(RecordValue::Offset(v.clone())),
                ));
            }
        }
        out
    }

    /// Records appended to `partition` since its last snapshot.
    pub fn appended_since_snapshot(&self, partition: i32) -> u64 {
        self.appended_since_snapshot
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }

    /// Notes that `partition` was just snapshotted.
    pub fn snapshot_taken(&mut self, partition: i32) {
        self.appended_since_snapshot.remove(&partition);
    }

    /// Ids of all live groups (for FindCoordinator-independent admin listing).
    pub fn group_ids(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }
}
