//! DeleteRecords (key 21): advance partitions' log start offsets.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, RequestHeader};

use super::topic_name;
use crate::cores::{CoreContext, CoreReply, CoreRequest, DeleteRecordsPart, DeleteRecordsResult};
use crate::routing::call_owners;

/// Answers DeleteRecords.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    _header: &RequestHeader,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut shape = Vec::with_capacity(request.topics.len());
    let mut parts = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut indexes = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            indexes.push(p.partition_index);
            parts.push(DeleteRecordsPart {
                topic: name.clone(),
                partition: p.partition_index,
                offset: p.offset,
            });
        }
        shape.push((name, indexes));
    }
    let mut results = call_owners(
        ctx,
        parts,
        |p| ctx.owner_of(&p.topic, p.partition),
        |parts| CoreRequest::DeleteRecords { parts },
        |reply| match reply {
            CoreReply::DeleteRecords(r) => Some(r),
            _ => None,
        },
        || DeleteRecordsResult {
            error_code: ResponseError::NotLeaderOrFollower.code(),
            low_watermark: -1,
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
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(r.error_code)
                        .with_low_watermark(r.low_watermark)
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
