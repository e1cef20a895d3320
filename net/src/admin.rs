//! Topic administration. [`execute`] runs only on [`METADATA_CORE`]: it validates, persists the
//! new metadata atomically, then hands the change to every core in order ([`apply_change`]),
//! each of which opens, deletes or reconfigures the partition logs it owns. The client's
//! answer is sent only after every core has applied the change, so a client that created a
//! topic can produce to it at once, on any connection.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use kafka_protocol::ResponseError;

use crate::cores::{AdminRequest, AdminResult, CoreContext, CoreRequest, METADATA_CORE};
use crate::log::PartitionLog;
use crate::metadata::{
    MetadataChange, MetadataImage, PARTITIONS_PER_TOPIC_MAX, TopicMeta, partition_dir,
    validate_topic_name,
};
use crate::registry::Partition;
use crate::topic_config::{self, TopicConfig};

/// A topic to create.
#[derive(Clone, Debug)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count, -1 for the broker default.
    pub partitions: i32,
    /// Replication factor, -1 for the default (1).
    pub replication_factor: i16,
    /// Manual assignment: replica broker ids per partition (empty: automatic).
    pub assignments: Vec<Vec<i32>>,
    /// Config overrides.
    pub configs: Vec<(String, Option<String>)>,
}

/// One IncrementalAlterConfigs operation.
#[derive(Clone, Debug)]
pub struct ConfigOp {
    /// Config name.
    pub name: String,
    /// 0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT.
    pub op: i8,
    /// Value (SET/APPEND/SUBTRACT).
    pub value: Option<String>,
}

fn ok() -> AdminResult {
    AdminResult::default()
}

fn fail(error: ResponseError, message: impl Into<String>) -> AdminResult {
    AdminResult {
        error_code: error.code(),
        error_message: Some(message.into()),
    }
}

/// Deleting `__consumer_offsets` or changing its partition count would silently move every
/// group to another partition (placement is hash(group) % partitions), losing their offsets,
/// so clients may not do either.
fn internal_topic_refused(name: &str) -> AdminResult {
    fail(
        ResponseError::InvalidRequest,
        format!("'{name}' is an internal topic: it cannot be deleted or repartitioned"),
    )
}

/// Runs an admin request (on [`METADATA_CORE`] only). Results are in request order.
pub async fn execute(ctx: &Rc<CoreContext>, request: AdminRequest) -> Vec<AdminResult> {
    if ctx.core_id != METADATA_CORE {
        // A routing bug, not a client error; answer instead of panicking.
        tracing::error!(
            core = ctx.core_id,
            "admin request reached a non-metadata core"
        );
        return vec![fail(ResponseError::NotController, "not the metadata core")];
    }
    // Held to the end of this function: admin operations run one at a time.
    let _permit = ctx.admin_lock.acquire_permit(1).await;
    match request {
        AdminRequest::CreateTopics {
            topics,
            validate_only,
        } => create_topics(ctx, topics, validate_only).await,
        AdminRequest::DeleteTopics { names } => {
            let mut results = Vec::with_capacity(names.len());
            for name in names {
                if name == crate::group::OFFSETS_TOPIC {
                    results.push(internal_topic_refused(&name));
                    continue;
                }
                if !ctx.metadata().topics.contains_key(&name) {
                    results.push(fail(
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    ));
                    continue;
                }
                results.push(commit(ctx, MetadataChange::DeleteTopic { name }).await);
            }
            results
        }
        AdminRequest::CreatePartitions {
            topics,
            validate_only,
        } => {
            let mut results = Vec::with_capacity(topics.len());
            for (name, count) in topics {
                if name == crate::group::OFFSETS_TOPIC {
                    results.push(internal_topic_refused(&name));
                    continue;
                }
                let Some(current) = ctx.metadata().topics.get(&name).map(|t| t.partitions) else {
                    results.push(fail(
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    ));
                    continue;
                };
                if count <= current {
                    results.push(fail(
                        ResponseError::InvalidPartitions,
                        format!("topic has {current} partitions; the count can only grow"),
                    ));
                } else if count > PARTITIONS_PER_TOPIC_MAX {
                    results.push(fail(
                        ResponseError::InvalidPartitions,
                        format!("at most {PARTITIONS_PER_TOPIC_MAX} partitions per topic"),
                    ));
                } else if validate_only {
                    results.push(ok());
                } else {
                    let change = MetadataChange::SetPartitions {
                        name,
                        partitions: count,
                    };
                    results.push(commit(ctx, change).await);
                }
            }
            results
        }
        AdminRequest::AlterConfigs {
            resources,
            validate_only,
        } => {
            let mut results = Vec::with_capacity(resources.len());
            for (name, ops) in resources {
                let Some(topic) = ctx.metadata().topics.get(&name).cloned() else {
                    results.push(fail(
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    ));
                    continue;
                };
                match alter(&topic.configs, &ops) {
                    Err(result) => results.push(result),
                    Ok(_) if validate_only => results.push(ok()),
                    Ok(configs) => results
                        .push(commit(ctx, MetadataChange::SetConfigs { name, configs }).await),
                }
            }
            results
        }
    }
}

