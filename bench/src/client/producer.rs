//! A batching producer for one topic. Records are appended into a per-partition
//! [`BatchBuilder`]; a batch is sealed when full or after `linger`, then queued for the
//! partition's leader. With a zero `linger` (as Kafka's `linger.ms=0`) a batch is sent as soon
//! as its leader's sender can take it: it grows only while the sender waits for a free
//! in-flight slot, so batches grow with the load instead of waiting to fill. One sender task
//! per leader packs ready batches (at most one per partition)
//! into a Produce request and pipelines up to `max_in_flight` of them on its connection; an
//! acker task per leader reads the responses in order and reports each batch through the
//! `on_ack` callback. Buffered bytes are bounded by `max_buffer_bytes` (senders wait).
//!
//! Only batches the broker acknowledged without error are reported with `error: None`; with
//! acks=0 nothing is acknowledged, so batches are reported once written to the socket.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::sync::Semaphore;
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::cluster::{Cluster, with_timeout};
use super::conn::{Connection, ResponseFuture};
use super::error::{ClientError, Result};
use super::partitioner::Partitioner;
use super::produce_body;
use super::records::{BatchBuilder, Compression, HeaderRef};

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// 0, 1 or -1 (all).
    pub acks: i16,
    /// Seal a partition's batch at this many bytes.
    pub batch_bytes: usize,
    /// Seal a non-full batch after this long; zero sends it as soon as the sender is free.
    pub linger: Duration,
    /// Codec for batches.
    pub compression: Compression,
    /// Bound on bytes appended but not yet acknowledged.
    pub max_buffer_bytes: usize,
    /// Bound on the size of one Produce request.
    pub max_request_bytes: usize,
    /// Broker-side timeout for acks.
    pub request_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: -1,
            batch_bytes: 16 * 1024,
            linger: Duration::from_millis(5),
            compression: Compression::None,
            max_buffer_bytes: 32 << 20,
            max_request_bytes: 1 << 20,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The outcome of one batch.
#[derive(Debug)]
pub struct BatchAck<'a> {
    /// Partition.
    pub partition: i32,
    /// Offset of the first record, -1 when unknown (acks=0).
    pub base_offset: i64,
    /// Records in the batch.
    pub record_count: i32,
    /// Uncompressed bytes of the batch.
    pub batch_bytes: usize,
    /// Sum of key and value lengths of the records (what throughput in MB/s counts).
    pub payload_bytes: u64,
    /// The `tag` given to [`Producer::send`] for each record, in order.
    pub tags: &'a [u64],
    /// `None` if the broker stored the batch.
    pub error: Option<&'a ClientError>,
    /// When the request carrying the batch was written to the connection (`None` if it never
    /// was): the time from here to the report is the broker's and the network's share of the
    /// latency, without the wait to fill or send the batch.
    pub written_at: Option<Instant>,
}

