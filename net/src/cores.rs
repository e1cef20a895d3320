//! Thread-per-core plumbing: which core owns what, the per-core context, and the typed
//! messages cores exchange over glommio's channel mesh.
//!
//! Ownership rules:
//! - a partition belongs to core `partition_owner(topic, partition)` for its whole life;
//! - topic metadata belongs to core 0 ([`METADATA_CORE`]); other cores hold read-only copies;
//! - (future) a consumer group belongs to core `group_owner(group_id)`.
//!
//! A request that touches state of another core becomes a [`CoreRequest`] sent over the mesh;
//! the owner runs it ([`crate::service::serve`]) and answers on a one-shot channel. A call to
//! the current core runs the same code directly, without a channel hop.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use glommio::channels::channel_mesh::Senders;

use crate::config::BrokerConfig;
use crate::metadata::{MetadataChange, MetadataImage};
use crate::notify::LocalNotify;
use crate::registry::PartitionRegistry;

/// The core that owns topic metadata and serialises its changes.
pub const METADATA_CORE: usize = 0;

/// Capacity of each core-to-core channel; senders wait when it is full (backpressure).
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// FNV-1a, 64 bit: stable across processes and versions (unlike std's `DefaultHasher`), so
/// a partition stays on the same core across restarts with the same core count.
pub fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// The core owning `topic`/`partition`.
pub fn partition_owner(topic: &str, partition: i32, cores: usize) -> usize {
    let h = fnv1a(topic.as_bytes(), FNV_OFFSET_BASIS);
    let h = fnv1a(&[0], h);
    let h = fnv1a(&partition.to_be_bytes(), h);
    (h % cores.max(1) as u64) as usize
}

/// The core owning a consumer group (for the group coordinator).
pub fn group_owner(group_id: &str, cores: usize) -> usize {
    (fnv1a(group_id.as_bytes(), FNV_OFFSET_BASIS) % cores.max(1) as u64) as usize
}

/// One partition's records in a Produce.
#[derive(Debug)]
pub struct ProducePart {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Record batches as sent by the client.
    pub records: Option<Bytes>,
}

/// Outcome of one [`ProducePart`].
#[derive(Clone, Debug, Default)]
pub struct ProducePartResult {
    /// Kafka error code (0 = none).
    pub error_code: i16,
    /// Offset of the first record, or -1.
    pub base_offset: i64,
    /// LogAppendTime timestamp or -1.
    pub log_append_time_ms: i64,
    /// Log start offset, or -1.
    pub log_start_offset: i64,
    /// Optional message.
    pub error_message: Option<String>,
}

impl ProducePartResult {
    /// A failed part.
    pub fn error(code: i16) -> Self {
        Self {
            error_code: code,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            error_message: None,
        }
    }
}

/// One partition to read in a Fetch.
#[derive(Clone, Debug)]
pub struct FetchPart {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset wanted.
    pub fetch_offset: i64,
    /// Byte limit for this partition.
    pub partition_max_bytes: usize,
}

/// Outcome of one [`FetchPart`].
#[derive(Clone, Debug, Default)]
pub struct FetchPartResult {
    /// Kafka error code.
    pub error_code: i16,
    /// High watermark, or -1.
    pub high_watermark: i64,
    /// Log start offset, or -1.
    pub log_start_offset: i64,
    /// Whole batches, in memory or as a segment file range (sent with `sendfile`).
    pub records: gregor_engine::SendData,
    /// The partition's published offsets (see `published.rs`), when its owner read it.
    pub published: Option<std::sync::Arc<crate::published::PublishedOffsets>>,
}

impl FetchPartResult {
    /// A failed part.
    pub fn error(code: i16) -> Self {
        Self {
            error_code: code,
            high_watermark: -1,
            log_start_offset: -1,
            records: gregor_engine::SendData::default(),
            published: None,
        }
    }
}

/// A partition a long-polling fetch waits on: wake when its end offset passes `offset`.
#[derive(Clone, Debug)]
pub struct WaitPart {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Wake once the log end offset is greater than this.
    pub offset: i64,
}

/// ListOffsets query for one partition.
#[derive(Clone, Debug)]
pub struct OffsetQuery {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Timestamp, or -1 latest, -2 earliest, -3 max timestamp.
    pub timestamp: i64,
}

