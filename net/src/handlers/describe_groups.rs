//! DescribeGroups (key 15), v0-v5: state, protocol and members of each group, each asked
//! of its owner core. An unknown group is reported in state Dead, as Kafka does.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, RequestHeader};

use super::str_bytes;
use crate::cores::CoreContext;
use crate::group::GroupError;
use crate::group::rpc::{GroupReply, GroupRequest, call_owner};

/// Most groups one request may describe (a bound on a hostile request).
const GROUPS_MAX: usize = 1_000;
/// "Not requested" value of authorized_operations.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

/// Answers DescribeGroups.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let version = header.request_api_version;
    let mut groups = Vec::with_capacity(request.groups.len());
    for g in request.groups.into_iter().take(GROUPS_MAX) {
        let group_id = g.0.to_string();
        let reply = call_owner(
            ctx,
            &group_id,
            GroupRequest::Describe {
                group_id: group_id.clone(),
            },
        )
        .await;
        let base = DescribedGroup::default().with_group_id(g);
        let base = if version >= 3 {
            base.with_authorized_operations(OPERATIONS_NOT_REQUESTED)
        } else {
            base
        };
        let d = match reply {
            Ok(GroupReply::Describe(Ok(d))) => d,
            Ok(GroupReply::Describe(Err(e))) | Err(e) => {
                groups.push(
                    base.with_error_code(e.code())
                        .with_group_state(str_bytes("Dead")),
                );
                continue;
            }
            Ok(_) => {
                groups.push(base.with_error_code(GroupError::UnknownServerError.code()));
                continue;
            }
        };
        let members = d
            .members
            .into_iter()
            .map(|m| {
                let out = DescribedGroupMember::default()
                    .with_member_id(str_bytes(&m.member_id))
                    .with_client_id(str_bytes(&m.client_id))
                    .with_client_host(str_bytes(&m.client_host))
                    .with_member_metadata(m.metadata)
                    .with_member_assignment(m.assignment);
                if version >= 4 {
                    out.with_group_instance_id(m.group_instance_id.map(|s| str_bytes(&s)))
                } else {
                    out
                }
            })
            .collect();
        groups.push(
            base.with_group_state(str_bytes(d.state.as_str()))
                .with_protocol_type(str_bytes(&d.protocol_type))
                .with_protocol_data(str_bytes(&d.protocol_name))
                .with_members(members),
        );
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
