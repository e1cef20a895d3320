//! SyncGroup (key 14), v0-v5: followers park until the leader's assignment arrives.

use std::rc::Rc;

use kafka_protocol::messages::{RequestHeader, SyncGroupRequest, SyncGroupResponse};

use super::str_bytes;
use crate::cores::CoreContext;
use crate::group::GroupError;
use crate::group::rpc::{GroupReply, GroupRequest, call_owner};
use crate::group::state::{SyncRequest, SyncResponse, error_code};

/// Most assignments one request may carry (a bound on a hostile request).
const ASSIGNMENTS_MAX: usize = 100_000;

/// Answers SyncGroup.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let version = header.request_api_version;
    let group_id = request.group_id.0.to_string();
    let sync = SyncRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request
            .group_instance_id
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty()),
        generation_id: request.generation_id,
        protocol_type: request.protocol_type.map(|s| s.to_string()),
        protocol_name: request.protocol_name.map(|s| s.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .take(ASSIGNMENTS_MAX)
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let reply = call_owner(
        ctx,
        &group_id,
        GroupRequest::Sync {
            group_id: group_id.clone(),
            request: sync,
        },
    )
    .await;
    let r = match reply {
        Ok(GroupReply::Sync(r)) => r,
        Ok(_) => SyncResponse::error(GroupError::UnknownServerError),
        Err(e) => SyncResponse::error(e),
    };
    let mut out = SyncGroupResponse::default()
        .with_error_code(error_code(r.error))
        .with_assignment(r.assignment);
    if version >= 5 {
        out = out
            .with_protocol_type(r.protocol_type.map(|s| str_bytes(&s)))
            .with_protocol_name(r.protocol_name.map(|s| str_bytes(&s)));
    }
    out
}