/// ListOffsets answer for one partition.
#[derive(Clone, Debug, Default)]
pub struct OffsetResult {
    /// Kafka error code.
    pub error_code: i16,
    /// Timestamp of the found record, or -1.
    pub timestamp: i64,
    /// Found offset, or -1.
    pub offset: i64,
}

/// DeleteRecords for one partition.
#[derive(Clone, Debug)]
pub struct DeleteRecordsPart {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Delete everything before this offset (-1: up to the high watermark).
    pub offset: i64,
}

/// DeleteRecords answer for one partition.
#[derive(Clone, Debug, Default)]
pub struct DeleteRecordsResult {
    /// Kafka error code.
    pub error_code: i16,
    /// New log start offset, or -1.
    pub low_watermark: i64,
}

/// Topic admin operations; only [`METADATA_CORE`] runs them.
#[derive(Debug)]
pub enum AdminRequest {
    /// CreateTopics.
    CreateTopics {
        /// Topics to create.
        topics: Vec<crate::admin::NewTopic>,
        /// Only validate.
        validate_only: bool,
    },
    /// DeleteTopics, by name.
    DeleteTopics {
        /// Names.
        names: Vec<String>,
    },
    /// CreatePartitions.
    CreatePartitions {
        /// (topic, new total count).
        topics: Vec<(String, i32)>,
        /// Only validate.
        validate_only: bool,
    },
    /// IncrementalAlterConfigs on topics.
    AlterConfigs {
        /// Per topic, the operations.
        resources: Vec<(String, Vec<crate::admin::ConfigOp>)>,
        /// Only validate.
        validate_only: bool,
    },
}

/// Per-item admin outcome, in request order.
#[derive(Clone, Debug, Default)]
pub struct AdminResult {
    /// Kafka error code.
    pub error_code: i16,
    /// Message for the client.
    pub error_message: Option<String>,
}

/// Work one core asks another to do.
#[derive(Debug)]
pub enum CoreRequest {
    /// Append to owned partitions; `acks == -1` also flushes them.
    Produce {
        /// Parts, in request order.
        parts: Vec<ProducePart>,
        /// Produce acks.
        acks: i16,
    },
    /// Read owned partitions (no waiting).
    Fetch {
        /// Parts, in request order.
        parts: Vec<FetchPart>,
        /// Byte budget across these parts.
        max_bytes: usize,
    },
    /// Wait until one of the partitions has data past its offset (or the timeout, or a
    /// shutdown), then read `reads` as `Fetch` does and answer with [`CoreReply::Fetch`]:
    /// the data comes back with the wake-up, so the fetching core need not ask again.
    WaitForData {
        /// Partitions.
        parts: Vec<WaitPart>,
        /// What to read once woken, in request order.
        reads: Vec<FetchPart>,
        /// Byte budget across `reads`.
        max_bytes: usize,
        /// Give up after this long.
        timeout_ms: u64,
    },
    /// ListOffsets on owned partitions.
    ListOffsets {
        /// Queries, in request order.
        parts: Vec<OffsetQuery>,
    },
    /// DeleteRecords on owned partitions.
    DeleteRecords {
        /// Parts, in request order.
        parts: Vec<DeleteRecordsPart>,
    },
    /// A topic admin operation (to [`METADATA_CORE`] only).
    Admin(AdminRequest),
    /// Apply a metadata change (from [`METADATA_CORE`] to every other core, in order).
    Apply(MetadataChange),
    /// Consumer group work, for the group's owner core.
    Group(crate::group::rpc::GroupRequest),
    /// Serve a client connection another core served until now (see `balance.rs`).
    Adopt {
        /// The connected socket.
        socket: std::os::fd::OwnedFd,
        /// The client's address.
        peer: std::net::SocketAddr,
        /// Its place in the connection counts, already on this core.
        slot: crate::balance::ConnectionSlot,
    },
}

