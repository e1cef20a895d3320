//! Runs a [`CoreRequest`] on the core that owns the state it touches. Both local calls and
//! requests arriving over the mesh end up here, so there is one code path per operation.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
        CoreRequest::WaitForData {
            parts,
            reads,
            max_bytes,
            timeout_ms,
        } => {
            partition_ops::wait_for_data(&ctx, &parts, timeout_ms).await;
            CoreReply::Fetch(partition_ops::fetch(&ctx, reads, max_bytes).await)
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
/// up to `produce.pipeline.depth` for Produce). `counts` counts them, over all cores.
///
/// A wait for data ends as soon as its caller stops listening (the fetch was answered by
/// another core's data, or its connection closed): left to run, it would hold its task and
/// its place on the partitions' notifiers until `max_wait_ms`, and a client that fetches in
/// a loop with a long wait would pile up one per fetch. Every other request runs to the end
/// whether or not its answer is still wanted (an append is never abandoned half done).
pub async fn serve_peer(
    ctx: Rc<CoreContext>,
    receiver: ConnectedReceiver<Envelope>,
    counts: Arc<PeerRequestCounts>,
) {
    while let Some(envelope) = receiver.recv().await {
        let ctx = ctx.clone();
        counts.served.fetch_add(1, Ordering::Relaxed);
        let working = InProgress::start(&counts);
        glommio::spawn_local(async move {
            let Envelope { request, mut reply } = envelope;
            let abandon_when_unwanted = matches!(request, CoreRequest::WaitForData { .. });
            let served = serve(ctx, request);
            let answer = if abandon_when_unwanted {
                let unwanted = async {
                    reply.cancellation().await;
                    None
                };
                futures_lite::future::or(async { Some(served.await) }, unwanted).await
            } else {
                Some(served.await)
            };
            drop(working);
            // The caller may have given up (e.g. a fetch that already answered): ignore.
            if let Some(answer) = answer {
                let _ = reply.send(answer);
            }
        })
        .detach();
    }
}

/// Requests cores sent each other, over all cores.
#[derive(Debug, Default)]
pub struct PeerRequestCounts {
    /// Being worked on now.
    in_progress: AtomicUsize,
    /// Received since start.
    served: AtomicU64,
}

impl PeerRequestCounts {
    /// Requests being worked on now.
    pub fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::Relaxed)
    }

    /// Requests received since start.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

/// One request counted in progress until dropped.
struct InProgress(Arc<PeerRequestCounts>);

impl InProgress {
    fn start(counts: &Arc<PeerRequestCounts>) -> Self {
        counts.in_progress.fetch_add(1, Ordering::Relaxed);
        InProgress(counts.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}
