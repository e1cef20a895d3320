//! Group work as it travels between cores: the handler on the connection's core builds a
//! [`GroupRequest`], [`crate::cores::CoreContext::call`] carries it to the group's owner core
//! ([`owner_core`]), and [`super::service::serve`] answers with a [`GroupReply`]. Plain owned
//! data only (it crosses threads).

use super::OFFSETS_TOPIC;
use super::coordinator::{CommitRequest, GroupDescription, GroupListing, group_partition};
use super::records::OffsetValue;
use super::state::{GroupError, GroupState, JoinRequest, JoinResponse, SyncRequest, SyncResponse};

/// The core owning a group: the owner of the group's `__consumer_offsets` partition, so
/// the coordinator's appends never leave its core.
pub fn owner_core(group_id: &str, offsets_partitions: i32, cores: usize) -> usize {
    let partition = group_partition(group_id, offsets_partitions);
    crate::cores::partition_owner(OFFSETS_TOPIC, partition, cores)
}

/// Per-partition outcomes.
pub type PartitionResults = Vec<Result<(), GroupError>>;

/// Work for a group's owner core.
#[derive(Debug)]
pub enum GroupRequest {
    /// JoinGroup.
    Join {
        /// Group id.
        group_id: String,
        /// The join.
        request: JoinRequest,
    },
    /// SyncGroup.
    Sync {
        /// Group id.
        group_id: String,
        /// The sync.
        request: SyncRequest,
    },
    /// Heartbeat.
    Heartbeat {
        /// Group id.
        group_id: String,
        /// Member id.
        member_id: String,
        /// `group.instance.id`.
        group_instance_id: Option<String>,
        /// Generation.
        generation_id: i32,
    },
    /// LeaveGroup for a batch of (member id, instance id).
    Leave {
        /// Group id.
        group_id: String,
        /// Members.
        members: Vec<(String, Option<String>)>,
    },
    /// OffsetCommit.
    Commit(CommitRequest),
    /// OffsetFetch; `None` = all partitions.
    FetchOffsets {
        /// Group id.
        group_id: String,
        /// Partitions.
        partitions: Option<Vec<(String, i32)>>,
    },
    /// ListGroups on this core.
    List {
        /// State filter (empty = all).
        states: Vec<GroupState>,
        /// Protocol type filter (empty = all).
        types: Vec<String>,
    },
    /// DescribeGroups for one group.
    Describe {
        /// Group id.
        group_id: String,
    },
    /// DeleteGroups for one group.
    Delete {
        /// Group id.
        group_id: String,
    },
    /// OffsetDelete.
    DeleteOffsets {
        /// Group id.
        group_id: String,
        /// Partitions.
        partitions: Vec<(String, i32)>,
    },
}

/// Answers, variant for variant.
#[derive(Debug)]
pub enum GroupReply {
    /// To `Join`.
    Join(JoinResponse),
    /// To `Sync`.
    Sync(SyncResponse),
    /// To `Heartbeat`.
    Heartbeat(Result<(), GroupError>),
    /// To `Leave`.
    Leave(Result<PartitionResults, GroupError>),
    /// To `Commit`.
    Commit(Result<PartitionResults, GroupError>),
    /// To `FetchOffsets`.
    FetchOffsets(Result<Vec<(String, i32, Option<OffsetValue>)>, GroupError>),
    /// To `List`.
    List(Result<Vec<GroupListing>, GroupError>),
    /// To `Describe`.
    Describe(Result<GroupDescription, GroupError>),
    /// To `Delete`.
    Delete(Result<(), GroupError>),
    /// To `DeleteOffsets`.
    DeleteOffsets(Result<PartitionResults, GroupError>),
}

/// Sends `request` to the owner core of `group_id` and returns its answer; an unreachable
/// core reads as COORDINATOR_NOT_AVAILABLE (the client retries).
pub async fn call_owner(
    ctx: &std::rc::Rc<crate::cores::CoreContext>,
    group_id: &str,
    request: GroupRequest,
) -> Result<GroupReply, GroupError> {
    let core = owner_core(
        group_id,
        ctx.groups.settings.offsets_topic_partitions,
        ctx.cores,
    );
    match ctx
        .call(core, crate::cores::CoreRequest::Group(request))
        .await
    {
        Ok(crate::cores::CoreReply::Group(reply)) => Ok(reply),
        _ => Err(GroupError::CoordinatorNotAvailable),
    }
}

/// Creates `__consumer_offsets` if it does not exist yet (on first FindCoordinator, like
/// Kafka). Returns once every core has opened its partitions.
pub async fn ensure_offsets_topic(
    ctx: &std::rc::Rc<crate::cores::CoreContext>,
) -> Result<(), GroupError> {
    use crate::cores::{AdminRequest, CoreReply, CoreRequest, METADATA_CORE};
    if ctx.metadata().topics.contains_key(OFFSETS_TOPIC) {
        return Ok(());
    }
    let settings = &ctx.groups.settings;
    let topic = crate::admin::NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        partitions: settings.offsets_topic_partitions,
        replication_factor: 1,
        assignments: Vec::new(),
        configs: vec![(
            "segment.bytes".to_string(),
            Some(settings.offsets_topic_segment_bytes.to_string()),
        )],
    };
    let request = CoreRequest::Admin(AdminRequest::CreateTopics {
        topics: vec![topic],
        validate_only: false,
    });
    const TOPIC_ALREADY_EXISTS: i16 = 36;
    match ctx.call(METADATA_CORE, request).await {
        Ok(CoreReply::Admin(results))
            if results
                .iter()
                .all(|r| r.error_code == 0 || r.error_code == TOPIC_ALREADY_EXISTS) =>
        {
            Ok(())
        }
        other => {
            tracing::error!(?other, "cannot create {OFFSETS_TOPIC}");
            Err(GroupError::CoordinatorNotAvailable)
        }
    }
}
