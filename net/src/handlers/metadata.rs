//! Metadata (key 3): brokers (just us), topics and partitions, with auto-creation of unknown
//! topics when both the broker (`auto.create.topics.enable`) and the client allow it.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, RequestHeader};

use super::{str_bytes, topic_name};
use crate::admin::NewTopic;
use crate::cores::{AdminRequest, CoreContext, CoreReply, CoreRequest, METADATA_CORE};
use crate::metadata::{MetadataImage, validate_topic_name};

/// Answers Metadata.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    request: MetadataRequest,
) -> MetadataResponse {
    let version = header.request_api_version;
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let wanted: Option<Vec<(Option<String>, u128)>> = match request.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(
            list.into_iter()
                .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id.as_u128()))
                .collect(),
        ),
    };

    if let Some(wanted) = &wanted {
        let auto_create = ctx.config.auto_create_topics && request.allow_auto_topic_creation;
        let image = ctx.metadata();
        let missing: Vec<String> = wanted
            .iter()
            .filter_map(|(name, _)| name.clone())
            .filter(|n| !image.topics.contains_key(n) && validate_topic_name(n).is_ok())
            .collect();
        if auto_create && !missing.is_empty() {
            create_missing(ctx, missing).await;
        }
    }

    let image = ctx.metadata();
    let topics = match wanted {
        None => image
            .topics
            .keys()
            .map(|name| topic_entry(ctx, &image, name))
            .collect(),
        Some(wanted) => wanted
            .into_iter()
            .map(|(name, id)| match name {
                Some(name) => topic_entry(ctx, &image, &name),
                None => match image.topic_by_id(id) {
                    Some((name, _)) => topic_entry(ctx, &image, name),
                    None => MetadataResponseTopic::default()
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_topic_id(uuid::Uuid::from_u128(id)),
                },
            })
            .collect(),
    };

    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(ctx.config.node_id))
                .with_host(str_bytes(&ctx.config.advertised_host))
                .with_port(i32::from(ctx.config.advertised_port)),
        ])
        .with_cluster_id(Some(str_bytes(&image.cluster_id)))
        .with_controller_id(BrokerId(ctx.config.node_id))
        .with_topics(topics)
}

fn topic_entry(ctx: &CoreContext, image: &MetadataImage, name: &str) -> MetadataResponseTopic {
    let node = BrokerId(ctx.config.node_id);
    let Some(meta) = image.topics.get(name) else {
        let code = if validate_topic_name(name).is_err() {
            ResponseError::InvalidTopicException.code()
        } else {
            ResponseError::UnknownTopicOrPartition.code()
        };
        return MetadataResponseTopic::default()
            .with_error_code(code)
            .with_name(Some(topic_name(name)));
    };
    let partitions = (0..meta.partitions)
        .map(|index| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_topic_id(uuid::Uuid::from_u128(meta.id))
        .with_is_internal(name == crate::group::OFFSETS_TOPIC)
        .with_partitions(partitions)
}

/// Creates topics named in a Metadata request, with broker defaults.
async fn create_missing(ctx: &Rc<CoreContext>, names: Vec<String>) {
    let topics = names
        .into_iter()
        .map(|name| NewTopic {
            name,
            partitions: -1,
            replication_factor: -1,
            assignments: Vec::new(),
            configs: Vec::new(),
        })
        .collect();
    let request = CoreRequest::Admin(AdminRequest::CreateTopics {
        topics,
        validate_only: false,
    });
    match ctx.call(METADATA_CORE, request).await {
        Ok(CoreReply::Admin(results)) => {
            for r in results.iter().filter(|r| r.error_code != 0) {
                // TOPIC_ALREADY_EXISTS is a harmless race with another creator.
                tracing::debug!(code = r.error_code, message = ?r.error_message, "auto-create");
            }
        }
        Ok(other) => tracing::error!(?other, "unexpected reply to auto-create"),
        Err(e) => tracing::warn!(error = %e, "auto-create failed"),
    }
}
