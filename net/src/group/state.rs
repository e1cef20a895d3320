//! One consumer group's membership state machine (Kafka's classic protocol):
//!
//! ```text
//!   Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!     ▲                 ▲       │                                     │ leader's SyncGroup
//!     │   last member   │       └──no member left──▶ Empty            ▼
//!     └─── leaves ──────┴──────── join / leave / session expiry ──── Stable
//!   Dead: deleted (DeleteGroups, or expired empty group); never leaves Dead.
//! ```
//!
//! Pure logic: no I/O, no clock of its own. Every method takes `now_ms` (milliseconds since
//! the epoch) so tests drive time by hand; timeouts are acted on by [`Group::tick`]. Parked
//! JoinGroup/SyncGroup requests are [`oneshot`] senders kept in the member; completing a
//! rebalance sends the answers.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::oneshot::{self, Receiver, Sender};
use super::records::{GroupValue, MemberValue, OffsetValue};

/// Group states, named as Kafka names them (ListGroups/DescribeGroups report these strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members; may still hold committed offsets.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// Kafka's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// Parses a state name case-insensitively (ListGroups' states filter).
    pub fn parse(name: &str) -> Option<GroupState> {
        [
            GroupState::Empty,
            GroupState::PreparingRebalance,
            GroupState::CompletingRebalance,
            GroupState::Stable,
            GroupState::Dead,
        ]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }
}

/// Group coordinator errors, each mapping to a Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// UNKNOWN_SERVER_ERROR (-1).
    #[error("unknown server error")]
    UnknownServerError,
    /// UNKNOWN_TOPIC_OR_PARTITION (3).
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// OFFSET_METADATA_TOO_LARGE (12).
    #[error("offset metadata too large")]
    OffsetMetadataTooLarge,
    /// COORDINATOR_LOAD_IN_PROGRESS (14).
    #[error("coordinator load in progress")]
    CoordinatorLoadInProgress,
    /// COORDINATOR_NOT_AVAILABLE (15).
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
    /// NOT_COORDINATOR (16).
    #[error("not coordinator")]
    NotCoordinator,
    /// ILLEGAL_GENERATION (22).
    #[error("illegal generation")]
    IllegalGeneration,
    /// INCONSISTENT_GROUP_PROTOCOL (23).
    #[error("inconsistent group protocol")]
    InconsistentGroupProtocol,
    /// INVALID_GROUP_ID (24).
    #[error("invalid group id")]
    InvalidGroupId,
    /// UNKNOWN_MEMBER_ID (25).
    #[error("unknown member id")]
    UnknownMemberId,
    /// INVALID_SESSION_TIMEOUT (26).
    #[error("invalid session timeout")]
    InvalidSessionTimeout,
    /// REBALANCE_IN_PROGRESS (27).
    #[error("rebalance in progress")]
    RebalanceInProgress,
    /// NON_EMPTY_GROUP (68).
    #[error("group not empty")]
    NonEmptyGroup,
    /// GROUP_ID_NOT_FOUND (69).
    #[error("group id not found")]
    GroupIdNotFound,
    /// MEMBER_ID_REQUIRED (79).
    #[error("member id required")]
    MemberIdRequired,
    /// GROUP_MAX_SIZE_REACHED (81).
    #[error("group max size reached")]
    GroupMaxSizeReached,
    /// FENCED_INSTANCE_ID (82).
    #[error("fenced instance id")]
    FencedInstanceId,
    /// GROUP_SUBSCRIBED_TO_TOPIC (86).
    #[error("group subscribed to topic")]
    GroupSubscribedToTopic,
}

impl GroupError {
    /// The Kafka error code.
    pub fn code(self) -> i16 {
        match self {
            GroupError::UnknownServerError => -1,
            GroupError::UnknownTopicOrPartition => 3,
            GroupError::OffsetMetadataTooLarge => 12,
            GroupError::CoordinatorLoadInProgress => 14,
            GroupError::CoordinatorNotAvailable => 15,
            GroupError::NotCoordinator => 16,
            GroupError::IllegalGeneration => 22,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::InvalidGroupId => 24,
            GroupError::UnknownMemberId => 25,
            GroupError::InvalidSessionTimeout => 26,
            GroupError::RebalanceInProgress => 27,
            GroupError::NonEmptyGroup => 68,
            GroupError::GroupIdNotFound => 69,
            GroupError::MemberIdRequired => 79,
            GroupError::GroupMaxSizeReached => 81,
            GroupError::FencedInstanceId => 82,
            GroupError::GroupSubscribedToTopic => 86,
        }
    }
}

