//! CreateTopics (key 19), including validate_only. Runs on the metadata core.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, RequestHeader};

use super::{str_bytes, topic_name};
use crate::admin::NewTopic;
use crate::cores::{AdminRequest, AdminResult, CoreContext, CoreReply, CoreRequest, METADATA_CORE};

/// Answers CreateTopics.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let version = header.request_api_version;
    let topics: Vec<NewTopic> = request
        .topics
        .into_iter()
        .map(|t| NewTopic {
            name: t.name.0.to_string(),
            partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .into_iter()
                .map(|a| a.broker_ids.into_iter().map(|b| b.0).collect())
                .collect(),
            configs: t
                .configs
                .into_iter()
                .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())))
                .collect(),
        })
        .collect();
    let requested = topics.clone();
    let results = admin_call(
        ctx,
        AdminRequest::CreateTopics {
            topics,
            validate_only: request.validate_only,
        },
        requested.len(),
    )
    .await;
    let image = ctx.metadata();
    let topics = requested
        .into_iter()
        .zip(results)
        .map(|(topic, r)| {
            let mut result = CreatableTopicResult::default()
                .with_name(topic_name(&topic.name))
                .with_error_code(r.error_code)
                .with_error_message(r.error_message.map(|m| str_bytes(&m)));
            if r.error_code != 0 || version < 5 {
                return result;
            }
            // Kafka reports the created topic's shape and effective configs (v5+).
            let (id, partitions, overrides) = match image.topics.get(&topic.name) {
                Some(meta) if !request.validate_only => {
                    (meta.id, meta.partitions, meta.configs.clone())
                }
                _ => {
                    let partitions = if !topic.assignments.is_empty() {
                        topic.assignments.len() as i32
                    } else if topic.partitions == -1 {
                        ctx.config.num_partitions
                    } else {
                        topic.partitions
                    };
                    let overrides = topic
                        .configs
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                        .collect();
                    (0, partitions, overrides)
                }
            };
            let configs = super::describe_configs::topic_entries(ctx, &overrides)
                .into_iter()
                .map(|(name, value, source)| {
                    CreatableTopicConfigs::default()
                        .with_name(str_bytes(name))
                        .with_value(Some(str_bytes(&value)))
                        .with_config_source(source)
                })
                .collect();
            result = result
                .with_num_partitions(partitions)
                .with_replication_factor(1)
                .with_configs(Some(configs));
            if version >= 7 {
                result = result.with_topic_id(uuid::Uuid::from_u128(id));
            }
            result
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// Sends an admin request to the metadata core; `count` results come back, in order.
pub async fn admin_call(
    ctx: &Rc<CoreContext>,
    request: AdminRequest,
    count: usize,
) -> Vec<AdminResult> {
    let mut results = match ctx.call(METADATA_CORE, CoreRequest::Admin(request)).await {
        Ok(CoreReply::Admin(results)) => results,
        _ => Vec::new(),
    };
    results.resize_with(count, || AdminResult {
        error_code: ResponseError::RequestTimedOut.code(),
        error_message: Some("metadata core unavailable".to_string()),
    });
    results
}
