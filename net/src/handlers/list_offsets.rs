//! ListOffsets (key 2): earliest (-2), latest (-1), max timestamp (-3), or by timestamp.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, RequestHeader};

use super::topic_name;
use crate::cores::{CoreContext, CoreReply, CoreRequest, OffsetQuery, OffsetResult};
use crate::routing::call_owners;

/// Answers ListOffsets.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    // leader_epoch exists from v4; kafka-protocol refuses to encode it earlier.
    let with_epoch = header.request_api_version >= 4;
    let mut shape = Vec::with_capacity(request.topics.len());
    let mut queries = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut indexes = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            indexes.push(p.partition_index);
            queries.push(OffsetQuery {
                topic: name.clone(),
                partition: p.partition_index,
                timestamp: p.timestamp,
            });
        }
        shape.push((name, indexes));
    }
    let mut results = call_owners(
        ctx,
        queries,
        |q| ctx.owner_of(&q.topic, q.partition),
        |parts| CoreRequest::ListOffsets { parts },
        |reply| match reply {
            CoreReply::ListOffsets(r) => Some(r),
            _ => None,
        },
        || OffsetResult {
            error_code: ResponseError::NotLeaderOrFollower.code(),
            timestamp: -1,
            offset: -1,
        },
    )
    .await
    .into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, indexes)| {
            let partitions = indexes
                .into_iter()
                .map(|index| {
                    let r = results.next().unwrap_or_default();
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(index)
                        .with_error_code(r.error_code)
                        .with_timestamp(r.timestamp)
                        .with_offset(r.offset)
                        .with_leader_epoch(if r.error_code == 0 && with_epoch {
                            0
                        } else {
                            -1
                        })
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