/// Callback receiving each batch outcome.
pub type AckCallback = Rc<dyn Fn(&BatchAck<'_>)>;

struct ReadyBatch {
    partition: i32,
    data: Bytes,
    record_count: i32,
    batch_bytes: usize,
    tags: Vec<u64>,
    payload_bytes: u64,
    /// Units of `Producer::buffer` held by the records of this batch.
    buffer_units: u64,
    written_at: Option<Instant>,
}

struct PartitionState {
    builder: BatchBuilder,
    tags: Vec<u64>,
    opened_at: Option<Instant>,
    leader: i32,
    buffer_units: u64,
    payload_bytes: u64,
}

/// The way to one leader's sender task.
struct LeaderQueue {
    tx: LocalSender<ReadyBatch>,
    /// The sender waits for a batch (nothing sealed is queued and no request is being
    /// written), so with a zero linger the next record's batch is sealed for it at once.
    idle: Rc<Cell<bool>>,
}

struct InFlight {
    response: Option<ResponseFuture<ProduceRequest>>,
    batches: Vec<ReadyBatch>,
}

/// A producer bound to one topic, living on one executor.
pub struct Producer {
    cluster: Rc<Cluster>,
    topic: String,
    cfg: ProducerConfig,
    partitions: RefCell<Vec<PartitionState>>,
    partitioner: RefCell<Partitioner>,
    /// One queue (and sender/acker task pair) per leader node.
    queues: RefCell<HashMap<i32, LeaderQueue>>,
    refreshing: Cell<bool>,
    buffer: Rc<Semaphore>,
    on_ack: AckCallback,
    closed: Cell<bool>,
    tasks: RefCell<Vec<glommio::task::JoinHandle<()>>>,
    batches_sealed: Cell<u64>,
}

impl Producer {
    /// Looks up the topic (auto-creating it if the broker does so) and starts one sender per
    /// partition leader.
    pub async fn new(
        cluster: Rc<Cluster>,
        topic: &str,
        cfg: ProducerConfig,
        on_ack: AckCallback,
    ) -> Result<Rc<Producer>> {
        let meta = cluster.topic_metadata(topic, true).await?;
        if meta.partitions.is_empty() {
            return Err(ClientError::kafka(format!("topic {topic}"), 3, None));
        }
        let mut partitions = Vec::with_capacity(meta.partitions.len());
        for (i, p) in meta.partitions.iter().enumerate() {
            if p.partition != i as i32 {
                return Err(ClientError::Protocol(format!(
                    "topic {topic}: partition {i} missing"
                )));
            }
            if p.leader < 0 {
                return Err(ClientError::kafka(
                    format!("partition {topic}-{i}"),
                    5,
                    None,
                ));
            }
            partitions.push(PartitionState {
                builder: BatchBuilder::new(cfg.compression, cfg.batch_bytes + 1024),
                tags: Vec::new(),
                opened_at: None,
                leader: p.leader,
                buffer_units: 0,
                payload_bytes: 0,
            });
        }
        let leaders: std::collections::BTreeSet<i32> = partitions
            .iter()
            .map(|p: &PartitionState| p.leader)
            .collect();
        let producer = Rc::new(Producer {
            cluster: cluster.clone(),
            topic: topic.to_string(),
            buffer: Rc::new(Semaphore::new(cfg.max_buffer_bytes as u64)),
            cfg,
            partitions: RefCell::new(partitions),
            partitioner: RefCell::new(Partitioner::new()),
            queues: RefCell::new(HashMap::new()),
            refreshing: Cell::new(false),
            on_ack,
            closed: Cell::new(false),
            tasks: RefCell::new(Vec::new()),
            batches_sealed: Cell::new(0),
        });
        for leader in leaders {
            producer.start_leader(leader).await?;
        }
        if !producer.cfg.linger.is_zero() {
            let t = glommio::spawn_local(linger_loop(Rc::downgrade(&producer))).detach();
            producer.tasks.borrow_mut().push(t);
        }
        Ok(producer)
    }

    /// Connects to `leader` and starts its sender and acker tasks, unless already running.
    async fn start_leader(self: &Rc<Self>, leader: i32) -> Result<()> {
        if self.queues.borrow().contains_key(&leader) {
            return Ok(());
        }
        let conn = self.cluster.node(leader).await?;
        if self.queues.borrow().contains_key(&leader) {
            return Ok(()); // started by someone else while we connected
        }
        let (tx, rx) = local_channel::new_unbounded();
        let idle = Rc::new(Cell::new(false));
        self.queues.borrow_mut().insert(
            leader,
            LeaderQueue {
                tx,
                idle: idle.clone(),
            },
        );
        let (inflight_tx, inflight_rx) = local_channel::new_bounded(64);
        let sender = sender_loop(self.clone(), leader, conn, rx, inflight_tx, idle);
        let t1 = glommio::spawn_local(sender).detach();
        let t2 = glommio::spawn_local(acker_loop(self.clone(), inflight_rx)).detach();
        self.tasks.borrow_mut().extend([t1, t2]);
        Ok(())
    }

    /// After a "not leader" style error: re-read Metadata and route later batches to the new
    /// leaders. Batches that already failed are reported, not retried (a retry without
    /// idempotence could duplicate or reorder records).
    fn request_refresh(self: &Rc<Self>) {
        if self.refreshing.replace(true) || self.closed.get() {
            return;
        }
        let me = self.clone();
        let t = glommio::spawn_local(async move {
            if let Ok(meta) = me.cluster.topic_metadata(&me.topic, false).await {
                for p in &meta.partitions {
                    let current = me.partitions.borrow().get(p.partition as usize).map(|s| s.leader);
                    if p.leader < 0 || current.is_none_or(|c| c == p.leader) {
                        continue;
                    }
                    if me.start_leader(p.leader).await.is_ok()
                        && let Some(st) = me.partitions.borrow_mut().get_mut(p.partition as usize)
                    {
                        tracing::info!(topic = %me.topic, partition = p.partition, leader = p.leader, "partition leader moved");
                        st.leader = p.leader;
                    }
                }
            }
            me.refreshing.set(false);
        })
        .detach();
        self.tasks.borrow_mut().push(t);
    }

    /// The cluster this producer sends to.
    pub fn cluster(&self) -> &Rc<Cluster> {
        &self.cluster
    }

    /// Number of partitions of the topic.
    pub fn partition_count(&self) -> i32 {
        self.partitions.borrow().len() as i32
    }

    /// Appends one record. `partition` None picks one (murmur2 of the key, or sticky); `tag` is
    /// handed back in the [`BatchAck`] (the bench uses it for the send time). Waits while the
    /// buffer is full.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
        timestamp_ms: i64,
        tag: u64,
    ) -> Result<i32> {
        if self.closed.get() {
            return Err(ClientError::Closed("producer".into()));
        }
        let size = BatchBuilder::record_size(key, value, headers);
        let n = self.partition_count();
        let sticky = partition.is_none() && key.is_none();
        let partition = match partition {
            Some(p) if (0..n).contains(&p) => p,
            Some(p) => {
                return Err(ClientError::kafka(
                    format!("partition {}-{p}", self.topic),
                    3,
                    None,
                ));
            }
            None => self.partitioner.borrow().partition(key, n),
        };
        // Bytes are released when the batch is acknowledged or fails.
        let units = size.min(self.cfg.max_buffer_bytes) as u64;
        self.buffer
            .acquire(units)
            .await
            .map_err(|_| ClientError::Closed("producer".into()))?;
        let mut partition = partition;
        if sticky {
            // As Kafka's sticky partitioner (KIP-480): when this record would overflow the
            // sticky partition's batch, the batch is sealed and the sticky partition moves on
            // before the record is placed. Placing it first would leave a one-record batch
            // behind that waits out `linger` (5 ms on every batch, measured as latency).
            let full = self.overflows(&self.partitions.borrow()[partition as usize], size);
            if full {
                let batch = seal(
                    partition,
                    &mut self.partitions.borrow_mut()[partition as usize],
                )?;
                self.enqueue(batch);
                partition = self.partitioner.borrow().partition(None, n);
            }
        }
        let mut sealed = Vec::new();
        {
            let mut parts = self.partitions.borrow_mut();
            let st = &mut parts[partition as usize];
            if self.overflows(st, size) {
                sealed.push(seal(partition, st)?);
            }
            if st.builder.is_empty() {
                st.opened_at = Some(Instant::now());
            }
            st.builder.append(timestamp_ms, key, value, headers);
            st.tags.push(tag);
            st.buffer_units += units;
            st.payload_bytes += (key.map_or(0, |k| k.len()) + value.map_or(0, |v| v.len())) as u64;
            if st.builder.size_bytes() >= self.cfg.batch_bytes
                || (self.cfg.linger.is_zero() && self.take_idle_sender(st.leader))
            {
                sealed.push(seal(partition, st)?);
            }
        }
        for b in sealed {
            self.enqueue(b);
        }
        Ok(partition)
    }

    /// Whether `leader`'s sender waits for a batch; if so it is marked busy, as the caller is
    /// about to hand it one (later records then gather until the sender comes back for them).
    fn take_idle_sender(&self, leader: i32) -> bool {
        self.queues
            .borrow()
            .get(&leader)
            .is_some_and(|q| q.idle.replace(false))
    }

    /// Seals the open batches of `leader`'s partitions (a zero linger: the sender is free).
    fn seal_open_of(&self, leader: i32) -> Result<()> {
        let mut sealed = Vec::new();
        {
            let mut parts = self.partitions.borrow_mut();
            for (i, st) in parts.iter_mut().enumerate() {
                if st.leader == leader && !st.builder.is_empty() {
                    sealed.push(seal(i as i32, st)?);
                }
            }
        }
        for b in sealed {
            self.enqueue(b);
        }
        Ok(())
    }

    /// Whether a record of `size` bytes would overflow the partition's open batch.
    fn overflows(&self, st: &PartitionState, size: usize) -> bool {
        !st.builder.is_empty() && st.builder.size_bytes() + size > self.cfg.batch_bytes
    }

    /// Batches sealed so far. A caller that reuses one clock reading for several records can
    /// tell from a change that a `send` did more than append (sealing copies and checksums).
    pub fn batches_sealed(&self) -> u64 {
        self.batches_sealed.get()
    }

    fn enqueue(&self, batch: ReadyBatch) {
        self.batches_sealed.set(self.batches_sealed.get() + 1);
        if key_is_sticky_partition(
            &self.partitioner.borrow(),
            batch.partition,
            self.partition_count(),
        ) {
            self.partitioner.borrow_mut().on_batch_sealed();
        }
        let leader = self.partitions.borrow()[batch.partition as usize].leader;
        let queues = self.queues.borrow();
        let Some(q) = queues.get(&leader) else {
            return;
        };
        // Fails only after `close` stopped the sender task; hand the bytes back and report.
        if let Err(glommio::GlommioError::Closed(glommio::ResourceType::Channel(b))) =
            q.tx.try_send(batch)
        {
            {
                let err = ClientError::Closed("producer".into());
                self.report(&b, -1, Some(&err));
                self.buffer.signal(b.buffer_units);
            }
        }
    }

    /// Seals every non-empty batch older than `age` (all of them for `Duration::ZERO`).
    fn seal_older_than(&self, age: Duration) -> Result<()> {
        let now = Instant::now();
        let mut sealed = Vec::new();
        {
            let mut parts = self.partitions.borrow_mut();
            for (i, st) in parts.iter_mut().enumerate() {
                let old = st
                    .opened_at
                    .map(|t| now.duration_since(t) >= age)
                    .unwrap_or(false);
                if !st.builder.is_empty() && old {
                    sealed.push(seal(i as i32, st)?);
                }
            }
        }
        for b in sealed {
            self.enqueue(b);
        }
        Ok(())
    }

    /// Sends everything buffered and waits until every batch is acknowledged or failed.
    pub async fn flush(&self) -> Result<()> {
        self.seal_older_than(Duration::ZERO)?;
        let all = self.cfg.max_buffer_bytes as u64;
        self.buffer
            .acquire(all)
            .await
            .map_err(|_| ClientError::Closed("producer".into()))?;
        self.buffer.signal(all);
        Ok(())
    }

    /// Flushes, then stops the background tasks.
    pub async fn close(&self) -> Result<()> {
        let r = self.flush().await;
        self.closed.set(true);
        for t in self.tasks.borrow_mut().drain(..) {
            t.cancel();
        }
        r
    }

    fn report(&self, b: &ReadyBatch, base_offset: i64, error: Option<&ClientError>) {
        (self.on_ack)(&BatchAck {
            partition: b.partition,
            base_offset,
            record_count: b.record_count,
            batch_bytes: b.batch_bytes,
            payload_bytes: b.payload_bytes,
            tags: &b.tags,
            error,
            written_at: b.written_at,
        });
    }
}

