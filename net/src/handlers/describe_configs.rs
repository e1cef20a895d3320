//! DescribeConfigs (key 32): effective topic configs (overrides over broker defaults) and
//! the broker's own settings.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse, RequestHeader};

use super::str_bytes;
use crate::cores::CoreContext;
use crate::topic_config;

/// Resource type codes (Kafka's `ConfigResource.Type`).
pub const RESOURCE_TOPIC: i8 = 2;
/// Broker resource.
pub const RESOURCE_BROKER: i8 = 4;

/// Config sources (Kafka's `DescribeConfigsResponse.ConfigSource`).
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;
/// Set in the broker's static configuration.
pub const SOURCE_STATIC_BROKER: i8 = 4;
/// A built-in default.
pub const SOURCE_DEFAULT: i8 = 5;

/// Config type codes (v3+): STRING 2, INT 3, LONG 5, BOOLEAN 1.
fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" | "compression.type" | "message.timestamp.type" => 2,
        "min.insync.replicas" | "max.message.bytes" | "segment.bytes" | "index.interval.bytes" => 3,
        _ => 5,
    }
}

/// The built-in default of a topic config (that of its broker setting).
fn builtin_default(topic_name: &str) -> Option<&'static str> {
    let (broker_name, _) = topic_config::BROKER_DEFAULT_NAMES
        .iter()
        .find(|(_, t)| *t == topic_name)?;
    crate::config::SETTINGS
        .iter()
        .find(|s| s.name == *broker_name)
        .map(|s| s.default)
}

/// (name, effective value, source) of every topic config.
pub fn topic_entries(
    ctx: &CoreContext,
    overrides: &BTreeMap<String, String>,
) -> Vec<(&'static str, String, i8)> {
    topic_config::known_names()
        .into_iter()
        .filter_map(|name| {
            let (value, is_default) =
                topic_config::effective_value(name, overrides, &ctx.config.topic_defaults)?;
            // A broker default counts as "static broker config" only when the operator set
            // it to something other than the built-in value, as Kafka reports it.
            let source = if !is_default {
                SOURCE_DYNAMIC_TOPIC
            } else if builtin_default(name).is_some_and(|d| d != value) {
                SOURCE_STATIC_BROKER
            } else {
                SOURCE_DEFAULT
            };
            Some((name, value, source))
        })
        .collect()
}

/// Answers DescribeConfigs.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let version = header.request_api_version;
    let image = ctx.metadata();
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            // Null asks for every config; an empty list for none (Kafka's semantics).
            let keys: Option<Vec<String>> = resource
                .configuration_keys
                .map(|k| k.into_iter().map(|s| s.to_string()).collect());
            let wanted = |n: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == n));
            let base = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let entries: Vec<(String, String, i8)> = match resource.resource_type {
                RESOURCE_TOPIC => match image.topics.get(&name) {
                    Some(meta) => topic_entries(ctx, &meta.configs)
                        .into_iter()
                        .map(|(n, v, s)| (n.to_string(), v, s))
                        .collect(),
                    None => {
                        return base
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str_bytes(&format!(
                                "topic '{name}' does not exist"
                            ))));
                    }
                },
                RESOURCE_BROKER => {
                    if name.parse::<i32>().ok() != Some(ctx.config.node_id) && !name.is_empty() {
                        return base
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(str_bytes("unknown broker id")));
                    }
                    broker_entries(ctx)
                }
                _ => {
                    return base
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(str_bytes("unsupported resource type")));
                }
            };
            let configs = entries
                .into_iter()
                .filter(|(n, _, _)| wanted(n))
                .map(|(n, v, source)| {
                    let mut entry = DescribeConfigsResourceResult::default()
                        .with_name(str_bytes(&n))
                        .with_value(Some(str_bytes(&v)))
                        .with_read_only(false)
                        .with_config_source(source)
                        .with_is_sensitive(false);
                    if version >= 3 {
                        entry = entry.with_config_type(config_type(&n));
                    }
                    entry
                })
                .collect();
            base.with_error_code(0).with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// The broker's topic-default settings, by their broker names.
fn broker_entries(ctx: &CoreContext) -> Vec<(String, String, i8)> {
    topic_config::BROKER_DEFAULT_NAMES
        .iter()
        .filter_map(|(broker_name, topic_name)| {
            let v = ctx.config.topic_defaults.get(*topic_name)?;
            Some((broker_name.to_string(), v.clone(), SOURCE_STATIC_BROKER))
        })
        .chain([
            (
                "num.partitions".to_string(),
                ctx.config.num_partitions.to_string(),
                SOURCE_STATIC_BROKER,
            ),
            (
                "auto.create.topics.enable".to_string(),
                ctx.config.auto_create_topics.to_string(),
                SOURCE_STATIC_BROKER,
            ),
            (
                "socket.request.max.bytes".to_string(),
                ctx.config.socket_request_max_bytes.to_string(),
                SOURCE_STATIC_BROKER,
            ),
        ])
        .collect()
}
