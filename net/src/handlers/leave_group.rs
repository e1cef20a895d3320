//! LeaveGroup (key 13), v0-v5: one member before v3, a batch of members (by member id or
//! group.instance.id) from v3.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse, RequestHeader};

use super::str_bytes;
use crate::cores::CoreContext;
use crate::group::GroupError;
use crate::group::rpc::{GroupReply, GroupRequest, call_owner};

/// Most members one request may remove (a bound on a hostile request).
const MEMBERS_MAX: usize = 10_000;

/// Answers LeaveGroup.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let version = header.request_api_version;
    let group_id = request.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .take(MEMBERS_MAX)
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id
                        .as_ref()
                        .map(|s| s.to_string())
                        .filter(|s| !s.is_empty()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let reply = call_owner(
        ctx,
        &group_id,
        GroupRequest::Leave {
            group_id: group_id.clone(),
            members: members.clone(),
        },
    )
    .await;
    let results = match reply {
        Ok(GroupReply::Leave(Ok(r))) => Ok(r),
        Ok(GroupReply::Leave(Err(e))) | Err(e) => Err(e),
        Ok(_) => Err(GroupError::UnknownServerError),
    };
    match results {
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
        Ok(results) if version >= 3 => LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .zip(results)
                .map(|((id, inst), r)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(&id))
                        .with_group_instance_id(inst.map(|s| str_bytes(&s)))
                        .with_error_code(r.err().map_or(0, GroupError::code))
                })
                .collect(),
        ),
        Ok(results) => LeaveGroupResponse::default().with_error_code(
            results
                .first()
                .and_then(|r| r.err())
                .map_or(0, GroupError::code),
        ),
    }
}
