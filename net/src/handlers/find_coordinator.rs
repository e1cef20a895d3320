//! FindCoordinator (key 10): every group's coordinator is this broker (single node). The
//! first request creates `__consumer_offsets`, as Kafka does. Batched keys from v4.

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, RequestHeader,
};

use super::str_bytes;
use crate::cores::CoreContext;
use crate::group::GroupError;
use crate::group::rpc::ensure_offsets_topic;

/// Key type of consumer groups (1 is transactions, 2 share groups: not served).
const KEY_TYPE_GROUP: i8 = 0;
/// Most keys answered in one request (a bound on a hostile batch).
const KEYS_MAX: usize = 10_000;

/// Answers FindCoordinator.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let version = header.request_api_version;
    let keys: Vec<String> = if version >= 4 {
        request
            .coordinator_keys
            .iter()
            .take(KEYS_MAX)
            .map(|k| k.to_string())
            .collect()
    } else {
        vec![request.key.to_string()]
    };
    let ready = if request.key_type == KEY_TYPE_GROUP {
        ensure_offsets_topic(ctx).await
    } else {
        Err(GroupError::CoordinatorNotAvailable)
    };
    let answer = |key: &str| -> Coordinator {
        let base = Coordinator::default().with_key(str_bytes(key));
        match ready {
            Ok(()) if !key.is_empty() => base
                .with_node_id(BrokerId(ctx.config.node_id))
                .with_host(str_bytes(&ctx.config.advertised_host))
                .with_port(i32::from(ctx.config.advertised_port)),
            Ok(()) => base
                .with_error_code(GroupError::InvalidGroupId.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1),
            Err(e) => base
                .with_error_code(e.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        }
    };
    if version >= 4 {
        return FindCoordinatorResponse::default()
            .with_coordinators(keys.iter().map(|k| answer(k)).collect());
    }
    let c = answer(keys.first().map(String::as_str).unwrap_or(""));
    FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port)
}
