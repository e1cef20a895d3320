//! Runs a [`CoreRequest`] on the core that owns the state it touches. Both local calls and
//! requests arriving over the mesh end up here, so there is one code path per operation.

use std::rc::Rc;

use glommio::channels::shared_channel::ConnectedReceiver;

use crate::cores::{CoreContext, CoreReply, CoreRequest, Envelope};
use crate::{admin, partition_ops};

/// Executes `request` on this core.
pub async fn serve(ctx: Rc<CoreContext>, request: CoreRequest) -> CoreReply {
    match request {
        CoreRequest::Produce { parts, acks } => {
            CoreReply::Produce(partition_ops::produce(&ctx, parts, acks).await)
        }
        CoreRequest::Fetch { parts, max_bytes } => {
            CoreReply::Fetch(partition_ops::fetch(&ctx, parts, max_bytes).await)
        }
        CoreRequest::WaitForData { parts, timeout_ms } => {
            partition_ops::wait_for_data(&ctx, &parts, timeout_ms).await;
            CoreReply::WaitForData
        }
        CoreRequest::ListOffsets { parts } => {
            CoreReply::ListOffsets(partition_ops::list_offsets(&ctx, parts).await)
        }
        CoreRequest::DeleteRecords { parts } => {
            CoreReply::DeleteRecords(partition_ops::delete_records(&ctx, parts).await)
        }
        CoreRequest::Admin(op) => CoreReply::Admin(admin::execute(&ctx, op).await),
        CoreRequest::Group(request) => {
            CoreReply::Group(crate::group::service::serve(&ctx, request).await)
        }
        CoreRequest::Apply(change) => {
            admin::apply_change(&ctx, &change).await;
            CoreReply::Applied
        }
        CoreRequest::Adopt { socket, peer, slot } => {
            crate::connection::adopt(&ctx, socket, peer, slot);
            CoreReply::Adopted
        }
    }
}

/// Serves requests from one peer core until that peer closes its sender. Each request runs
/// in its own task, so a long-polling fetch does not hold up the requests behind it; the
/// number of such tasks is bounded by the peers' connections (one request in flight each,
/// up to `produce.pipeline.depth` for Produce).
pub async fn serve_peer(ctx: Rc<CoreContext>, receiver: ConnectedReceiver<Envelope>) {
    while let Some(envelope) = receiver.recv().await {
        let ctx = ctx.clone();
        glommio::spawn_local(async move {
            let reply = serve(ctx, envelope.request).await;
            // The caller may have given up (e.g. a fetch that already answered): ignore.
            let _ = envelope.reply.send(reply);
        })
        .detach();
    }
}
