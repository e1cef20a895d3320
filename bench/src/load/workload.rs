//! The load generators: producer tasks (flat out or open loop at a target rate) and consumer
//! tasks, spread over one glommio executor per core. Hot loops reuse one payload buffer per
//! producer and allocate nothing per record.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use super::stats::{Progress, new_histogram};
use super::verify::{self, BitSet, ReceiveCheck};
use crate::client::producer::AckCallback;
use crate::client::{
    BatchAck, ClientConfig, ClientError, Cluster, Consumer, ConsumerConfig, Producer,
    ProducerConfig, Result, StartOffset,
};

/// What record values look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Content {
    /// Random bytes (incompressible).
    Random,
    /// Text-like bytes (compress about 3-5x).
    Compressible,
}

/// How records are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Keys {
    /// No key (sticky partitioning).
    None,
    /// Uniform over `--key-space` keys.
    Uniform,
    /// Every record has the same key (one hot partition).
    Hot,
}

/// A producer workload.
#[derive(Debug, Clone)]
pub struct ProduceSpec {
    /// Bootstrap list.
    pub bootstrap: String,
    /// Topic.
    pub topic: String,
    /// Total records (over all producers), if bounded by count.
    pub messages: Option<u64>,
    /// Run time, if bounded by time.
    pub duration: Option<Duration>,
    /// Value size range in bytes (inclusive).
    pub size_min: usize,
    /// Upper bound of value size.
    pub size_max: usize,
    /// Value content.
    pub content: Content,
    /// Key distribution.
    pub keys: Keys,
    /// Distinct keys for `Keys::Uniform`.
    pub key_space: u64,
    /// Number of producers (each with its own connections).
    pub producers: usize,
    /// Executors (threads) to spread producers over.
    pub executors: usize,
    /// Total target rate in records/s (open loop), or flat out.
    pub rate: Option<f64>,
    /// Producer settings.
    pub producer: ProducerConfig,
    /// Max requests in flight per connection.
    pub max_in_flight: usize,
    /// Write e2e headers (producer, seq, send time) and track acknowledged sequences.
    pub e2e: bool,
}

/// What one executor's producers measured.
#[derive(Debug)]
pub struct ProduceResult {
    /// Ack latency in µs (not filled in e2e mode).
    pub hist: Histogram<u64>,
    /// Request latency in µs per record: written to acknowledged (not filled in e2e mode).
    pub request_hist: Histogram<u64>,
    /// Acknowledged records after warm-up.
    pub records: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Failed records.
    pub errors: u64,
    /// First error.
    pub first_error: Option<String>,
    /// Acknowledged sequences per producer id (e2e only).
    pub acked: Vec<(u32, BitSet)>,
    /// When the first producer was connected and about to send its first record. Throughput
    /// is measured from here (or from the end of warm-up, if later): client setup is not the
    /// broker's rate, and Kafka's perf tools leave it out too.
    pub ready_at: Option<Instant>,
}

impl ProduceResult {
    fn new() -> Self {
        Self {
            hist: new_histogram(),
            request_hist: new_histogram(),
            records: 0,
            bytes: 0,
            errors: 0,
            first_error: None,
            acked: Vec::new(),
            ready_at: None,
        }
    }

    /// Merges another executor's result.
    pub fn merge(&mut self, o: ProduceResult) {
        let _ = self.hist.add(&o.hist);
        let _ = self.request_hist.add(&o.request_hist);
        self.records += o.records;
        self.bytes += o.bytes;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.acked.extend(o.acked);
        self.ready_at = min_opt(self.ready_at, o.ready_at);
    }
}

/// Timing shared by all tasks of one run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Zero of all `*_ns` timestamps (payload send times, tags).
    pub epoch: Instant,
    /// Acks/receipts before this are warm-up and not measured.
    pub measure_from: Instant,
}