/// Kafka error code of an optional error (0 = none).
pub fn error_code(e: Option<GroupError>) -> i16 {
    e.map_or(0, GroupError::code)
}

/// Coordinator settings (Kafka broker names in the field docs).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members, extended while members keep arriving.
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.max.size`: members per group (a bound on memory per group).
    pub max_group_size: usize,
    /// `offsets.retention.minutes`, in ms: committed offsets of a group that stays empty
    /// this long are dropped.
    pub offsets_retention_ms: i64,
    /// `offset.metadata.max.bytes`: longest metadata string of a commit.
    pub offset_metadata_max_bytes: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_group_size: 10_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offset_metadata_max_bytes: 4096,
        }
    }
}

/// Makes member ids unique across restarts: a per-boot nonce plus a counter.
#[derive(Debug)]
pub struct MemberIdGen {
    boot_nonce: u64,
    counter: u64,
}

impl MemberIdGen {
    /// `boot_nonce` should differ between broker runs (random, or the start time).
    pub fn new(boot_nonce: u64) -> Self {
        MemberIdGen {
            boot_nonce,
            counter: 0,
        }
    }

    /// A fresh member id, `<client_id>-<nonce>-<n>` like Kafka's `<client_id>-<uuid>`.
    pub fn next(&mut self, client_id: &str) -> String {
        self.counter += 1;
        // Client ids are bounded by the request size; keep ids short anyway.
        let prefix: String = client_id.chars().take(64).collect();
        format!("{prefix}-{:012x}-{}", self.boot_nonce, self.counter)
    }
}

/// A JoinGroup request, protocol-independent.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Member id; empty on the first join.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
    /// Client id from the request header.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout (`max.poll.interval.ms` for Java consumers).
    pub rebalance_timeout_ms: i32,
    /// Protocol type ("consumer").
    pub protocol_type: String,
    /// Supported protocols (assignors), in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
}

/// A member as listed to the leader in a JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// The member's metadata for the selected protocol.
    pub metadata: Bytes,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    /// Error, if any.
    pub error: Option<GroupError>,
    /// Generation id (-1 on error).
    pub generation_id: i32,
    /// Group protocol type.
    pub protocol_type: Option<String>,
    /// Selected protocol.
    pub protocol_name: Option<String>,
    /// Leader's member id.
    pub leader_id: String,
    /// The member's id (also set with MEMBER_ID_REQUIRED).
    pub member_id: String,
    /// The leader need not compute an assignment (static leader rejoin, v9+).
    pub skip_assignment: bool,
    /// All members, for the leader only.
    pub members: Vec<JoinMember>,
}

impl JoinResponse {
    /// An error answer.
    pub fn error(error: GroupError, member_id: &str) -> Self {
        JoinResponse {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader_id: String::new(),
            member_id: member_id.to_string(),
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

/// A SyncGroup request.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// Generation the member joined.
    pub generation_id: i32,
    /// v5+: protocol type the member expects.
    pub protocol_type: Option<String>,
    /// v5+: protocol name the member expects.
    pub protocol_name: Option<String>,
    /// The leader's assignments (empty from followers).
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    /// Error, if any.
    pub error: Option<GroupError>,
    /// Group protocol type.
    pub protocol_type: Option<String>,
    /// Selected protocol.
    pub protocol_name: Option<String>,
    /// This member's assignment.
    pub assignment: Bytes,
}

impl SyncResponse {
    /// An error answer.
    pub fn error(error: GroupError) -> Self {
        SyncResponse {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer now, or later (await the receiver; cancellation means the member was removed).
pub enum Reply<T> {
    /// Ready.
    Now(T),
    /// Parked until the rebalance step completes.
    Later(Receiver<T>),
}

impl<T> Reply<T> {
    /// Waits for the answer; `on_cancel` builds the answer when the parked request was dropped.
    pub async fn wait(self, on_cancel: impl FnOnce() -> T) -> T {
        match self {
            Reply::Now(v) => v,
            Reply::Later(rx) => rx.await.unwrap_or_else(|_| on_cancel()),
        }
    }
}

/// One group member.
pub struct Member {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Supported protocols with metadata, in preference order.
    pub protocols: Vec<(String, Bytes)>,
    /// Assignment of the current generation.
    pub assignment: Bytes,
    /// Last sign of life (heartbeat, join, sync, commit).
    pub last_heartbeat_ms: i64,
    /// Order of joining; the earliest member leads when the leader leaves.
    join_seq: u64,
    awaiting_join: Option<Sender<JoinResponse>>,
    awaiting_sync: Option<Sender<SyncResponse>>,
}

impl Member {
    /// Metadata this member sent for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m)
    }

    fn fail_waiters(&mut self, error: GroupError) {
        if let Some(tx) = self.awaiting_join.take() {
            let _ = tx.send(JoinResponse::error(error, &self.member_id));
        }
        if let Some(tx) = self.awaiting_sync.take() {
            let _ = tx.send(SyncResponse::error(error));
        }
    }
}

/// While an empty group's first rebalance waits for more members.
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    deadline_ms: i64,
    max_deadline_ms: i64,
    member_added: bool,
}

/// One consumer group: membership, generation and committed offsets.
pub struct Group {
    /// Group id.
    pub group_id: String,
    state: GroupState,
    /// When the group entered its state (ms since the epoch).
    pub state_timestamp_ms: i64,
    /// Current generation.
    pub generation_id: i32,
    /// Protocol type of the members, `None` for offsets-only groups.
    pub protocol_type: Option<String>,
    /// Selected protocol of the current generation.
    pub protocol_name: Option<String>,
    /// Leader's member id.
    pub leader_id: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id -> member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they lapse.
    pending_members: HashMap<String, i64>,
    rebalance_deadline_ms: i64,
    sync_deadline_ms: i64,
    initial_delay: Option<InitialDelay>,
    next_join_seq: u64,
    /// Committed offsets by (topic, partition).
    pub offsets: BTreeMap<(String, i32), OffsetValue>,
    /// Membership changed in a way that must reach the log.
    pub(crate) dirty: bool,
}

impl Group {
    /// A new empty group.
    pub fn new(group_id: &str, now_ms: i64) -> Self {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            state_timestamp_ms: now_ms,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline_ms: 0,
            sync_deadline_ms: 0,
            initial_delay: None,
            next_join_seq: 0,
            offsets: BTreeMap::new(),
            dirty: false,
        }
    }

    /// Current state.
    pub fn state(&self) -> GroupState {
        self.state
    }

    /// Members by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Number of members.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Looks up a member.
    pub fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.get(member_id)
    }

    fn transition(&mut self, state: GroupState, now_ms: i64) {
        tracing::debug!(
            group = %self.group_id,
            from = self.state.as_str(),
            to = state.as_str(),
            generation = self.generation_id,
            members = self.members.len(),
            "group state change"
        );
        self.state = state;
        self.state_timestamp_ms = now_ms;
    }

    /// Whether a member with these protocols may join (Kafka's `supportsProtocols`).
    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols
            .iter()
            .any(|(name, _)| self.members.values().all(|m| m.metadata(name).is_some()))
    }

    fn is_fenced(&self, member_id: &str, instance: Option<&str>) -> bool {
        match instance {
            Some(inst) => self
                .static_members
                .get(inst)
                .is_some_and(|id| id != member_id),
            None => false,
        }
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms.max(0)))
            .max()
            .unwrap_or(0)
    }

    /// Handles JoinGroup. `ids` makes new member ids.
    pub fn join(
        &mut self,
        req: JoinRequest,
        now_ms: i64,
        cfg: &GroupConfig,
        ids: &mut MemberIdGen,
    ) -> Reply<JoinResponse> {
        if self.state == GroupState::Dead {
            return Reply::Now(JoinResponse::error(
                GroupError::CoordinatorNotAvailable,
                &req.member_id,
            ));
        }
        if req.session_timeout_ms < cfg.min_session_timeout_ms
            || req.session_timeout_ms > cfg.max_session_timeout_ms
        {
            return Reply::Now(JoinResponse::error(
                GroupError::InvalidSessionTimeout,
                &req.member_id,
            ));
        }
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            return Reply::Now(JoinResponse::error(
                GroupError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if req.member_id.is_empty() {
            self.join_new(req, now_ms, cfg, ids)
        } else {
            self.join_known(req, now_ms, cfg)
        }
    }

    fn join_new(
        &mut self,
        req: JoinRequest,
        now_ms: i64,
        cfg: &GroupConfig,
        ids: &mut MemberIdGen,
    ) -> Reply<JoinResponse> {
        if let Some(old_id) = req
            .group_instance_id
            .as_ref()
            .and_then(|i| self.static_members.get(i))
            .cloned()
        {
            let new_id = ids.next(&req.client_id);
            return self.replace_static_member(&old_id, new_id, req, now_ms, cfg);
        }
        if self.members.len() + self.pending_members.len() >= cfg.max_group_size {
            return Reply::Now(JoinResponse::error(GroupError::GroupMaxSizeReached, ""));
        }
        let new_id = ids.next(&req.client_id);
        if req.group_instance_id.is_none() && req.require_known_member_id {
            // KIP-394: the client must come back with this id, so a client that retries a
            // timed-out first join does not leave a ghost member behind.
            let lapse_ms = now_ms + i64::from(req.session_timeout_ms);
            self.pending_members.insert(new_id.clone(), lapse_ms);
            return Reply::Now(JoinResponse::error(GroupError::MemberIdRequired, &new_id));
        }
        self.add_member(new_id, req, now_ms, cfg)
    }

    fn join_known(
        &mut self,
        req: JoinRequest,
        now_ms: i64,
        cfg: &GroupConfig,
    ) -> Reply<JoinResponse> {
        let member_id = req.member_id.clone();
        if self.pending_members.remove(&member_id).is_some() {
            return self.add_member(member_id, req, now_ms, cfg);
        }
        if self.is_fenced(&member_id, req.group_instance_id.as_deref()) {
            return Reply::Now(JoinResponse::error(
                GroupError::FencedInstanceId,
                &member_id,
            ));
        }
        let Some(member) = self.members.get_mut(&member_id) else {
            return Reply::Now(JoinResponse::error(GroupError::UnknownMemberId, &member_id));
        };
        member.last_heartbeat_ms = now_ms;
        let same_protocols = member.protocols == req.protocols;
        let is_leader = self.leader_id.as_deref() == Some(member_id.as_str());
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                Reply::Now(JoinResponse::error(GroupError::UnknownMemberId, &member_id))
            }
            GroupState::PreparingRebalance => {
                let rx = self.park_join(&member_id, req);
                self.maybe_complete_join(now_ms);
                Reply::Later(rx)
            }
            GroupState::CompletingRebalance if same_protocols => {
                // A retry of a join that already completed: repeat its answer.
                Reply::Now(self.join_response_for(&member_id, false))
            }
            GroupState::Stable if same_protocols && !is_leader => {
                Reply::Now(self.join_response_for(&member_id, false))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let reason = if same_protocols {
                    "the leader rejoined"
                } else {
                    "a member rejoined with new metadata"
                };
                let rx = self.park_join(&member_id, req);
                self.prepare_rebalance(now_ms, cfg, reason);
                Reply::Later(rx)
            }
        }
    }

    /// Updates a member from its join request and parks the request.
    fn park_join(&mut self, member_id: &str, req: JoinRequest) -> Receiver<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(member_id) {
            m.protocols = req.protocols;
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.client_id = req.client_id;
            m.client_host = req.client_host;
            // A second join from the same member replaces the first; the first is answered.
            if let Some(old) = m.awaiting_join.replace(tx) {
                let _ = old.send(JoinResponse::error(
                    GroupError::RebalanceInProgress,
                    member_id,
                ));
            }
        }
        rx
    }

    fn add_member(
        &mut self,
        member_id: String,
        req: JoinRequest,
        now_ms: i64,
        cfg: &GroupConfig,
    ) -> Reply<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(inst) = &req.group_instance_id {
            self.static_members.insert(inst.clone(), member_id.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member_id.clone());
        }
        self.next_join_seq += 1;
        self.members.insert(
            member_id.clone(),
            Member {
                member_id,
                group_instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocols: req.protocols,
                assignment: Bytes::new(),
                last_heartbeat_ms: now_ms,
                join_seq: self.next_join_seq,
                awaiting_join: Some(tx),
                awaiting_sync: None,
            },
        );
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(d) = &mut self.initial_delay {
                    d.member_added = true;
                }
                self.maybe_complete_join(now_ms);
            }
            _ => self.prepare_rebalance(now_ms, cfg, "new member"),
        }
        Reply::Later(rx)
    }

    /// KIP-345: a static member restarted (new member id, same instance id). The old
    /// incarnation is fenced; in a Stable group with unchanged metadata the new one takes
    /// over the old assignment without a rebalance.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        req: JoinRequest,
        now_ms: i64,
        cfg: &GroupConfig,
    ) -> Reply<JoinResponse> {
        let Some(mut m) = self.members.remove(old_id) else {
            return Reply::Now(JoinResponse::error(GroupError::UnknownMemberId, old_id));
        };
        m.fail_waiters(GroupError::FencedInstanceId);
        m.member_id = new_id.clone();
        m.last_heartbeat_ms = now_ms;
        if let Some(inst) = &req.group_instance_id {
            self.static_members.insert(inst.clone(), new_id.clone());
        }
        if self.leader_id.as_deref() == Some(old_id) {
            self.leader_id = Some(new_id.clone());
        }
        self.members.insert(new_id.clone(), m);
        // The new member id must survive a broker restart, or the member's next heartbeat
        // would be refused.
        self.dirty = true;
        let is_leader = self.leader_id.as_deref() == Some(new_id.as_str());
        // As Kafka: a Stable group rebalances only if the member's protocols would change
        // the group's selected protocol; new metadata alone (a restarted cooperative consumer
        // owns no partitions yet) does not.
        let protocol_kept = self.state == GroupState::Stable && {
            let old = self
                .members
                .get_mut(&new_id)
                .map(|m| std::mem::replace(&mut m.protocols, req.protocols.clone()));
            let kept = self.protocol_name.as_deref() == Some(self.select_protocol().as_str());
            if let (Some(old), Some(m)) = (old, self.members.get_mut(&new_id)) {
                m.protocols = old;
            }
            kept
        };
        match self.state {
            GroupState::Stable if protocol_kept => {
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.client_id = req.client_id;
                    m.client_host = req.client_host;
                    m.session_timeout_ms = req.session_timeout_ms;
                    m.rebalance_timeout_ms = req.rebalance_timeout_ms;
                    m.protocols = req.protocols;
                }
                Reply::Now(self.join_response_for(&new_id, is_leader))
            }
            GroupState::CompletingRebalance => Reply::Now(self.join_response_for(&new_id, false)),
            GroupState::PreparingRebalance => {
                let rx = self.park_join(&new_id, req);
                self.maybe_complete_join(now_ms);
                Reply::Later(rx)
            }
            _ => {
                let rx = self.park_join(&new_id, req);
                self.prepare_rebalance(now_ms, cfg, "static member rejoined with other protocols");
                Reply::Later(rx)
            }
        }
    }

    fn join_response_for(&self, member_id: &str, skip_assignment: bool) -> JoinResponse {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let leader = self.leader_id.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| JoinMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m.metadata(&protocol).cloned().unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: leader,
            member_id: member_id.to_string(),
            skip_assignment,
            members,
        }
    }

    fn prepare_rebalance(&mut self, now_ms: i64, cfg: &GroupConfig, reason: &str) {
        tracing::info!(group = %self.group_id, generation = self.generation_id, reason, "preparing rebalance");
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(tx) = m.awaiting_sync.take() {
                    let _ = tx.send(SyncResponse::error(GroupError::RebalanceInProgress));
                }
            }
        }
        let was_empty = self.state == GroupState::Empty;
        self.transition(GroupState::PreparingRebalance, now_ms);
        let rebalance_ms = self.max_rebalance_timeout_ms();
        self.rebalance_deadline_ms = now_ms + rebalance_ms;
        self.initial_delay = None;
        if was_empty && cfg.initial_rebalance_delay_ms > 0 {
            self.initial_delay = Some(InitialDelay {
                deadline_ms: now_ms + cfg.initial_rebalance_delay_ms.min(rebalance_ms),
                max_deadline_ms: now_ms + rebalance_ms,
                member_added: false,
            });
        }
        self.maybe_complete_join(now_ms);
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    fn maybe_complete_join(&mut self, now_ms: i64) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.all_members_joined()
        {
            self.complete_join(now_ms);
        }
    }

    /// Ends the join phase: drops members that did not rejoin, bumps the generation, picks
    /// the protocol and answers every parked join.
    fn complete_join(&mut self, now_ms: i64) {
        self.initial_delay = None;
        let laggards: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in laggards {
            self.remove_member(&id, GroupError::UnknownMemberId);
        }
        self.generation_id = self.generation_id.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader_id = None;
            self.transition(GroupState::Empty, now_ms);
            self.dirty = true;
            return;
        }
        self.protocol_name = Some(self.select_protocol());
        if !self
            .leader_id
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader_id = self
                .members
                .values()
                .min_by_key(|m| m.join_seq)
                .map(|m| m.member_id.clone());
        }
        self.transition(GroupState::CompletingRebalance, now_ms);
        self.sync_deadline_ms = now_ms + self.max_rebalance_timeout_ms();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let response = self.join_response_for(&id, false);
            if let Some(m) = self.members.get_mut(&id) {
                m.last_heartbeat_ms = now_ms;
                if let Some(tx) = m.awaiting_join.take() {
                    let _ = tx.send(response);
                }
            }
        }
    }

    /// The protocol every member supports that most members list first (Kafka's vote).
    fn select_protocol(&self) -> String {
        let Some(first) = self.members.values().min_by_key(|m| m.join_seq) else {
            return String::new();
        };
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| self.members.values().all(|m| m.metadata(n).is_some()))
            .collect();
        let mut votes: Vec<(usize, &str)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            let pick = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()));
            if let Some(v) = pick.and_then(|p| votes.iter_mut().find(|(_, c)| *c == p.0)) {
                v.0 += 1;
            }
        }
        // Ties go to the earliest member's preference (candidates keep its order).
        let mut best: Option<(usize, &str)> = None;
        for v in votes {
            if best.is_none_or(|b| v.0 > b.0) {
                best = Some(v);
            }
        }
        best.map(|b| b.1.to_string()).unwrap_or_default()
    }

    /// Removes a member, answering its parked requests with `error`.
    fn remove_member(&mut self, member_id: &str, error: GroupError) {
        if let Some(mut m) = self.members.remove(member_id) {
            m.fail_waiters(error);
            if let Some(inst) = &m.group_instance_id
                && self
                    .static_members
                    .get(inst)
                    .is_some_and(|id| id == member_id)
            {
                self.static_members.remove(inst);
            }
            if self.leader_id.as_deref() == Some(member_id) {
                self.leader_id = self
                    .members
                    .values()
                    .min_by_key(|m| m.join_seq)
                    .map(|m| m.member_id.clone());
            }
        }
    }

    /// Removes a member and moves the group on (rebalance, or completion of one).
    fn remove_member_and_rebalance(&mut self, member_id: &str, now_ms: i64, cfg: &GroupConfig) {
        self.remove_member(member_id, GroupError::UnknownMemberId);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, cfg, "member left or expired")
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Handles SyncGroup.
    pub fn sync(&mut self, req: SyncRequest, now_ms: i64) -> Reply<SyncResponse> {
        let err = |e| Reply::Now(SyncResponse::error(e));
        if self.state == GroupState::Dead {
            return err(GroupError::CoordinatorNotAvailable);
        }
        if self.is_fenced(&req.member_id, req.group_instance_id.as_deref()) {
            return err(GroupError::FencedInstanceId);
        }
        if !self.members.contains_key(&req.member_id) {
            return err(GroupError::UnknownMemberId);
        }
        if req.generation_id != self.generation_id {
            return err(GroupError::IllegalGeneration);
        }
        let type_mismatch = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_mismatch = req
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != self.protocol_name.as_ref());
        if type_mismatch || name_mismatch {
            return err(GroupError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => err(GroupError::RebalanceInProgress),
            GroupState::Stable => {
                let m = &mut self.members.get_mut(&req.member_id);
                let assignment = m.as_mut().map(|m| {
                    m.last_heartbeat_ms = now_ms;
                    m.assignment.clone()
                });
                Reply::Now(self.sync_response(assignment.unwrap_or_default()))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.last_heartbeat_ms = now_ms;
                    if let Some(old) = m.awaiting_sync.replace(tx) {
                        let _ = old.send(SyncResponse::error(GroupError::RebalanceInProgress));
                    }
                }
                if self.leader_id.as_deref() == Some(req.member_id.as_str()) {
                    let mut given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.member_id).unwrap_or_default();
                    }
                    self.transition(GroupState::Stable, now_ms);
                    self.dirty = true;
                    let answers: Vec<(Sender<SyncResponse>, Bytes)> = self
                        .members
                        .values_mut()
                        .filter_map(|m| m.awaiting_sync.take().map(|tx| (tx, m.assignment.clone())))
                        .collect();
                    for (tx, assignment) in answers {
                        let _ = tx.send(self.sync_response(assignment));
                    }
                }
                Reply::Later(rx)
            }
        }
    }

    fn sync_response(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment,
        }
    }

    /// Handles Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if self.is_fenced(member_id, group_instance_id) {
            return Err(GroupError::FencedInstanceId);
        }
        let state = self.state;
        let generation = self.generation_id;
        let Some(m) = self.members.get_mut(member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if generation_id != generation {
            return Err(GroupError::IllegalGeneration);
        }
        match state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                m.last_heartbeat_ms = now_ms;
                Err(GroupError::RebalanceInProgress)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                m.last_heartbeat_ms = now_ms;
                Ok(())
            }
        }
    }

    /// Handles one member of a LeaveGroup request.
    pub fn leave(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        now_ms: i64,
        cfg: &GroupConfig,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let target = match group_instance_id {
            Some(inst) => match self.static_members.get(inst) {
                None => return Err(GroupError::UnknownMemberId),
                Some(id) if !member_id.is_empty() && id != member_id => {
                    return Err(GroupError::FencedInstanceId);
                }
                Some(id) => id.clone(),
            },
            None => {
                if self.pending_members.remove(member_id).is_some() {
                    self.maybe_complete_join(now_ms);
                    return Ok(());
                }
                member_id.to_string()
            }
        };
        if !self.members.contains_key(&target) {
            return Err(GroupError::UnknownMemberId);
        }
        self.remove_member_and_rebalance(&target, now_ms, cfg);
        Ok(())
    }

    /// Checks that a member may commit offsets now (Kafka's rules; generation -1 with no
    /// member is an offsets-only commit, allowed only while the group is empty).
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if generation_id < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if self.is_fenced(member_id, group_instance_id) {
            return Err(GroupError::FencedInstanceId);
        }
        let generation = self.generation_id;
        let Some(m) = self.members.get_mut(member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        if generation_id != generation {
            return Err(GroupError::IllegalGeneration);
        }
        m.last_heartbeat_ms = now_ms;
        Ok(())
    }

    /// Acts on time: the end of the initial delay, rebalance and sync timeouts, session
    /// expiry of members and of pending member ids.
    pub fn tick(&mut self, now_ms: i64, cfg: &GroupConfig) {
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(mut d) = self.initial_delay {
                    // Replays the delay timer's firings up to now: each firing restarts the
                    // delay if a member arrived since the last one, up to the rebalance timeout.
                    while now_ms >= d.deadline_ms
                        && d.member_added
                        && d.deadline_ms < d.max_deadline_ms
                    {
                        d.deadline_ms =
                            (d.deadline_ms + cfg.initial_rebalance_delay_ms).min(d.max_deadline_ms);
                        d.member_added = false;
                    }
                    self.initial_delay = Some(d);
                    if now_ms >= d.deadline_ms {
                        self.complete_join(now_ms);
                    }
                } else if now_ms >= self.rebalance_deadline_ms {
                    self.complete_join(now_ms);
                }
            }
            GroupState::CompletingRebalance if now_ms >= self.sync_deadline_ms => {
                // Members that never sent SyncGroup (or a leader that never assigned) are
                // dropped, and the rest rebalance without them.
                let laggards: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| {
                        m.awaiting_sync.is_none()
                            || self.leader_id.as_deref() == Some(m.member_id.as_str())
                    })
                    .map(|m| m.member_id.clone())
                    .collect();
                for id in laggards {
                    self.remove_member(&id, GroupError::RebalanceInProgress);
                }
                self.prepare_rebalance(now_ms, cfg, "members did not sync in time");
            }
            _ => {}
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.awaiting_join.is_none()
                    && m.awaiting_sync.is_none()
                    && now_ms >= m.last_heartbeat_ms + i64::from(m.session_timeout_ms)
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.group_id, member = %id, "session expired; removing member");
            self.remove_member_and_rebalance(&id, now_ms, cfg);
        }
        let before = self.pending_members.len();
        self.pending_members
            .retain(|_, lapse_ms| *lapse_ms > now_ms);
        if self.pending_members.len() != before {
            self.maybe_complete_join(now_ms);
        }
    }

    /// Drops committed offsets past retention; only an empty group's offsets expire. A
    /// consumer group's clock starts when it became empty, an offsets-only group's at each
    /// commit. Returns the expired partitions.
    pub fn expire_offsets(&mut self, now_ms: i64, cfg: &GroupConfig) -> Vec<(String, i32)> {
        if self.state != GroupState::Empty {
            return Vec::new();
        }
        let empty_since_ms = self.state_timestamp_ms;
        let consumer_group = self.protocol_type.is_some();
        let expired: Vec<(String, i32)> = self
            .offsets
            .iter()
            .filter(|(_, v)| {
                let base_ms = if consumer_group {
                    empty_since_ms.max(v.commit_timestamp_ms)
                } else {
                    v.commit_timestamp_ms
                };
                now_ms >= base_ms.saturating_add(cfg.offsets_retention_ms)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.offsets.remove(k);
        }
        expired
    }

    /// Empty with nothing to keep: no members, no member id handed out, no offsets.
    pub fn is_idle(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
    }

    /// Marks the group deleted.
    pub fn mark_dead(&mut self, now_ms: i64) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.remove_member(&id, GroupError::CoordinatorNotAvailable);
        }
        self.pending_members.clear();
        self.transition(GroupState::Dead, now_ms);
    }

    /// Topics the members subscribe to (decoded from consumer-protocol metadata), for
    /// OffsetDelete's check. `None` if some metadata is not the consumer protocol.
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = Vec::new();
        for m in self.members.values() {
            topics.extend(decode_subscription_topics(m.metadata(protocol)?)?);
        }
        Some(topics)
    }

    /// The durable form of the group's membership.
    pub fn to_value(&self) -> GroupValue {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol).cloned().unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Restores membership from the log. A group with members comes back Stable with every
    /// session restarted at `now_ms`: live consumers keep heartbeating and notice nothing,
    /// dead ones expire after their session timeout, as on Kafka after coordinator failover.
    pub fn restore(&mut self, v: GroupValue, now_ms: i64) {
        self.protocol_type = v.protocol_type;
        self.generation_id = v.generation_id;
        self.protocol_name = v.protocol_name.clone();
        self.leader_id = v.leader_id;
        self.members.clear();
        self.static_members.clear();
        let protocol = v.protocol_name.unwrap_or_default();
        for (i, mv) in v.members.into_iter().enumerate() {
            if let Some(inst) = &mv.group_instance_id {
                self.static_members
                    .insert(inst.clone(), mv.member_id.clone());
            }
            self.members.insert(
                mv.member_id.clone(),
                Member {
                    member_id: mv.member_id,
                    group_instance_id: mv.group_instance_id,
                    client_id: mv.client_id,
                    client_host: mv.client_host,
                    session_timeout_ms: mv.session_timeout_ms,
                    rebalance_timeout_ms: mv.rebalance_timeout_ms,
                    protocols: vec![(protocol.clone(), mv.subscription)],
                    assignment: mv.assignment,
                    last_heartbeat_ms: now_ms,
                    join_seq: i as u64,
                    awaiting_join: None,
                    awaiting_sync: None,
                },
            );
        }
        self.next_join_seq = self.members.len() as u64;
        let state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.state = state;
        self.state_timestamp_ms = if state == GroupState::Empty {
            v.state_timestamp_ms
        } else {
            now_ms
        };
    }
}

/// Reads the topic list of a ConsumerProtocolSubscription (any version: i16 version, then
/// an array of i16-length strings). `None` if malformed.
pub fn decode_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut buf = metadata;
    let take = |buf: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if buf.len() < n {
            return None;
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Some(head.to_vec())
    };
    let _version = take(&mut buf, 2)?;
    let count = i32::from_be_bytes(take(&mut buf, 4)?.try_into().ok()?);
    if !(0..=100_000).contains(&count) {
        return None;
    }
    let mut topics = Vec::new();
    for _ in 0..count {
        let len = i16::from_be_bytes(take(&mut buf, 2)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        topics.push(String::from_utf8(take(&mut buf, len)?).ok()?);
    }
    Some(topics)
}