fn alter(
    current: &BTreeMap<String, String>,
    ops: &[ConfigOp],
) -> Result<BTreeMap<String, String>, AdminResult> {
    let mut configs = current.clone();
    for op in ops {
        if !topic_config::is_known(&op.name) {
            return Err(fail(
                ResponseError::InvalidConfig,
                format!("unknown topic config '{}'", op.name),
            ));
        }
        match op.op {
            0 => {
                let value = op.value.clone().unwrap_or_default();
                topic_config::validate(&op.name, &value).map_err(|reason| {
                    fail(
                        ResponseError::InvalidConfig,
                        format!("invalid value '{value}' for '{}': {reason}", op.name),
                    )
                })?;
                configs.insert(op.name.clone(), value);
            }
            1 => {
                configs.remove(&op.name);
            }
            2 | 3 => {
                return Err(fail(
                    ResponseError::InvalidConfig,
                    format!("'{}' is not a list config", op.name),
                ));
            }
            other => {
                return Err(fail(
                    ResponseError::InvalidRequest,
                    format!("unknown config operation {other}"),
                ));
            }
        }
    }
    Ok(configs)
}

async fn create_topics(
    ctx: &Rc<CoreContext>,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<AdminResult> {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = topics
        .iter()
        .filter(|t| !seen.insert(t.name.clone()))
        .map(|t| t.name.clone())
        .collect();
    let mut results = Vec::with_capacity(topics.len());
    for topic in topics {
        if duplicates.contains(&topic.name) {
            results.push(fail(
                ResponseError::InvalidRequest,
                format!(
                    "topic '{}' appears more than once in the request",
                    topic.name
                ),
            ));
            continue;
        }
        let meta = match validate_new_topic(ctx, &topic) {
            Ok(meta) => meta,
            Err(result) => {
                results.push(result);
                continue;
            }
        };
        if validate_only {
            results.push(ok());
            continue;
        }
        let change = MetadataChange::CreateTopic {
            name: topic.name,
            meta,
        };
        results.push(commit(ctx, change).await);
    }
    results
}

fn validate_new_topic(ctx: &CoreContext, topic: &NewTopic) -> Result<TopicMeta, AdminResult> {
    validate_topic_name(&topic.name).map_err(|m| fail(ResponseError::InvalidTopicException, m))?;
    if ctx.metadata().topics.contains_key(&topic.name) {
        return Err(fail(
            ResponseError::TopicAlreadyExists,
            format!("topic '{}' already exists", topic.name),
        ));
    }
    let partitions = if !topic.assignments.is_empty() {
        if topic.partitions != -1 || topic.replication_factor != -1 {
            return Err(fail(
                ResponseError::InvalidRequest,
                "both assignments and partition count/replication factor were given",
            ));
        }
        for replicas in &topic.assignments {
            if replicas.as_slice() != [ctx.config.node_id] {
                return Err(fail(
                    ResponseError::InvalidReplicaAssignment,
                    format!("replicas must be exactly [{}]", ctx.config.node_id),
                ));
            }
        }
        topic.assignments.len() as i32
    } else if topic.partitions == -1 {
        ctx.config.num_partitions
    } else {
        topic.partitions
    };
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
        return Err(fail(
            ResponseError::InvalidPartitions,
            format!("partition count must be between 1 and {PARTITIONS_PER_TOPIC_MAX}"),
        ));
    }
    if topic.replication_factor != -1 && topic.replication_factor != 1 {
        return Err(fail(
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {} is larger than the 1 available broker",
                topic.replication_factor
            ),
        ));
    }
    let mut configs = BTreeMap::new();
    for (name, value) in &topic.configs {
        let Some(value) = value else {
            return Err(fail(
                ResponseError::InvalidConfig,
                format!("null value for config '{name}'"),
            ));
        };
        topic_config::validate(name, value).map_err(|reason| {
            fail(
                ResponseError::InvalidConfig,
                format!("invalid value '{value}' for '{name}': {reason}"),
            )
        })?;
        configs.insert(name.clone(), value.clone());
    }
    Ok(TopicMeta {
        id: loop {
            // Kafka reserves the zero UUID (and one with only the low bit) as sentinels.
            let id = rand::random::<u128>();
            if id > 1 {
                break id;
            }
        },
        partitions,
        configs,
    })
}