/// Answers to [`CoreRequest`]s, variant for variant.
#[derive(Debug)]
pub enum CoreReply {
    /// To `Produce`.
    Produce(Vec<ProducePartResult>),
    /// To `Fetch` and `WaitForData`.
    Fetch(Vec<FetchPartResult>),
    /// To `ListOffsets`.
    ListOffsets(Vec<OffsetResult>),
    /// To `DeleteRecords`.
    DeleteRecords(Vec<DeleteRecordsResult>),
    /// To `Admin`.
    Admin(Vec<AdminResult>),
    /// To `Apply`.
    Applied,
    /// To `Group`.
    Group(crate::group::rpc::GroupReply),
    /// To `Adopt`.
    Adopted,
}

/// A request in flight between cores.
pub struct Envelope {
    /// The work.
    pub request: CoreRequest,
    /// Where the answer goes.
    pub reply: futures_channel::oneshot::Sender<CoreReply>,
}

/// Failure to reach another core (it is shutting down or gone).
#[derive(Debug, thiserror::Error)]
#[error("core {core} unreachable")]
pub struct CoreUnreachable {
    /// The core.
    pub core: usize,
}

/// Everything one core owns. Lives in an `Rc` on that core's executor thread only.
pub struct CoreContext {
    /// This core's index (0-based).
    pub core_id: usize,
    /// Total cores.
    pub cores: usize,
    /// Broker configuration (immutable).
    pub config: Arc<BrokerConfig>,
    /// Senders to the other cores (`None` when there is only one).
    pub mesh: Option<Senders<Envelope>>,
    /// Read-only metadata snapshot, replaced on each change.
    metadata: RefCell<Rc<MetadataImage>>,
    /// Partitions owned here.
    pub registry: PartitionRegistry,
    /// Serialises admin operations on [`METADATA_CORE`].
    pub admin_lock: glommio::sync::Semaphore,
    /// Set when the broker stops accepting work.
    pub draining: Cell<bool>,
    /// Notified when draining starts.
    pub drain_signal: LocalNotify,
    /// Open connections on this core.
    pub open_connections: Cell<usize>,
    /// Data connections on every core, for placing each on the least loaded (`balance.rs`).
    pub connections: Arc<crate::balance::ConnectionCounts>,
    /// When any core last appended (whether cold reads may be read ahead, `disk_activity.rs`).
    pub appends: Arc<crate::disk_activity::AppendActivity>,
    /// Notified when a connection closes.
    pub connection_closed: LocalNotify,
    /// The consumer groups this core coordinates.
    pub groups: crate::group::runtime::GroupRuntime,
    /// Budget of request bytes buffered on this core (`queued.max.request.bytes`).
    pub request_bytes: glommio::sync::Semaphore,
    /// Reusable buffers for this core's large request bodies.
    pub request_pool: std::sync::Arc<crate::request_pool::RequestPool>,
    /// Memory this core's fetch responses may hold in data read from disk for them.
    pub cold_reads: crate::cold_budget::ColdReadBudget,
    /// Other cores' partitions' published offsets, as this core's fetches learned them.
    pub remote_offsets: crate::published::RemoteOffsets,
    /// Producer ids handed out by this core so far.
    producer_ids_issued: Cell<i64>,
    /// Wall-clock ms at start-up, the base of this run's producer ids.
    producer_id_base: i64,
}

impl CoreContext {
    /// A context for core `core_id` of `cores`.
    pub fn new(
        core_id: usize,
        cores: usize,
        config: Arc<BrokerConfig>,
        mesh: Option<Senders<Envelope>>,
        metadata: MetadataImage,
        connections: Arc<crate::balance::ConnectionCounts>,
        appends: Arc<crate::disk_activity::AppendActivity>,
    ) -> Self {
        let groups = crate::group::runtime::GroupRuntime::for_core(&config, &metadata);
        let registry = PartitionRegistry::new(
            config.tail_cache_bytes_per_core,
            config.fetch_read_ahead_bytes_per_core,
        );
        Self {
            groups,
            core_id,
            cores,
            request_bytes: glommio::sync::Semaphore::new(config.queued_max_request_bytes as u64),
            request_pool: crate::request_pool::RequestPool::new(),
            cold_reads: crate::cold_budget::ColdReadBudget::new(
                config.fetch_cold_read_bytes_per_core,
            ),
            remote_offsets: crate::published::RemoteOffsets::default(),
            config,
            mesh,
            metadata: RefCell::new(Rc::new(metadata)),
            registry,
            admin_lock: glommio::sync::Semaphore::new(1),
            draining: Cell::new(false),
            drain_signal: LocalNotify::new(),
            open_connections: Cell::new(0),
            connections,
            appends,
            connection_closed: LocalNotify::new(),
            producer_ids_issued: Cell::new(0),
            producer_id_base: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
                .saturating_mul(1_000),
        }
    }