fn key_is_sticky_partition(p: &Partitioner, partition: i32, n: i32) -> bool {
    p.partition(None, n) == partition
}

fn seal(partition: i32, st: &mut PartitionState) -> Result<ReadyBatch> {
    let record_count = st.builder.record_count();
    let batch_bytes = st.builder.size_bytes();
    let data = st.builder.seal()?;
    st.opened_at = None;
    Ok(ReadyBatch {
        partition,
        data,
        record_count,
        batch_bytes,
        tags: std::mem::take(&mut st.tags),
        buffer_units: std::mem::take(&mut st.buffer_units),
        payload_bytes: std::mem::take(&mut st.payload_bytes),
        written_at: None,
    })
}

async fn linger_loop(producer: std::rc::Weak<Producer>) {
    loop {
        let tick = match producer.upgrade() {
            Some(p) if !p.closed.get() => {
                let _ = p.seal_older_than(p.cfg.linger);
                (p.cfg.linger / 2).max(Duration::from_micros(500))
            }
            _ => return,
        };
        glommio::timer::sleep(tick).await;
    }
}

async fn sender_loop(
    producer: Rc<Producer>,
    leader: i32,
    mut conn: Rc<Connection>,
    rx: LocalReceiver<ReadyBatch>,
    inflight: LocalSender<InFlight>,
    idle: Rc<Cell<bool>>,
) {
    let mut deferred: Vec<ReadyBatch> = Vec::new();
    let linger_zero = producer.cfg.linger.is_zero();
    loop {
        if linger_zero {
            // What gathered while the last request was written or waited for a slot.
            let _ = producer.seal_open_of(leader);
        }
        // Gather: deferred first, then whatever is queued, one batch per partition.
        let mut batches: Vec<ReadyBatch> = Vec::new();
        let mut bytes = 0usize;
        let mut next_deferred = Vec::new();
        for b in deferred.drain(..) {
            if batches.iter().any(|x| x.partition == b.partition)
                || (bytes > 0 && bytes + b.data.len() > producer.cfg.max_request_bytes)
            {
                next_deferred.push(b);
            } else {
                bytes += b.data.len();
                batches.push(b);
            }
        }
        deferred = next_deferred;
        if batches.is_empty() {
            let next = match futures_lite::future::poll_once(rx.recv()).await {
                Some(next) => next,
                None => {
                    idle.set(true);
                    let next = rx.recv().await;
                    idle.set(false);
                    next
                }
            };
            match next {
                Some(b) => {
                    bytes += b.data.len();
                    batches.push(b);
                }
                None => return,
            }
        }
        while bytes < producer.cfg.max_request_bytes {
            match futures_lite::future::poll_once(rx.recv()).await {
                Some(Some(b)) => {
                    if batches.iter().any(|x| x.partition == b.partition)
                        || bytes + b.data.len() > producer.cfg.max_request_bytes
                    {
                        deferred.push(b);
                        break;
                    }
                    bytes += b.data.len();
                    batches.push(b);
                }
                _ => break,
            }
        }
        if conn.is_failed() {
            // Reconnect (the cluster replaces a failed connection); on failure the batches of
            // this round fail below on the dead connection and are reported.
            if let Ok(c) = producer.cluster.node(leader).await {
                conn = c;
            }
        }
        // The batches are written from where they are, not copied into the request frame.
        let body = conn.version_of::<ProduceRequest>().and_then(|v| {
            let parts: Vec<(i32, Bytes)> = batches
                .iter()
                .map(|b| (b.partition, b.data.clone()))
                .collect();
            let timeout_ms = producer
                .cfg
                .request_timeout
                .as_millis()
                .min(i32::MAX as u128) as i32;
            produce_body::encode(v, producer.cfg.acks, timeout_ms, &producer.topic, &parts)
                .map(|pieces| (v, pieces))
                .ok_or_else(|| ClientError::Protocol(format!("cannot encode Produce v{v}")))
        });
        let sent = match &body {
            Ok((v, pieces)) if producer.cfg.acks == 0 => conn
                .send_encoded_no_response::<ProduceRequest>(pieces, *v)
                .await
                .map(|_| None),
            Ok((v, pieces)) => conn.send_encoded(pieces, *v).await.map(Some),
            Err(e) => Err(ClientError::Protocol(e.to_string())),
        };
        match sent {
            Ok(response) => {
                let written_at = Some(Instant::now());
                for b in &mut batches {
                    b.written_at = written_at;
                }
                if inflight.send(InFlight { response, batches }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                for b in &batches {
                    producer.report(b, -1, Some(&e));
                    producer.buffer.signal(b.buffer_units);
                }
            }
        }
    }
}

async fn acker_loop(producer: Rc<Producer>, rx: LocalReceiver<InFlight>) {
    while let Some(f) = rx.recv().await {
        match f.response {
            None => {
                for b in &f.batches {
                    producer.report(b, -1, None);
                }
            }
            Some(resp) => {
                let timeout = producer.cfg.request_timeout + Duration::from_secs(5);
                match with_timeout(timeout, "Produce", resp.wait()).await {
                    Ok(r) => ack_response(&producer, &r, &f.batches),
                    Err(e) => {
                        if matches!(e, ClientError::Closed(_) | ClientError::Io { .. }) {
                            producer.request_refresh();
                        }
                        for b in &f.batches {
                            producer.report(b, -1, Some(&e));
                        }
                    }
                }
            }
        }
        for b in &f.batches {
            producer.buffer.signal(b.buffer_units);
        }
    }
}

/// Error codes after which the partition's leader should be looked up again.
fn is_stale_leader(code: i16) -> bool {
    // UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER,
    // NETWORK_EXCEPTION, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH
    matches!(code, 3 | 5 | 6 | 13 | 74 | 76)
}

fn ack_response(producer: &Rc<Producer>, r: &ProduceResponse, batches: &[ReadyBatch]) {
    for b in batches {
        let pr = r
            .responses
            .iter()
            .filter(|t| t.name.0.as_str() == producer.topic)
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == b.partition);
        match pr {
            None => {
                let e = ClientError::Protocol(format!(
                    "Produce response lacks partition {}",
                    b.partition
                ));
                producer.report(b, -1, Some(&e));
            }
            Some(p) if p.error_code != 0 => {
                if is_stale_leader(p.error_code) {
                    producer.request_refresh();
                }
                let e = ClientError::kafka(
                    format!("produce to {}-{}", producer.topic, b.partition),
                    p.error_code,
                    p.error_message.as_ref().map(|m| m.to_string()),
                );
                producer.report(b, p.base_offset, Some(&e));
            }
            Some(p) => producer.report(b, p.base_offset, None),
        }
    }
}