/// Persists `change`, then applies it on every core (others first, in core order, then this
/// one). Called with the admin lock held, so changes reach every core in the same order.
async fn commit(ctx: &Rc<CoreContext>, change: MetadataChange) -> AdminResult {
    let mut image: MetadataImage = (*ctx.metadata()).clone();
    image.apply(&change);
    let data_dir = ctx.config.data_dir.clone();
    // fsync + rename block; keep them off the executor thread.
    let saved = glommio::executor()
        .spawn_blocking(move || image.save(&data_dir))
        .await;
    if let Err(e) = saved {
        tracing::error!(error = %e, "cannot persist metadata");
        return fail(ResponseError::KafkaStorageError, e.to_string());
    }
    for core in 0..ctx.cores {
        if core == ctx.core_id {
            continue;
        }
        if let Err(e) = ctx.call(core, CoreRequest::Apply(change.clone())).await {
            tracing::error!(error = %e, "metadata change not applied on a core");
        }
    }
    apply_change(ctx, &change).await;
    tracing::info!(?change, "metadata changed");
    ok()
}

/// Applies a committed change on this core: the logs this core owns first for additions (so
/// a topic is never visible before its partitions can take writes), the snapshot first for
/// removals (so no new request reaches a log being deleted).
pub async fn apply_change(ctx: &Rc<CoreContext>, change: &MetadataChange) {
    let mut image: MetadataImage = (*ctx.metadata()).clone();
    image.apply(change);
    match change {
        MetadataChange::CreateTopic { name, meta } => {
            open_owned(ctx, name, meta, 0..meta.partitions, true).await;
            ctx.set_metadata(image);
        }
        MetadataChange::SetPartitions { name, partitions } => {
            let old = ctx
                .metadata()
                .topics
                .get(name)
                .map(|t| t.partitions)
                .unwrap_or(0);
            if let Some(meta) = image.topics.get(name).cloned() {
                open_owned(ctx, name, &meta, old..*partitions, true).await;
            }
            ctx.set_metadata(image);
        }
        MetadataChange::DeleteTopic { name } => {
            ctx.set_metadata(image);
            ctx.remote_offsets.forget_topic(name);
            for partition in ctx.registry.remove_topic(name) {
                partition.appended.notify_all();
                if let Err(code) = partition.log.delete().await {
                    tracing::error!(topic = %name, partition = partition.index, code, "cannot delete partition log");
                }
            }
            ctx.registry.rebalance_cache();
        }
        MetadataChange::SetConfigs { name, .. } => {
            if let Some(meta) = image.topics.get(name) {
                let config = TopicConfig::resolve(&meta.configs, &ctx.config.topic_defaults);
                for partition in ctx.registry.topic_partitions(name) {
                    partition.log.reconfigure(config.clone());
                }
            }
            ctx.set_metadata(image);
        }
    }
}

/// Opens the partitions in `range` of `topic` that this core owns. `fresh` partitions are
/// new: a directory left by an earlier topic of the same name (a crash between persisting a
/// deletion and removing its files) is removed first, so old records never resurface.
pub async fn open_owned(
    ctx: &Rc<CoreContext>,
    topic: &str,
    meta: &TopicMeta,
    range: std::ops::Range<i32>,
    fresh: bool,
) {
    let config = TopicConfig::resolve(&meta.configs, &ctx.config.topic_defaults);
    for index in range {
        if ctx.owner_of(topic, index) != ctx.core_id {
            continue;
        }
        let dir = partition_dir(&ctx.config.data_dir, topic, index);
        if fresh
            && dir.exists()
            && let Err(e) = gregor_engine::retire_dir(&dir)
        {
            tracing::error!(topic, partition = index, error = %e, "cannot remove stale partition directory");
            continue;
        }
        let tuning = crate::log::StorageTuning {
            cache_bytes: ctx.registry.cache_share_bytes(1),
            zeros_ahead: ctx.config.segment_zeros_ahead,
            allocate_ahead: ctx.config.segment_allocate_ahead,
            recycle_segments: ctx.config.segment_recycle,
            direct_cold_reads: ctx.config.fetch_cold_reads_direct,
            read_ahead_bytes: ctx.registry.read_ahead_share_bytes(1),
        };
        let opened = PartitionLog::open(
            &dir,
            meta.id,
            config.clone(),
            ctx.config.storage_backend,
            tuning,
        );
        match opened.await {
            Ok(log) => {
                ctx.registry.insert(Partition {
                    topic: topic.to_string(),
                    index,
                    log,
                    appended: crate::notify::LocalNotify::new(),
                });
            }
            Err(e) => {
                tracing::error!(topic, partition = index, error = %e, "cannot open partition log");
            }
        }
    }
    ctx.registry.rebalance_cache();
}

/// Opens every partition this core owns in the current snapshot (at start-up).
pub async fn open_all_owned(ctx: &Rc<CoreContext>) {
    let image = ctx.metadata();
    for (name, meta) in &image.topics {
        open_owned(ctx, name, meta, 0..meta.partitions, false).await;
    }
}

/// Closes every partition log this core owns (clean shutdown).
pub async fn close_all(ctx: &Rc<CoreContext>) {
    for partition in ctx.registry.all() {
        if let Err(code) = partition.log.close().await {
            tracing::warn!(topic = %partition.topic, partition = partition.index, code, "close failed");
        }
    }
}
