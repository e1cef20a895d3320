//! DeleteTopics (key 20), by name (v0-5) or by name or id (v6).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, RequestHeader};

use super::create_topics::admin_call;
use super::{str_bytes, topic_name};
use crate::cores::{AdminRequest, CoreContext};

/// Answers DeleteTopics.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let version = header.request_api_version;
    let image = ctx.metadata();
    // (name if resolved, id as given, error if the id is unknown)
    let wanted: Vec<(Option<String>, u128)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| match t.name {
                Some(name) => (Some(name.0.to_string()), t.topic_id.as_u128()),
                None => {
                    let id = t.topic_id.as_u128();
                    (image.topic_by_id(id).map(|(n, _)| n.clone()), id)
                }
            })
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), 0))
            .collect()
    };
    let names: Vec<String> = wanted.iter().filter_map(|(n, _)| n.clone()).collect();
    let mut results = admin_call(
        ctx,
        AdminRequest::DeleteTopics {
            names: names.clone(),
        },
        names.len(),
    )
    .await
    .into_iter();
    let responses = wanted
        .into_iter()
        .map(|(name, id)| match name {
            Some(name) => {
                let r = results.next().unwrap_or_default();
                let mut out = DeletableTopicResult::default()
                    .with_name(Some(topic_name(&name)))
                    .with_error_code(r.error_code);
                if version >= 5 {
                    out = out.with_error_message(r.error_message.map(|m| str_bytes(&m)));
                }
                if version >= 6 {
                    let id = image.topics.get(&name).map(|t| t.id).unwrap_or(id);
                    out = out.with_topic_id(uuid::Uuid::from_u128(id));
                }
                out
            }
            None => DeletableTopicResult::default()
                .with_topic_id(uuid::Uuid::from_u128(id))
                .with_error_code(ResponseError::UnknownTopicId.code()),
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