impl Clock {
    /// Nanoseconds since the epoch.
    pub fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// A small fast PRNG (xorshift64*), so picking sizes and keys costs no allocation or locking.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is remapped).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Extra bytes past the largest value so each record can start at a different offset (keeps
/// identical-looking records from compressing against each other).
const FILLER_SLACK_BYTES: usize = 64 * 1024;

/// The bytes record values are cut from.
pub fn filler(content: Content, size_max: usize, seed: u64) -> Vec<u8> {
    let n = size_max + FILLER_SLACK_BYTES;
    let mut rng = Rng::new(seed);
    let mut v = Vec::with_capacity(n);
    match content {
        Content::Random => {
            while v.len() < n {
                v.extend_from_slice(&rng.next_u64().to_le_bytes());
            }
        }
        Content::Compressible => {
            const WORDS: [&str; 16] = [
                "order",
                "id",
                "user",
                "amount",
                "currency",
                "EUR",
                "status",
                "shipped",
                "created",
                "2026-11-21",
                "region",
                "eu-west",
                "items",
                "sku",
                "qty",
                "price",
            ];
            while v.len() < n {
                let w = WORDS[rng.below(WORDS.len() as u64) as usize];
                v.extend_from_slice(w.as_bytes());
                v.push(if rng.below(4) == 0 { b',' } else { b' ' });
                if rng.below(3) == 0 {
                    v.extend_from_slice(format!("{}", rng.below(1000)).as_bytes());
                    v.push(b' ');
                }
            }
        }
    }
    v.truncate(n);
    v
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes `prefix` + decimal `n` into `buf`, returning the used slice (no allocation).
fn format_key(buf: &mut [u8; 32], n: u64) -> &[u8] {
    const PREFIX: &[u8] = b"key-";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut x = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (x % 10) as u8;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    let d = &digits[i..];
    buf[PREFIX.len()..PREFIX.len() + d.len()].copy_from_slice(d);
    &buf[..PREFIX.len() + d.len()]
}

/// Runs the producers of `spec` on `spec.executors` threads; blocks until all are done.
pub fn run_producers(
    spec: &ProduceSpec,
    progress: &Arc<Progress>,
    clock: Clock,
) -> Result<ProduceResult> {
    let executors = spec.executors.clamp(1, spec.producers.max(1));
    let mut handles = Vec::new();
    for e in 0..executors {
        let ids: Vec<u32> = (0..spec.producers as u32)
            .filter(|p| *p as usize % executors == e)
            .collect();
        let (spec, progress) = (spec.clone(), progress.clone());
        let h = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("bench-prod-{e}"))
            .spawn(move || async move { executor_producers(spec, progress, clock, ids).await })
            .map_err(|e| ClientError::Invalid(format!("starting executor: {e}")))?;
        handles.push(h);
    }
    let mut total = ProduceResult::new();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => total.merge(r),
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(e) => {
                first_err =
                    first_err.or(Some(ClientError::Invalid(format!("executor failed: {e}"))))
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

async fn executor_producers(
    spec: ProduceSpec,
    progress: Arc<Progress>,
    clock: Clock,
    ids: Vec<u32>,
) -> Result<ProduceResult> {
    let result = Rc::new(RefCell::new(ProduceResult::new()));
    let spec = Rc::new(spec);
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let (spec, progress, result) = (spec.clone(), progress.clone(), result.clone());
            glommio::spawn_local(
                async move { producer_task(&spec, progress, clock, id, result).await },
            )
        })
        .collect();
    let mut first_err = None;
    for t in tasks {
        if let Err(e) = t.await {
            first_err = first_err.or(Some(e));
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    // Every task checked that all its records were reported before it returned, so the result
    // is complete. It is taken out rather than unwrapped: the ack callback (and its clone of
    // `result`) lives in the producer's background tasks, which are cancelled by `close` but
    // dropped only when the executor next polls them.
    Ok(std::mem::replace(
        &mut *result.borrow_mut(),
        ProduceResult::new(),
    ))
}

/// Flat out, one clock reading serves this many consecutive records (unless the producer waited
/// or sealed a batch in between), so a send time is early by at most 7 appends. The whole tool
/// costs 0.07 µs (100 B values) to 0.3 µs (1 KB) of CPU per record, so that is about 2 µs at worst.
const CLOCK_REUSE_RECORDS: u32 = 8;

async fn producer_task(
    spec: &ProduceSpec,
    progress: Arc<Progress>,
    clock: Clock,
    id: u32,
    result: Rc<RefCell<ProduceResult>>,
) -> Result<()> {
    let mut ccfg = ClientConfig::new(&spec.bootstrap);
    ccfg.conn.max_in_flight = spec.max_in_flight;
    ccfg.conn.client_id = format!("gregor-bench-{id}");
    let cluster = Cluster::connect(ccfg).await?;
    let acked = Rc::new(RefCell::new(BitSet::default()));
    // Records reported (acknowledged or failed), to check that none is missing at the end.
    let reported = Rc::new(Cell::new(0u64));
    let on_ack: AckCallback = {
        let (result, progress, acked) = (result.clone(), progress.clone(), acked.clone());
        let reported = reported.clone();
        let e2e = spec.e2e;
        Rc::new(move |b: &BatchAck<'_>| {
            let n = b.record_count as u64;
            reported.set(reported.get() + n);
            let mut r = result.borrow_mut();
            if let Some(e) = b.error {
                progress.errors.fetch_add(n, Ordering::Relaxed);
                r.errors += n;
                if r.first_error.is_none() {
                    r.first_error = Some(e.to_string());
                }
                return;
            }
            progress.records.fetch_add(n, Ordering::Relaxed);
            progress.bytes.fetch_add(b.payload_bytes, Ordering::Relaxed);
            if e2e {
                let mut a = acked.borrow_mut();
                for seq in b.tags {
                    a.set(*seq);
                }
            }
            let now = Instant::now();
            if now < clock.measure_from {
                return;
            }
            r.records += n;
            r.bytes += b.payload_bytes;
            if !e2e {
                let now_ns = clock.ns(now);
                let max_us = record_latencies(&mut r.hist, now_ns, b.tags);
                progress.latency_max_us.fetch_max(max_us, Ordering::Relaxed);
                if let Some(written) = b.written_at {
                    let us = now.saturating_duration_since(written).as_micros() as u64;
                    r.request_hist.saturating_record_n(us, n);
                }
            }
        })
    };
    let producer = Producer::new(cluster, &spec.topic, spec.producer.clone(), on_ack).await?;

    let n_prod = spec.producers.max(1) as u64;
    let my_messages = spec
        .messages
        .map(|m| m / n_prod + u64::from((id as u64) < m % n_prod));
    let interval_ns = spec.rate.map(|r| 1e9 / (r / n_prod as f64).max(1e-9));
    let mut rng = Rng::new(0xC0FFEE + id as u64);
    let mut buf = filler(
        spec.content,
        spec.size_max.max(verify::HEADER_BYTES),
        42 + id as u64,
    );
    let mut key_buf = [0u8; 32];
    let start = Instant::now();
    {
        let mut r = result.borrow_mut();
        r.ready_at = min_opt(r.ready_at, Some(start));
    }
    // Record timestamps (ms since the Unix epoch) follow the monotonic clock from one wall
    // reading, so a record costs no second clock read.
    let start_wall_ms = wall_ms();
    let deadline = spec.duration.map(|d| start + d);
    let size_span = (spec.size_max - spec.size_min) as u64 + 1;
    let mut seq: u64 = 0;
    // Flat out: the last clock reading and how many more records may reuse it.
    let mut now_cached = start;
    let mut reuse_left: u32 = 0;
    let mut pacer = interval_ns.map(|iv| Pacer::new(start, iv));
    loop {
        if my_messages.is_some_and(|m| seq >= m) {
            break;
        }
        if interval_ns.is_none() && reuse_left == 0 {
            now_cached = Instant::now();
            reuse_left = CLOCK_REUSE_RECORDS;
        }
        let scheduled = match &mut pacer {
            Some(pacer) => {
                let (t, wait) = pacer.next(seq, Instant::now);
                // At a target rate the count matches rate x duration: nothing scheduled at or
                // past the deadline is sent (nor anything once the clock passed it, for a
                // producer that fell behind).
                if deadline.is_some_and(|d| t >= d || pacer.last_read() >= d) {
                    break;
                }
                if let Some(wait) = wait {
                    glommio::timer::sleep(wait).await;
                }
                t
            }
            None => {
                // Flat out, the deadline is checked every 64 records.
                if seq.is_multiple_of(64)
                    && deadline.is_some_and(|d| now_cached.max(Instant::now()) >= d)
                {
                    break;
                }
                reuse_left -= 1;
                now_cached
            }
        };
        let size = spec.size_min + rng.below(size_span) as usize;
        let off = rng.below(FILLER_SLACK_BYTES as u64) as usize;
        let value = &mut buf[off..off + size];
        let tag = if spec.e2e {
            verify::write_header(value, id, seq, clock.ns(scheduled));
            seq
        } else {
            clock.ns(scheduled)
        };
        let key: Option<&[u8]> = match spec.keys {
            Keys::None => None,
            Keys::Hot => Some(b"hot-key"),
            Keys::Uniform => Some(format_key(&mut key_buf, rng.below(spec.key_space))),
        };
        let timestamp_ms =
            start_wall_ms + scheduled.saturating_duration_since(start).as_millis() as i64;
        let sealed_before = producer.batches_sealed();
        let waited = {
            let mut send =
                std::pin::pin!(producer.send(None, key, Some(value), &[], timestamp_ms, tag));
            let mut polls = 0u32;
            std::future::poll_fn(|cx| {
                polls += 1;
                send.as_mut().poll(cx)
            })
            .await?;
            polls > 1
        };
        // Time passed (a wait for buffer space, or sealing a batch): the next record reads the
        // clock again.
        if waited || producer.batches_sealed() != sealed_before {
            reuse_left = 0;
        }
        seq += 1;
    }
    producer.close().await?;
    // `close` returns once every batch was acknowledged or failed; check that each record was
    // reported, so the totals taken after the tasks end are complete.
    if reported.get() != seq {
        return Err(ClientError::Invalid(format!(
            "producer {id}: {} of {seq} records reported",
            reported.get()
        )));
    }
    if spec.e2e {
        let a = std::mem::take(&mut *acked.borrow_mut());
        result.borrow_mut().acked.push((id, a));
    }
    Ok(())
}

/// Open-loop pacing that reads the clock about once per timer tick instead of once per record.
/// Record `seq` is due at `start + seq x interval`; one more than `PACER_SLACK` ahead of the
/// clock is slept for, anything else goes out at once and keeps its scheduled time (open loop).
/// A record due no later than the last reading plus the slack is due now too, whatever the
/// clock says now (the clock only moves on), so it needs no reading of its own: about one
/// reading per 9 records where the old loop read twice per record (see the test).
struct Pacer {
    start: Instant,
    interval_ns: f64,
    /// The last clock reading (or a time the clock is known to have passed).
    now: Instant,
    /// Records sent on `now` since it was read.
    reused: u32,
}

/// Less than this ahead of schedule, a record is sent rather than slept for: below it the timer
/// is no more precise than sending early.
const PACER_SLACK: Duration = Duration::from_micros(200);
/// A producer behind schedule sends every record at once without needing the clock; it still
/// reads it every this many records, so a deadline is seen.
const PACER_READ_EVERY_RECORDS: u32 = 64;

impl Pacer {
    fn new(start: Instant, interval_ns: f64) -> Pacer {
        Pacer {
            start,
            interval_ns,
            now: start,
            reused: 0,
        }
    }

    /// Record `seq`'s scheduled time, and how long to sleep before sending it (None: now).
    fn next(
        &mut self,
        seq: u64,
        mut clock: impl FnMut() -> Instant,
    ) -> (Instant, Option<Duration>) {
        let t = self.start + Duration::from_nanos((self.interval_ns * seq as f64) as u64);
        if t <= self.now + PACER_SLACK && self.reused < PACER_READ_EVERY_RECORDS {
            self.reused += 1;
            return (t, None);
        }
        let now = clock().max(self.now);
        self.reused = 0;
        if t > now + PACER_SLACK {
            // The sleep ends at `t` or later.
            self.now = t;
            return (t, Some(t - now));
        }
        self.now = now;
        (t, None)
    }

    /// The latest time the clock is known to have reached.
    fn last_read(&self) -> Instant {
        self.now
    }
}

/// Records the latency (µs) of each record acknowledged at `now_ns`, sent at `sent_ns`, and
/// returns the largest. Records sent flat out share clock readings (`CLOCK_REUSE_RECORDS`),
/// so equal latencies come in runs: one histogram update per run, not per record.
fn record_latencies(hist: &mut Histogram<u64>, now_ns: u64, sent_ns: &[u64]) -> u64 {
    let mut max_us = 0;
    let mut run: Option<(u64, u64)> = None; // (latency µs, records)
    for sent in sent_ns {
        let latency_us = now_ns.saturating_sub(*sent) / 1000;
        match &mut run {
            Some((us, count)) if *us == latency_us => *count += 1,
            _ => {
                if let Some((us, count)) = run.replace((latency_us, 1)) {
                    hist.saturating_record_n(us, count);
                }
            }
        }
        max_us = max_us.max(latency_us);
    }
    if let Some((us, count)) = run {
        hist.saturating_record_n(us, count);
    }
    max_us
}

/// A consumer workload.
#[derive(Debug, Clone)]
pub struct ConsumeSpec {
    /// Bootstrap list.
    pub bootstrap: String,
    /// Topic.
    pub topic: String,
    /// Partitions to read (split over consumers).
    pub partitions: Vec<i32>,
    /// Number of consumers (each on its own executor, own connections).
    pub consumers: usize,
    /// Where to start.
    pub start: StartOffset,
    /// Exact start offsets per partition (overrides `start`).
    pub explicit_offsets: Option<std::collections::BTreeMap<i32, i64>>,
    /// Stop after this many records in total.
    pub messages: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop when nothing arrived for this long (and producers, if any, are done).
    pub idle_timeout: Duration,
    /// Fetch settings.
    pub fetch: ConsumerConfig,
    /// Parse e2e headers: latency from send time, and verification.
    pub e2e: bool,
    /// e2e: stop once this many records (acked by producers so far) were received and the
    /// producers are done.
    pub producers_done: Option<Arc<Progress>>,
}

/// What the consumers measured.
#[derive(Debug)]
pub struct ConsumeResult {
    /// e2e latency in µs (send to receive).
    pub hist: Histogram<u64>,
    /// Records received after warm-up.
    pub records: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// All records received.
    pub records_total: u64,
    /// Verification state (e2e).
    pub check: ReceiveCheck,
    /// When the first consumer had its partitions assigned and was about to fetch (see
    /// [`ProduceResult::ready_at`]).
    pub ready_at: Option<Instant>,
    /// When the first and last record arrived.
    pub first_at: Option<Instant>,
    /// Last record arrival.
    pub last_at: Option<Instant>,
}

/// Runs the consumers; blocks until done.
pub fn run_consumers(
    spec: &ConsumeSpec,
    progress: &Arc<Progress>,
    clock: Clock,
) -> Result<ConsumeResult> {
    let n = spec.consumers.clamp(1, spec.partitions.len().max(1));
    let mut handles = Vec::new();
    for c in 0..n {
        let parts: Vec<i32> = spec
            .partitions
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| i % n == c)
            .map(|(_, p)| p)
            .collect();
        let (spec, progress) = (spec.clone(), progress.clone());
        let h = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("bench-cons-{c}"))
            .spawn(move || async move { consumer_task(spec, progress, clock, parts).await })
            .map_err(|e| ClientError::Invalid(format!("starting executor: {e}")))?;
        handles.push(h);
    }
    let mut total: Option<ConsumeResult> = None;
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => {
                total = Some(match total {
                    None => r,
                    Some(mut t) => {
                        let _ = t.hist.add(&r.hist);
                        t.records += r.records;
                        t.bytes += r.bytes;
                        t.records_total += r.records_total;
                        merge_check(&mut t.check, r.check);
                        t.ready_at = min_opt(t.ready_at, r.ready_at);
                        t.first_at = min_opt(t.first_at, r.first_at);
                        t.last_at = t.last_at.max(r.last_at);
                        t
                    }
                })
            }
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(e) => {
                first_err =
                    first_err.or(Some(ClientError::Invalid(format!("executor failed: {e}"))))
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    total.ok_or_else(|| ClientError::Invalid("no consumer ran".into()))
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Consumers own disjoint partitions, so their checks combine by adding counts (a producer's
/// sequences are split across partitions, hence across consumers, without overlap).
fn merge_check(into: &mut ReceiveCheck, other: ReceiveCheck) {
    into.absorb(other);
}

async fn consumer_task(
    spec: ConsumeSpec,
    progress: Arc<Progress>,
    clock: Clock,
    partitions: Vec<i32>,
) -> Result<ConsumeResult> {
    let cluster = Cluster::connect(ClientConfig::new(&spec.bootstrap)).await?;
    let mut consumer = Consumer::new(cluster, &spec.topic, spec.fetch.clone());
    match &spec.explicit_offsets {
        Some(offsets) => {
            for p in &partitions {
                let o = offsets.get(p).copied().unwrap_or(0);
                consumer.assign(&[*p], StartOffset::Offset(o)).await?;
            }
        }
        None => consumer.assign(&partitions, spec.start).await?,
    }
    progress.ready.fetch_add(1, Ordering::Release);
    let mut r = ConsumeResult {
        hist: new_histogram(),
        records: 0,
        bytes: 0,
        records_total: 0,
        check: ReceiveCheck::default(),
        ready_at: None,
        first_at: None,
        last_at: None,
    };
    let start = Instant::now();
    r.ready_at = Some(start);
    let deadline = spec.duration.map(|d| start + d);
    let mut last_progress = Instant::now();
    loop {
        let total = progress.records.load(Ordering::Relaxed);
        if spec.messages.is_some_and(|m| total >= m) {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if let Some(p) = &spec.producers_done {
            // e2e: done when producers finished and everything they got acked has arrived.
            if p.done.load(Ordering::Acquire) && total >= p.records.load(Ordering::Relaxed) {
                break;
            }
        }
        let producers_running = spec
            .producers_done
            .as_ref()
            .is_some_and(|p| !p.done.load(Ordering::Acquire));
        if !producers_running && last_progress.elapsed() >= spec.idle_timeout {
            break;
        }
        let fetched = consumer.poll().await?;
        let now = Instant::now();
        let measuring = now >= clock.measure_from;
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut round_max_us = 0u64;
        for f in &fetched {
            // Latency up to the response's arrival, not to the end of this round's parsing.
            let received_ns = clock.ns(f.received_at);
            for b in &f.batches {
                if b.is_control {
                    continue;
                }
                for rec in b.records() {
                    let rec = rec?;
                    if rec.offset < f.skip_below {
                        continue;
                    }
                    n += 1;
                    let v = rec.value.unwrap_or(b"");
                    bytes += (v.len() + rec.key.map_or(0, |k| k.len())) as u64;
                    if spec.e2e
                        && let Some((producer, seq, sent_ns)) = verify::read_header(v)
                    {
                        r.check.on_record(f.partition, rec.offset, producer, seq);
                        if measuring {
                            let latency_us = received_ns.saturating_sub(sent_ns) / 1000;
                            r.hist.saturating_record(latency_us);
                            round_max_us = round_max_us.max(latency_us);
                        }
                    }
                }
            }
        }
        progress
            .latency_max_us
            .fetch_max(round_max_us, Ordering::Relaxed);
        if n > 0 {
            last_progress = now;
            r.first_at.get_or_insert(now);
            r.last_at = Some(now);
            r.records_total += n;
            progress.records.fetch_add(n, Ordering::Relaxed);
            progress.bytes.fetch_add(bytes, Ordering::Relaxed);
            if measuring {
                r.records += n;
                r.bytes += bytes;
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pacer decides as a clock read for every record would (sleep exactly when a record is
    /// more than the slack ahead of the clock), with far fewer reads.
    #[test]
    fn pacer_matches_a_reading_per_record_with_fewer_reads() {
        let start = Instant::now();
        // 100,000 records/s (10 µs apart); the sender takes 2 µs per record, or 25 µs (behind).
        for cost_ns in [2_000u64, 25_000] {
            let mut pacer = Pacer::new(start, 10_000.0);
            let mut clock_ns = 0u64;
            let mut reads = 0;
            for seq in 0..10_000u64 {
                let now_ns = clock_ns;
                let (t, wait) = pacer.next(seq, || {
                    reads += 1;
                    start + Duration::from_nanos(now_ns)
                });
                let t_ns = (t - start).as_nanos() as u64;
                assert_eq!(t_ns, seq * 10_000);
                let ahead_ns = t_ns.saturating_sub(now_ns);
                match wait {
                    Some(w) => {
                        // Sleeps only when more than the slack ahead of the true clock, and
                        // never past the scheduled time.
                        assert!(ahead_ns > PACER_SLACK.as_nanos() as u64, "seq {seq}");
                        assert!(w.as_nanos() as u64 <= ahead_ns, "seq {seq}");
                        clock_ns = t_ns;
                    }
                    None => assert!(ahead_ns <= PACER_SLACK.as_nanos() as u64, "seq {seq}"),
                }
                clock_ns += cost_ns;
                // The reading the deadline check uses is never ahead of the true clock.
                assert!(pacer.last_read() <= start + Duration::from_nanos(clock_ns));
            }
            // A reading per record would be 10,000 (the old loop read twice per record).
            assert!(
                reads <= 10_000 / 8,
                "{reads} clock reads at {cost_ns} ns per record"
            );
        }
    }

    #[test]
    fn latencies_recorded_in_runs_match_one_by_one() {
        let now_ns = 50_000_000;
        // Runs of equal send times (shared clock readings), single ones, a send "after" now.
        let sent_ns: Vec<u64> = [10_000_000u64; 8]
            .into_iter()
            .chain([10_000_000, 10_001_999, 10_002_000, 10_002_000])
            .chain([49_000_000; 3])
            .chain([60_000_000, 10_000_000])
            .collect();
        let mut runs = new_histogram();
        let max_us = record_latencies(&mut runs, now_ns, &sent_ns);
        let mut one_by_one = new_histogram();
        for s in &sent_ns {
            one_by_one.saturating_record(now_ns.saturating_sub(*s) / 1000);
        }
        assert_eq!(max_us, 40_000);
        assert_eq!(runs.len(), sent_ns.len() as u64);
        assert_eq!(runs.len(), one_by_one.len());
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(
                runs.value_at_quantile(q),
                one_by_one.value_at_quantile(q),
                "q {q}"
            );
        }
        assert_eq!(runs.min(), 0, "a send time after `now` counts as 0");
        let mut empty = new_histogram();
        assert_eq!(record_latencies(&mut empty, now_ns, &[]), 0);
        assert_eq!(empty.len(), 0);
    }
}
