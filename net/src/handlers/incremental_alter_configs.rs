//! IncrementalAlterConfigs (key 44): topic config overrides, applied live to the logs.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, RequestHeader,
};

use super::create_topics::admin_call;
use super::describe_configs::RESOURCE_TOPIC;
use super::str_bytes;
use crate::admin::ConfigOp;
use crate::cores::{AdminRequest, AdminResult, CoreContext};

/// Answers IncrementalAlterConfigs.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    _header: &RequestHeader,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    // Only topic resources can be altered; others are answered here.
    let mut outcome: Vec<Option<AdminResult>> = Vec::new();
    let mut keys = Vec::new();
    let mut resources = Vec::new();
    for r in request.resources {
        keys.push((r.resource_type, r.resource_name.clone()));
        if r.resource_type != RESOURCE_TOPIC {
            outcome.push(Some(AdminResult {
                error_code: ResponseError::InvalidRequest.code(),
                error_message: Some("only topic configs can be altered".to_string()),
            }));
            continue;
        }
        outcome.push(None);
        let ops = r
            .configs
            .into_iter()
            .map(|c| ConfigOp {
                name: c.name.to_string(),
                op: c.config_operation,
                value: c.value.map(|v| v.to_string()),
            })
            .collect();
        resources.push((r.resource_name.to_string(), ops));
    }
    let count = resources.len();
    let mut results = if count > 0 {
        admin_call(
            ctx,
            AdminRequest::AlterConfigs {
                resources,
                validate_only: request.validate_only,
            },
            count,
        )
        .await
        .into_iter()
    } else {
        Vec::new().into_iter()
    };
    let responses = keys
        .into_iter()
        .zip(outcome)
        .map(|((resource_type, resource_name), local)| {
            let r = local.unwrap_or_else(|| results.next().unwrap_or_default());
            AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(resource_name)
                .with_error_code(r.error_code)
                .with_error_message(r.error_message.map(|m| str_bytes(&m)))
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