    /// A producer id unique to this broker: start-up time in ms x 1000, plus a per-core
    /// sequence interleaved across cores. Ids only grow across restarts unless a run issues
    /// more than 1000 ids per millisecond of its predecessor's lifetime.
    pub fn next_producer_id(&self) -> i64 {
        let n = self.producer_ids_issued.get();
        self.producer_ids_issued.set(n + 1);
        self.producer_id_base + n * self.cores as i64 + self.core_id as i64
    }

    /// The current metadata snapshot.
    pub fn metadata(&self) -> Rc<MetadataImage> {
        self.metadata.borrow().clone()
    }

    /// Replaces the metadata snapshot.
    pub fn set_metadata(&self, image: MetadataImage) {
        *self.metadata.borrow_mut() = Rc::new(image);
    }

    /// The owner of a partition.
    pub fn owner_of(&self, topic: &str, partition: i32) -> usize {
        partition_owner(topic, partition, self.cores)
    }

    /// Hands `request` to `core` and returns where its answer will arrive, without waiting
    /// for it. On this core the request runs in a task of its own; elsewhere it goes over the
    /// mesh, whose peer runs each request in a task in arrival order. Either way, a request
    /// issued after this returns starts after this one on that core, so appends issued in
    /// order are queued on their logs in that order (pipelined Produce, `connection.rs`).
    pub async fn issue(
        self: &Rc<Self>,
        core: usize,
        request: CoreRequest,
    ) -> Result<futures_channel::oneshot::Receiver<CoreReply>, CoreUnreachable> {
        // futures-channel's oneshot, not flume: with flume 0.10 a reply sent from the peer
        // core was now and then lost (the receiver saw Disconnected after a successful send),
        // which turned appended batches into NOT_LEADER answers and client retries.
        let (tx, rx) = futures_channel::oneshot::channel();
        if core == self.core_id {
            let ctx = self.clone();
            glommio::spawn_local(async move {
                let reply = crate::service::serve(ctx, request).await;
                // The connection may be gone: its answer is then dropped, the work done.
                let _ = tx.send(reply);
            })
            .detach();
            return Ok(rx);
        }
        let mesh = self.mesh.as_ref().ok_or(CoreUnreachable { core })?;
        mesh.send_to(core, Envelope { request, reply: tx })
            .await
            .map_err(|e| {
                tracing::error!(core, error = ?e, "mesh send failed");
                CoreUnreachable { core }
            })?;
        Ok(rx)
    }

    /// Runs `request` on `core`: directly if it is this core, else over the mesh.
    pub async fn call(
        self: &Rc<Self>,
        core: usize,
        request: CoreRequest,
    ) -> Result<CoreReply, CoreUnreachable> {
        if core == self.core_id {
            // Boxed: `serve` can itself call other cores (admin broadcasts), a recursive future.
            return Ok(Box::pin(crate::service::serve(self.clone(), request)).await);
        }
        let rx = self.issue(core, request).await?;
        rx.await.map_err(|_| {
            tracing::error!(core, "core dropped a request without replying");
            CoreUnreachable { core }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_spread() {
        // Pinned values: changing the hash moves partitions between cores on upgrade.
        assert_eq!(fnv1a(b"", FNV_OFFSET_BASIS), FNV_OFFSET_BASIS);
        assert_eq!(fnv1a(b"a", FNV_OFFSET_BASIS), 0xaf63_dc4c_8601_ec8c);
        let mut counts = [0usize; 4];
        for p in 0..400 {
            counts[partition_owner("orders", p, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
        assert_eq!(partition_owner("t", 3, 1), 0);
        assert_eq!(
            partition_owner("t", 3, 7),
            partition_owner("t", 3, 7),
            "deterministic"
        );
    }
}
