//! OffsetCommit (key 8), v2-v9: answered only once the commit is durable in
//! `__consumer_offsets` (the coordinator's group commit).

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, RequestHeader};

use super::topic_name;
use crate::cores::CoreContext;
use crate::group::GroupError;
use crate::group::coordinator::{CommitOffset, CommitRequest};
use crate::group::rpc::{GroupReply, GroupRequest, call_owner};

/// Answers OffsetCommit.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let version = header.request_api_version;
    let group_id = request.group_id.0.to_string();
    let mut shape: Vec<(String, Vec<i32>)> = Vec::with_capacity(request.topics.len());
    let mut offsets = Vec::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        let mut indexes = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            indexes.push(p.partition_index);
            offsets.push(CommitOffset {
                topic: name.clone(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p
                    .committed_metadata
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            });
        }
        shape.push((name, indexes));
    }
    // As Kafka: offsets of partitions that do not exist are refused, per partition.
    let image = ctx.metadata();
    let known = |o: &CommitOffset| {
        image
            .topics
            .get(&o.topic)
            .is_some_and(|t| (0..t.partitions).contains(&o.partition))
    };
    let exists: Vec<bool> = offsets.iter().map(known).collect();
    let offsets: Vec<CommitOffset> = offsets.into_iter().filter(|o| known(o)).collect();
    let commit = CommitRequest {
        group_id: group_id.clone(),
        generation_id: request.generation_id_or_member_epoch,
        member_id: request.member_id.to_string(),
        group_instance_id: request
            .group_instance_id
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty()),
        offsets,
    };
    let reply = call_owner(ctx, &group_id, GroupRequest::Commit(commit)).await;
    // Per-partition codes, or one code for the whole request.
    let outcome: Result<Vec<i16>, i16> = match reply {
        Ok(GroupReply::Commit(Ok(r))) => Ok(r
            .into_iter()
            .map(|r| r.err().map_or(0, GroupError::code))
            .collect()),
        Ok(GroupReply::Commit(Err(e))) | Err(e) => Err(e.code()),
        Ok(_) => Err(GroupError::UnknownServerError.code()),
    };
    let (mut per_partition, whole) = match outcome {
        Ok(codes) => (codes.into_iter(), 0),
        Err(code) => (Vec::new().into_iter(), code),
    };
    let mut exists = exists.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, indexes)| {
            OffsetCommitResponseTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(
                    indexes
                        .into_iter()
                        .map(|i| {
                            let code = if exists.next().unwrap_or(false) {
                                per_partition.next().unwrap_or(whole)
                            } else {
                                GroupError::UnknownTopicOrPartition.code()
                            };
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(i)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
