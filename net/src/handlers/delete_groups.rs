//! DeleteGroups (key 42), v0-v2: removes empty groups and their committed offsets.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, RequestHeader};

use crate::cores::CoreContext;
use crate::group::GroupError;
use crate::group::rpc::{GroupReply, GroupRequest, call_owner};

/// Most groups one request may delete (a bound on a hostile request).
const GROUPS_MAX: usize = 1_000;

/// Answers DeleteGroups.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    _header: &RequestHeader,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for g in request.groups_names.into_iter().take(GROUPS_MAX) {
        let group_id = g.0.to_string();
        let reply = call_owner(
            ctx,
            &group_id,
            GroupRequest::Delete {
                group_id: group_id.clone(),
            },
        )
        .await;
        let code = match reply {
            Ok(GroupReply::Delete(Ok(()))) => 0,
            Ok(GroupReply::Delete(Err(e))) | Err(e) => e.code(),
            Ok(_) => GroupError::UnknownServerError.code(),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
