//! Runs a [`GroupRequest`] on the group's owner core. Both local calls and requests from
//! other cores arrive here (through [`crate::service::serve`]).

use std::rc::Rc;

use super::rpc::{GroupReply, GroupRequest};
use super::runtime::now_ms;
use super::state::{GroupError, JoinResponse, SyncResponse};
use crate::cores::CoreContext;

/// Executes `request` on this core (which must own the group).
pub async fn serve(ctx: &Rc<CoreContext>, request: GroupRequest) -> GroupReply {
    let rt = &ctx.groups;
    match request {
        GroupRequest::Join { group_id, request } => {
            let member_id = request.member_id.clone();
            if let Err(e) = rt.ensure_loaded(ctx, &group_id).await {
                return GroupReply::Join(JoinResponse::error(e, &member_id));
            }
            let reply = rt.with(|c| c.join(&group_id, request, now_ms()));
            let response = reply
                .wait(|| JoinResponse::error(GroupError::CoordinatorNotAvailable, &member_id))
                .await;
            GroupReply::Join(response)
        }
        GroupRequest::Sync { group_id, request } => {
            if let Err(e) = rt.ensure_loaded(ctx, &group_id).await {
                return GroupReply::Sync(SyncResponse::error(e));
            }
            let reply = rt.with(|c| c.sync(&group_id, request, now_ms()));
            let response = reply
                .wait(|| SyncResponse::error(GroupError::CoordinatorNotAvailable))
                .await;
            GroupReply::Sync(response)
        }
        GroupRequest::Heartbeat {
            group_id,
            member_id,
            group_instance_id,
            generation_id,
        } => {
            if let Err(e) = rt.ensure_loaded(ctx, &group_id).await {
                return GroupReply::Heartbeat(Err(e));
            }
            GroupReply::Heartbeat(rt.with(|c| {
                c.heartbeat(
                    &group_id,
                    &member_id,
                    group_instance_id.as_deref(),
                    generation_id,
                    now_ms(),
                )
            }))
        }
        GroupRequest::Leave { group_id, members } => {
            if let Err(e) = rt.ensure_loaded(ctx, &group_id).await {
                return GroupReply::Leave(Err(e));
            }
            GroupReply::Leave(Ok(rt.with(|c| c.leave(&group_id, &members, now_ms()))))
        }
        GroupRequest::Commit(request) => {
            if let Err(e) = rt.ensure_loaded(ctx, &request.group_id).await {
                return GroupReply::Commit(Err(e));
            }
            let outcome = rt.with(|c| c.commit_offsets(request, now_ms()));
            let (results, ticket) = match outcome {
                Ok(o) => o,
                Err(e) => return GroupReply::Commit(Err(e)),
            };
            // Acknowledge only once the commit is on disk.
            if let Some(ticket) = ticket {
                match ticket.await {
                    Ok(Ok(())) => {}
                    _ => return GroupReply::Commit(Err(GroupError::CoordinatorNotAvailable)),
                }
            }
            GroupReply::Commit(Ok(results))
        }
        GroupRequest::FetchOffsets {
            group_id,
            partitions,
        } => {
            if let Err(e) = rt.ensure_loaded(ctx, &group_id).await {
                return GroupReply::FetchOffsets(Err(e));
            }
            GroupReply::FetchOffsets(Ok(
                rt.with(|c| c.fetch_offsets(&group_id, partitions.as_deref()))
            ))
        }
        GroupRequest::List { states, types } => {
            GroupReply::List(Ok(rt.with(|c| c.list_groups(&states, &types))))
        }
        GroupRequest::Describe { group_id } => {
            if let Err(e) = rt.ensure_loaded(ctx, &group_id).await {
                return GroupReply::Describe(Err(e));
            }
            GroupReply::Describe(Ok(rt.with(|c| c.describe_group(&group_id))))
        }
        GroupRequest::Delete { group_id } => {
            if let Err(e) = rt.ensure_loaded(ctx, &group_id).await {
                return GroupReply::Delete(Err(e));
            }
            let ticket = match rt.with(|c| c.delete_group(&group_id, now_ms())) {
                Ok(t) => t,
                Err(e) => return GroupReply::Delete(Err(e)),
            };
            match ticket.await {
                Ok(Ok(())) => GroupReply::Delete(Ok(())),
                _ => GroupReply::Delete(Err(GroupError::CoordinatorNotAvailable)),
            }
        }
        GroupRequest::DeleteOffsets {
            group_id,
            partitions,
        } => {
            if let Err(e) = rt.ensure_loaded(ctx, &group_id).await {
                return GroupReply::DeleteOffsets(Err(e));
            }
            let (results, ticket) = match rt.with(|c| c.delete_offsets(&group_id, &partitions)) {
                Ok(o) => o,
                Err(e) => return GroupReply::DeleteOffsets(Err(e)),
            };
            match ticket.await {
                Ok(Ok(())) => GroupReply::DeleteOffsets(Ok(results)),
                _ => GroupReply::DeleteOffsets(Err(GroupError::CoordinatorNotAvailable)),
            }
        }
    }
}
