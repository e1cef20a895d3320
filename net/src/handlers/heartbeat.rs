//! Heartbeat (key 12), v0-v4: keeps a member's session alive; REBALANCE_IN_PROGRESS tells it
//! to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse, RequestHeader};

use crate::cores::CoreContext;
use crate::group::GroupError;
use crate::group::rpc::{GroupReply, GroupRequest, call_owner};

/// Answers Heartbeat.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    _header: &RequestHeader,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let reply = call_owner(
        ctx,
        &group_id,
        GroupRequest::Heartbeat {
            group_id: group_id.clone(),
            member_id: request.member_id.to_string(),
            group_instance_id: request
                .group_instance_id
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty()),
            generation_id: request.generation_id,
        },
    )
    .await;
    let code = match reply {
        Ok(GroupReply::Heartbeat(Ok(()))) => 0,
        Ok(GroupReply::Heartbeat(Err(e))) | Err(e) => e.code(),
        Ok(_) => GroupError::UnknownServerError.code(),
    };
    HeartbeatResponse::default().with_error_code(code)
}
