//! OffsetDelete (key 47), v0: removes committed offsets of partitions the group does not
//! consume (GROUP_SUBSCRIBED_TO_TOPIC otherwise).

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, RequestHeader};

use super::topic_name;
use crate::cores::CoreContext;
use crate::group::GroupError;
use crate::group::rpc::{GroupReply, GroupRequest, call_owner};

/// Answers OffsetDelete.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    _header: &RequestHeader,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group_id = request.group_id.0.to_string();
    let mut shape: Vec<(String, Vec<i32>)> = Vec::new();
    let mut partitions = Vec::new();
    for t in request.topics {
        let name = t.name.0.to_string();
        let indexes: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
        partitions.extend(indexes.iter().map(|p| (name.clone(), *p)));
        shape.push((name, indexes));
    }
    let reply = call_owner(
        ctx,
        &group_id,
        GroupRequest::DeleteOffsets {
            group_id: group_id.clone(),
            partitions,
        },
    )
    .await;
    let results = match reply {
        Ok(GroupReply::DeleteOffsets(Ok(r))) => r,
        Ok(GroupReply::DeleteOffsets(Err(e))) | Err(e) => {
            return OffsetDeleteResponse::default().with_error_code(e.code());
        }
        Ok(_) => {
            return OffsetDeleteResponse::default()
                .with_error_code(GroupError::UnknownServerError.code());
        }
    };
    let mut results = results.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, indexes)| {
            OffsetDeleteResponseTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(
                    indexes
                        .into_iter()
                        .map(|i| {
                            let code = results
                                .next()
                                .and_then(|r| r.err())
                                .map_or(0, GroupError::code);
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(i)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
