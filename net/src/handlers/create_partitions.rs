//! CreatePartitions (key 37): grow a topic's partition count.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, RequestHeader};

use super::create_topics::admin_call;
use super::{str_bytes, topic_name};
use crate::cores::{AdminRequest, CoreContext};

/// Answers CreatePartitions.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    _header: &RequestHeader,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let topics: Vec<(String, i32)> = request
        .topics
        .into_iter()
        .map(|t| (t.name.0.to_string(), t.count))
        .collect();
    let names: Vec<String> = topics.iter().map(|(n, _)| n.clone()).collect();
    let results = admin_call(
        ctx,
        AdminRequest::CreatePartitions {
            topics,
            validate_only: request.validate_only,
        },
        names.len(),
    )
    .await;
    let results = names
        .into_iter()
        .zip(results)
        .map(|(name, r)| {
            CreatePartitionsTopicResult::default()
                .with_name(topic_name(&name))
                .with_error_code(r.error_code)
                .with_error_message(r.error_message.map(|m| str_bytes(&m)))
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
