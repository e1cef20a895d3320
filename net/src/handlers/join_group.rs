//! JoinGroup (key 11), v0-v9: routed to the group's owner core, where the request may park
//! until the rebalance's join phase completes. v4+ gets MEMBER_ID_REQUIRED first (KIP-394).

use std::net::SocketAddr;
use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, RequestHeader};

use super::str_bytes;
use crate::cores::CoreContext;
use crate::group::GroupError;
use crate::group::rpc::{GroupReply, GroupRequest, call_owner};
use crate::group::state::{JoinRequest, JoinResponse};

/// Most protocols one member may list (a bound on a hostile request).
const PROTOCOLS_MAX: usize = 64;

/// Answers JoinGroup.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    peer: SocketAddr,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let version = header.request_api_version;
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let join = JoinRequest {
        member_id: member_id.clone(),
        group_instance_id: request
            .group_instance_id
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty()),
        client_id: header
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .take(PROTOCOLS_MAX)
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let reply = call_owner(
        ctx,
        &group_id,
        GroupRequest::Join {
            group_id: group_id.clone(),
            request: join,
        },
    )
    .await;
    let r = match reply {
        Ok(GroupReply::Join(r)) => r,
        Ok(_) => JoinResponse::error(GroupError::UnknownServerError, &member_id),
        Err(e) => JoinResponse::error(e, &member_id),
    };
    encode(version, r)
}

fn encode(version: i16, r: JoinResponse) -> JoinGroupResponse {
    let members = r
        .members
        .into_iter()
        .map(|m| {
            let mut out = JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&m.member_id))
                .with_metadata(m.metadata);
            if version >= 5 {
                out = out.with_group_instance_id(m.group_instance_id.map(|s| str_bytes(&s)));
            }
            out
        })
        .collect();
    // Before v7 the protocol name is a non-null string.
    let protocol_name = if version >= 7 {
        r.protocol_name.map(|s| str_bytes(&s))
    } else {
        Some(str_bytes(&r.protocol_name.unwrap_or_default()))
    };
    let mut out = JoinGroupResponse::default()
        .with_error_code(crate::group::state::error_code(r.error))
        .with_generation_id(r.generation_id)
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(&r.leader_id))
        .with_member_id(str_bytes(&r.member_id))
        .with_members(members);
    if version >= 7 {
        out = out.with_protocol_type(r.protocol_type.map(|s| str_bytes(&s)));
    }
    if version >= 9 {
        out = out.with_skip_assignment(r.skip_assignment);
    }
    out
}
