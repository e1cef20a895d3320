//! ListGroups (key 16), v0-v5: asks every core for its groups; state filter from v4, type
//! filter from v5.

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse, RequestHeader};

use super::str_bytes;
use crate::cores::{CoreContext, CoreReply, CoreRequest};
use crate::group::GroupState;
use crate::group::rpc::{GroupReply, GroupRequest};

/// Answers ListGroups.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let version = header.request_api_version;
    let mut states = Vec::new();
    for s in &request.states_filter {
        match GroupState::parse(s.as_str()) {
            Some(state) => states.push(state),
            // A state no group can be in: nothing matches.
            None => return ListGroupsResponse::default(),
        }
    }
    let types: Vec<String> = request.types_filter.iter().map(|t| t.to_string()).collect();
    // Only "classic" groups exist here; a type filter without it matches nothing.
    if version >= 5 && !types.is_empty() && !types.iter().any(|t| t.eq_ignore_ascii_case("classic"))
    {
        return ListGroupsResponse::default();
    }
    let mut listed = Vec::new();
    let mut error_code = 0;
    for core in 0..ctx.cores {
        let request = CoreRequest::Group(GroupRequest::List {
            states: states.clone(),
            types: Vec::new(),
        });
        match ctx.call(core, request).await {
            Ok(CoreReply::Group(GroupReply::List(Ok(groups)))) => listed.extend(groups),
            _ => error_code = crate::group::GroupError::CoordinatorNotAvailable.code(),
        }
    }
    listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    ListGroupsResponse::default()
        .with_error_code(error_code)
        .with_groups(
            listed
                .into_iter()
                .map(|g| {
                    let mut out = ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(&g.group_id)))
                        .with_protocol_type(str_bytes(&g.protocol_type));
                    if version >= 4 {
                        out = out.with_group_state(str_bytes(g.state.as_str()));
                    }
                    if version >= 5 {
                        out = out.with_group_type(str_bytes("classic"));
                    }
                    out
                })
                .collect(),
        )
}
