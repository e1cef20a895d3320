//! DeleteRecords (key 21): advance partitions' log start offsets.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, RequestHeader};

use super::topic_name;
use crate::cores::{CoreContext, CoreReply, CoreRequest, DeleteRecordsPart, DeleteRecordsResult};
use crate::join::join_all;
use crate::routing::{merge, split_by_owner};

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
    let total = parts.len();
    let splits = split_by_owner(parts, |p| ctx.owner_of(&p.topic, p.partition));
    let calls = splits.into_iter().map(|split| {
        let ctx = ctx.clone();
        async move {
            let reply = ctx
                .call(
                    split.core,
                    CoreRequest::DeleteRecords { parts: split.items },
                )
                .await;
            let results = match reply {
                Ok(CoreReply::DeleteRecords(r)) => Some(r),
                _ => None,
            };
            (split.positions, results)
        }
    });
    let answers = join_all(calls.collect()).await;
    let mut results = merge(total, answers, || DeleteRecordsResult {
        error_code: ResponseError::NotLeaderOrFollower.code(),
        low_watermark: -1,
    })
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
