//! `gregor bench produce|consume|e2e|disk|suite`: load tools that speak plain Kafka protocol, so
//! the same command measures Gregor, Apache Kafka or Redpanda.
//!
//! Produce latency is measured from the time a record was *scheduled* to be sent (open loop with
//! `--rate`), so a stalled broker shows up as latency instead of silently slowing the load
//! (no coordinated omission). Only acknowledged records count as sent; failures are reported
//! and make the command exit non-zero.

/// `println!` that ignores a closed stdout (`gregor bench ... | head -1` must not panic).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

pub mod disk;
pub mod plot;
pub mod stats;
pub mod verify;
pub mod workload;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use crate::cli::{self, DEFAULT_BOOTSTRAP};
use crate::client::{
    ClientConfig, ClientError, Cluster, Compression, ConsumerConfig, ProducerConfig, Result,
    StartOffset, admin, block_on,
};
use stats::{LatencyMs, Progress, Summary, new_histogram};
use workload::{Clock, ConsumeSpec, Content, Keys, ProduceSpec};

/// `gregor bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Produce load: flat out, or open loop at --rate; ack latency and throughput.
    Produce(ProduceArgs),
    /// Consume load: read --messages records (producing them first if the topic has fewer).
    Consume(ConsumeArgs),
    /// Produce and consume at once: end-to-end latency; --verify checks loss, duplicates, order.
    E2e(E2eArgs),
    /// Raw sequential O_DIRECT write/read bandwidth of --data-dir.
    Disk(DiskArgs),
    /// The standard suite (disk, produce 1KB acks=1, produce 100B, acks=all, consume, e2e at a
    /// target rate) printed as one table; used by `make bench`.
    Suite(SuiteArgs),
}

/// Options every broker benchmark takes.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Broker to bootstrap from (host:port, comma-separated list allowed).
    #[arg(long, default_value = DEFAULT_BOOTSTRAP, env = "GREGOR_BOOTSTRAP")]
    pub bootstrap: String,
    /// Topic (created with --partitions if missing).
    #[arg(long, default_value = "gregor-bench")]
    pub topic: String,
    /// Partitions when creating the topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Replication factor when creating the topic.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    /// Print one JSON object on stdout instead of the text summary.
    #[arg(long)]
    pub json: bool,
    /// Draw throughput over time and the latency percentile curve into this SVG file.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Executors (threads) for the load generators (default: number of cores).
    #[arg(long)]
    pub executors: Option<usize>,
}

/// Options of the record load.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Records to send in total (default 100000 unless --duration-secs is given).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Run for this long instead of a count.
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Not measured at the start (records still sent).
    #[arg(long, default_value_t = 0.0)]
    pub warmup_secs: f64,
    /// Value size in bytes, fixed (1024) or a range (100-1000).
    #[arg(long, default_value = "1024")]
    pub size: String,
    /// Value content.
    #[arg(long, value_enum, default_value_t = Content::Random)]
    pub value: Content,
    /// Key distribution.
    #[arg(long, value_enum, default_value_t = Keys::None)]
    pub keys: Keys,
    /// Distinct keys with --keys uniform.
    #[arg(long, default_value_t = 1000)]
    pub key_space: u64,
    /// 0, 1 or all.
    #[arg(long, default_value = "1", value_parser = cli::parse_acks)]
    pub acks: i16,
    /// Batch size in bytes per partition.
    #[arg(long, default_value_t = 16384)]
    pub batch_bytes: usize,
    /// Linger in milliseconds; 0 sends each batch as soon as its connection can take a
    /// request (Kafka's linger.ms=0), so batches grow with the load.
    #[arg(long, default_value_t = 5.0)]
    pub linger_ms: f64,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = cli::parse_compression)]
    pub compression: Compression,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Producers, each with its own connections.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Target rate in records/s over all producers (open loop); flat out if absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Producer buffer bound in MB.
    #[arg(long, default_value_t = 32)]
    pub buffer_mb: usize,
}

/// `bench produce`.
#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    load: LoadArgs,
}

/// `bench consume`.
#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// Consumers (partitions are split between them).
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Read from the tail (records produced by someone else from now on) instead of the start.
    #[arg(long)]
    from_latest: bool,
    /// Stop when nothing arrived for this long.
    #[arg(long, default_value_t = 10.0)]
    timeout_secs: f64,
    /// Fetch max bytes per partition.
    #[arg(long, default_value_t = 1 << 20)]
    partition_max_bytes: i32,
    /// Consumer groups are not supported yet.
    #[arg(long, hide = true)]
    group: Option<String>,
}

/// `bench e2e`.
#[derive(Args, Debug, Clone)]
pub struct E2eArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// Check that no acknowledged record is lost, duplicated or reordered; exit non-zero if so.
    #[arg(long)]
    verify: bool,
    /// Give up waiting for the remaining records after this long without progress.
    #[arg(long, default_value_t = 10.0)]
    timeout_secs: f64,
}

/// `bench disk`.
#[derive(Args, Debug, Clone)]
pub struct DiskArgs {
    /// Accepted so every bench subcommand takes the same flag; the disk test needs no broker.
    #[arg(long, default_value = DEFAULT_BOOTSTRAP, env = "GREGOR_BOOTSTRAP")]
    #[allow(dead_code)]
    bootstrap: String,
    /// Directory to measure.
    #[arg(long, default_value = "./data")]
    data_dir: std::path::PathBuf,
    /// MB to write then read.
    #[arg(long, default_value_t = 1024)]
    size_mb: u64,
    /// I/O size in KiB.
    #[arg(long, default_value_t = 1024)]
    block_kb: usize,
    /// I/Os in flight.
    #[arg(long, default_value_t = 4)]
    depth: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// `bench suite`.
#[derive(Args, Debug, Clone)]
pub struct SuiteArgs {
    /// Broker to bootstrap from.
    #[arg(long, default_value = DEFAULT_BOOTSTRAP, env = "GREGOR_BOOTSTRAP")]
    bootstrap: String,
    /// Directory for the disk test (the broker's data directory's file system).
    #[arg(long, default_value = "./data")]
    data_dir: std::path::PathBuf,
    /// Records per produce/consume test.
    #[arg(long, default_value_t = 500_000)]
    messages: u64,
    /// Target rate of the e2e test.
    #[arg(long, default_value_t = 20_000.0)]
    e2e_rate: f64,
    /// Seconds of the e2e test.
    #[arg(long, default_value_t = 10.0)]
    e2e_secs: f64,
    /// MB for the disk test.
    #[arg(long, default_value_t = 512)]
    disk_mb: u64,
    /// Print the results as a JSON array too.
    #[arg(long)]
    json: bool,
}

/// Runs `gregor bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    let r = match args.command {
        BenchCommand::Produce(a) => run_produce(&a).and_then(|s| output(&a.common, s)),
        BenchCommand::Consume(a) => run_consume(&a).and_then(|s| output(&a.common, s)),
        BenchCommand::E2e(a) => run_e2e(&a).and_then(|s| output(&a.common, s)),
        BenchCommand::Disk(a) => run_disk(&a),
        BenchCommand::Suite(a) => run_suite(&a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_size(s: &str) -> Result<(usize, usize)> {
    let bad = || ClientError::Invalid(format!("--size: expected BYTES or MIN-MAX, got '{s}'"));
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        ),
        None => {
            let v = s.trim().parse().map_err(|_| bad())?;
            (v, v)
        }
    };
    if lo > hi || hi > 64 << 20 {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn executors(common: &CommonArgs) -> usize {
    common
        .executors
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1)
}

fn produce_spec(common: &CommonArgs, load: &LoadArgs, e2e: bool) -> Result<ProduceSpec> {
    let (size_min, size_max) = parse_size(&load.size)?;
    if e2e && size_min < verify::HEADER_BYTES {
        return Err(ClientError::Invalid(format!(
            "e2e needs --size of at least {} bytes (send time and sequence live in the value)",
            verify::HEADER_BYTES
        )));
    }
    let duration = load.duration_secs.map(Duration::from_secs_f64);
    let messages = match (load.messages, duration) {
        (None, None) => Some(100_000),
        (m, _) => m,
    };
    if load.rate.is_some_and(|r| r <= 0.0) {
        return Err(ClientError::Invalid("--rate must be positive".into()));
    }
    Ok(ProduceSpec {
        bootstrap: common.bootstrap.clone(),
        topic: common.topic.clone(),
        messages,
        duration,
        size_min,
        size_max,
        content: load.value,
        keys: load.keys,
        key_space: load.key_space.max(1),
        producers: load.producers.max(1),
        executors: executors(common),
        rate: load.rate,
        producer: ProducerConfig {
            acks: load.acks,
            batch_bytes: load.batch_bytes.max(1),
            linger: Duration::from_secs_f64(load.linger_ms.max(0.0) / 1000.0),
            compression: load.compression,
            max_buffer_bytes: load.buffer_mb.max(1) << 20,
            ..Default::default()
        },
        max_in_flight: load.max_in_flight.max(1),
        e2e,
    })
}

/// Creates the topic if it does not exist; returns its partition count.
fn ensure_topic(common: &CommonArgs) -> Result<i32> {
    let (bootstrap, topic, partitions, rf) = (
        common.bootstrap.clone(),
        common.topic.clone(),
        common.partitions,
        common.replication_factor,
    );
    block_on(move || async move {
        let cluster = Cluster::connect(ClientConfig::new(&bootstrap)).await?;
        match cluster.topic_metadata(&topic, false).await {
            Ok(t) => Ok(t.partitions.len() as i32),
            Err(ClientError::Kafka { code: 3, .. }) => {
                match cluster
                    .create_topic(&topic, partitions, rf, &[], false)
                    .await
                {
                    Ok(()) | Err(ClientError::Kafka { code: 36, .. }) => {}
                    Err(e) => return Err(e),
                }
                let t = cluster.topic_metadata(&topic, false).await?;
                Ok(t.partitions.len() as i32)
            }
            Err(e) => Err(e),
        }
    })
    .map_err(|e| ClientError::Invalid(e.to_string()))?
}

fn settings_json(common: &CommonArgs, load: &LoadArgs, partitions: i32) -> serde_json::Value {
    serde_json::json!({
        "topic": common.topic,
        "partitions": partitions,
        "size": load.size,
        "value": format!("{:?}", load.value).to_lowercase(),
        "keys": format!("{:?}", load.keys).to_lowercase(),
        "acks": load.acks,
        "batch_bytes": load.batch_bytes,
        "linger_ms": load.linger_ms,
        "compression": format!("{:?}", load.compression).to_lowercase(),
        "max_in_flight": load.max_in_flight,
        "producers": load.producers,
        "rate": load.rate,
    })
}

/// Runs `work` on a helper thread while this thread samples progress; returns its result, the
/// throughput series, and when the work finished (taken on the worker, so the sampler's tick
/// does not round the measured duration).
fn with_sampler<T: Send + 'static>(
    progress: &Arc<Progress>,
    label: &str,
    expected: Option<u64>,
    show_bar: bool,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<(T, stats::Series, Instant)> {
    let p = progress.clone();
    let h = std::thread::spawn(move || {
        let r = work();
        let finished_at = Instant::now();
        p.done.store(true, Ordering::Release);
        r.map(|r| (r, finished_at))
    });
    let series =
        stats::sample_until_done(progress, Duration::from_secs(1), label, expected, show_bar);
    let (r, finished_at) = h
        .join()
        .map_err(|_| ClientError::Invalid("load thread panicked".into()))??;
    Ok((r, series, finished_at))
}

/// Where a run's throughput clock starts: once the clients are connected and ready (`ready_at`,
/// the first of them), or at the end of warm-up if that is later. Connecting, Metadata and
/// ListOffsets are the client's setup, not the broker's rate; for the short runs of
/// `make bench-check` (0.3 s reading 3 GB from the tail cache) they were a few percent of it.
fn measured_from(clock: Clock, started: Instant, ready_at: Option<Instant>) -> Instant {
    clock
        .measure_from
        .max(started)
        .max(ready_at.unwrap_or(started))
}

fn run_produce(a: &ProduceArgs) -> Result<Summary> {
    let partitions = ensure_topic(&a.common)?;
    let spec = produce_spec(&a.common, &a.load, false)?;
    let progress = Progress::new();
    let start = Instant::now();
    let clock = Clock {
        epoch: start,
        measure_from: start + Duration::from_secs_f64(a.load.warmup_secs),
    };
    let s2 = spec.clone();
    let p2 = progress.clone();
    let (r, series, end) = with_sampler(
        &progress,
        "produce",
        spec.messages,
        !a.common.no_progress,
        move || workload::run_producers(&s2, &p2, clock),
    )?;
    let mut s = Summary {
        mode: "produce".into(),
        records: r.records,
        errors: r.errors,
        bytes: r.bytes,
        duration_sec: end
            .saturating_duration_since(measured_from(clock, start, r.ready_at))
            .as_secs_f64(),
        latency_ms: LatencyMs::from_histogram(&r.hist),
        request_latency_ms: Some(LatencyMs::from_histogram(&r.request_hist)),
        target_rate: spec.rate,
        first_error: r.first_error,
        series,
        settings: settings_json(&a.common, &a.load, partitions),
        ..Default::default()
    };
    s.finish_rates();
    if let Some(p) = &a.common.plot {
        plot::write_svg(p, "produce", &s.series, &r.hist).map_err(ClientError::Invalid)?;
    }
    Ok(s)
}

fn run_consume(a: &ConsumeArgs) -> Result<Summary> {
    if a.group.is_some() {
        return Err(ClientError::Invalid(
            "--group: consumer groups are not supported yet; partitions are assigned directly"
                .into(),
        ));
    }
    let partitions = ensure_topic(&a.common)?;
    let messages = a.load.messages.unwrap_or(100_000);
    let part_list: Vec<i32> = (0..partitions).collect();
    if !a.from_latest {
        let available = available_records(&a.common.bootstrap, &a.common.topic, &part_list)?;
        if available < messages {
            let mut load = a.load.clone();
            load.messages = Some(messages - available);
            load.duration_secs = None;
            load.rate = None;
            eprintln!(
                "prefilling {} records into {}",
                messages - available,
                a.common.topic
            );
            let spec = produce_spec(&a.common, &load, false)?;
            let progress = Progress::new();
            let now = Instant::now();
            let r = workload::run_producers(
                &spec,
                &progress,
                Clock {
                    epoch: now,
                    measure_from: now,
                },
            )?;
            if r.errors > 0 {
                return Err(ClientError::Invalid(format!(
                    "prefill failed for {} records: {}",
                    r.errors,
                    r.first_error.unwrap_or_default()
                )));
            }
        }
    }
    let spec = ConsumeSpec {
        bootstrap: a.common.bootstrap.clone(),
        topic: a.common.topic.clone(),
        partitions: part_list,
        consumers: a.consumers.max(1),
        start: if a.from_latest {
            StartOffset::Latest
        } else {
            StartOffset::Earliest
        },
        explicit_offsets: None,
        messages: Some(messages),
        duration: a.load.duration_secs.map(Duration::from_secs_f64),
        idle_timeout: Duration::from_secs_f64(a.timeout_secs),
        fetch: ConsumerConfig {
            partition_max_bytes: a.partition_max_bytes,
            ..Default::default()
        },
        e2e: false,
        producers_done: None,
    };
    let progress = Progress::new();
    let start = Instant::now();
    let clock = Clock {
        epoch: start,
        measure_from: start + Duration::from_secs_f64(a.load.warmup_secs),
    };
    let p2 = progress.clone();
    let (r, series, _) = with_sampler(
        &progress,
        "consume",
        Some(messages),
        !a.common.no_progress,
        move || workload::run_consumers(&spec, &p2, clock),
    )?;
    let end = r.last_at.unwrap_or_else(Instant::now);
    let mut s = Summary {
        mode: "consume".into(),
        records: r.records,
        bytes: r.bytes,
        duration_sec: end
            .saturating_duration_since(measured_from(clock, start, r.ready_at))
            .as_secs_f64(),
        series,
        settings: settings_json(&a.common, &a.load, partitions),
        ..Default::default()
    };
    s.finish_rates();
    if a.load.duration_secs.is_none() && r.records_total < messages {
        s.errors = messages - r.records_total;
        s.first_error = Some(format!(
            "received {} of {messages} records before {} s without data",
            r.records_total, a.timeout_secs
        ));
    }
    if let Some(p) = &a.common.plot {
        plot::write_svg(p, "consume", &s.series, &new_histogram()).map_err(ClientError::Invalid)?;
    }
    Ok(s)
}

fn available_records(bootstrap: &str, topic: &str, partitions: &[i32]) -> Result<u64> {
    let (b, t, p) = (
        bootstrap.to_string(),
        topic.to_string(),
        partitions.to_vec(),
    );
    block_on(move || async move {
        let cluster = Cluster::connect(ClientConfig::new(&b)).await?;
        let lo = cluster.list_offsets(&t, &p, admin::EARLIEST).await?;
        let hi = cluster.list_offsets(&t, &p, admin::LATEST).await?;
        Ok(p.iter()
            .map(|x| {
                (hi.get(x).copied().unwrap_or(0) - lo.get(x).copied().unwrap_or(0)).max(0) as u64
            })
            .sum())
    })
    .map_err(|e| ClientError::Invalid(e.to_string()))?
}

fn latest_offsets(bootstrap: &str, topic: &str, partitions: &[i32]) -> Result<BTreeMap<i32, i64>> {
    let (b, t, p) = (
        bootstrap.to_string(),
        topic.to_string(),
        partitions.to_vec(),
    );
    block_on(move || async move {
        let cluster = Cluster::connect(ClientConfig::new(&b)).await?;
        cluster.list_offsets(&t, &p, admin::LATEST).await
    })
    .map_err(|e| ClientError::Invalid(e.to_string()))?
}

fn run_e2e(a: &E2eArgs) -> Result<Summary> {
    let partitions = ensure_topic(&a.common)?;
    let part_list: Vec<i32> = (0..partitions).collect();
    // Start offsets are fixed before any record is sent, so the consumer cannot miss one.
    let offsets = latest_offsets(&a.common.bootstrap, &a.common.topic, &part_list)?;
    let pspec = produce_spec(&a.common, &a.load, true)?;
    let prod_progress = Progress::new();
    let cons_progress = Progress::new();
    let cspec = ConsumeSpec {
        bootstrap: a.common.bootstrap.clone(),
        topic: a.common.topic.clone(),
        partitions: part_list,
        consumers: 1,
        start: StartOffset::Latest,
        explicit_offsets: Some(offsets),
        messages: None,
        duration: None,
        idle_timeout: Duration::from_secs_f64(a.timeout_secs),
        fetch: ConsumerConfig {
            max_wait_ms: 100,
            ..Default::default()
        },
        e2e: true,
        producers_done: Some(prod_progress.clone()),
    };
    let start = Instant::now();
    let clock = Clock {
        epoch: start,
        measure_from: start + Duration::from_secs_f64(a.load.warmup_secs),
    };
    let (pp, cp) = (prod_progress.clone(), cons_progress.clone());
    let expected = pspec.messages;
    let (both, series, _) = with_sampler(
        &cons_progress,
        "e2e",
        expected,
        !a.common.no_progress,
        move || {
            let cp2 = cp.clone();
            let consumer = std::thread::spawn(move || workload::run_consumers(&cspec, &cp2, clock));
            // Producers start once the consumer is fetching, so consumer start-up does not
            // show up as end-to-end latency.
            let ready_by = Instant::now() + Duration::from_secs(30);
            while cp.ready.load(Ordering::Acquire) == 0 && !consumer.is_finished() {
                if Instant::now() > ready_by {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let producers_started = Instant::now();
            let produced = workload::run_producers(&pspec, &pp, clock);
            pp.done.store(true, Ordering::Release);
            let consumed = consumer
                .join()
                .map_err(|_| ClientError::Invalid("consumer thread panicked".into()))?;
            Ok((produced?, consumed?, producers_started))
        },
    )?;
    let (p, c, producers_started) = both;
    let end = c.last_at.unwrap_or_else(Instant::now);
    let mut acked = Vec::new();
    for (id, set) in p.acked {
        let id = id as usize;
        if id >= acked.len() {
            acked.resize(id + 1, verify::BitSet::default());
        }
        acked[id] = set;
    }
    let report = verify::verify(&acked, &c.check);
    let mut s = Summary {
        mode: "e2e".into(),
        records: c.records,
        errors: p.errors,
        bytes: c.bytes,
        duration_sec: end
            .saturating_duration_since(measured_from(clock, producers_started, p.ready_at))
            .as_secs_f64(),
        latency_ms: LatencyMs::from_histogram(&c.hist),
        target_rate: a.load.rate,
        first_error: p.first_error,
        series,
        settings: settings_json(&a.common, &a.load, partitions),
        ..Default::default()
    };
    s.finish_rates();
    if a.verify {
        s.verify = Some(report);
    }
    if let Some(path) = &a.common.plot {
        plot::write_svg(path, "e2e", &s.series, &c.hist).map_err(ClientError::Invalid)?;
    }
    Ok(s)
}

/// Prints the summary; an error if records failed or verification found problems.
fn output(common: &CommonArgs, s: Summary) -> Result<()> {
    if common.json {
        outln!(
            "{}",
            serde_json::to_string(&s).map_err(|e| ClientError::Invalid(e.to_string()))?
        );
    } else {
        s.print_text();
    }
    check_summary(&s)
}

fn check_summary(s: &Summary) -> Result<()> {
    if let Some(v) = &s.verify
        && !v.ok()
    {
        return Err(ClientError::Invalid(format!(
            "verification FAILED: {} lost, {} duplicated, {} reordered",
            v.lost, v.duplicated, v.reordered
        )));
    }
    if s.errors > 0 {
        return Err(ClientError::Invalid(format!(
            "{} records failed{}",
            s.errors,
            s.first_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

fn run_disk(a: &DiskArgs) -> Result<()> {
    let r = disk::run(disk::DiskSpec {
        data_dir: a.data_dir.clone(),
        total_bytes: a.size_mb << 20,
        block_bytes: a.block_kb << 10,
        depth: a.depth,
    })?;
    if a.json {
        outln!(
            "{}",
            serde_json::to_string(&r).map_err(|e| ClientError::Invalid(e.to_string()))?
        );
    } else {
        outln!(
            "disk {}: write {:.1} MB/s, read {:.1} MB/s ({} MB, {} KiB I/Os, {} in flight, O_DIRECT)",
            r.data_dir,
            r.write_mb_per_sec,
            r.read_mb_per_sec,
            r.bytes >> 20,
            r.block_bytes >> 10,
            r.depth
        );
    }
    Ok(())
}

/// One topic for the whole suite: the consume step reads the 1 KB records the first step wrote.
const SUITE_TOPIC: &str = "gregor-bench-suite";

fn run_suite(a: &SuiteArgs) -> Result<()> {
    let common = |topic: &str| CommonArgs {
        bootstrap: a.bootstrap.clone(),
        topic: topic.into(),
        partitions: 6,
        replication_factor: 1,
        json: false,
        plot: None,
        no_progress: true,
        executors: None,
    };
    let load = |size: &str, acks: i16| LoadArgs {
        messages: Some(a.messages),
        duration_secs: None,
        warmup_secs: 0.0,
        size: size.into(),
        value: Content::Random,
        keys: Keys::None,
        key_space: 1000,
        acks,
        batch_bytes: 65536,
        linger_ms: 5.0,
        compression: Compression::None,
        max_in_flight: 5,
        producers: 2,
        rate: None,
        buffer_mb: 32,
    };
    let mut rows: Vec<(String, Summary)> = Vec::new();
    let mut failures = Vec::new();
    let disk = disk::run(disk::DiskSpec {
        data_dir: a.data_dir.clone(),
        total_bytes: a.disk_mb << 20,
        block_bytes: 1 << 20,
        depth: 4,
    });
    type Step<'a> = (&'a str, Box<dyn Fn() -> Result<Summary> + 'a>);
    let runs: Vec<Step<'_>> = vec![
        (
            "produce 1KB acks=1",
            Box::new(|| {
                run_produce(&ProduceArgs {
                    common: common(SUITE_TOPIC),
                    load: load("1024", 1),
                })
            }),
        ),
        (
            "produce 100B acks=1",
            Box::new(|| {
                run_produce(&ProduceArgs {
                    common: common(SUITE_TOPIC),
                    load: load("100", 1),
                })
            }),
        ),
        (
            "produce 1KB acks=all",
            Box::new(|| {
                run_produce(&ProduceArgs {
                    common: common(SUITE_TOPIC),
                    load: load("1024", -1),
                })
            }),
        ),
        (
            "consume 1KB",
            Box::new(|| {
                run_consume(&ConsumeArgs {
                    common: common(SUITE_TOPIC),
                    load: load("1024", 1),
                    consumers: 1,
                    from_latest: false,
                    timeout_secs: 10.0,
                    partition_max_bytes: 1 << 20,
                    group: None,
                })
            }),
        ),
        (
            "e2e 1KB verify",
            Box::new(|| {
                let mut l = load("1024", -1);
                l.messages = None;
                l.duration_secs = Some(a.e2e_secs);
                l.rate = Some(a.e2e_rate);
                l.producers = 1;
                l.batch_bytes = 16384;
                run_e2e(&E2eArgs {
                    common: common(SUITE_TOPIC),
                    load: l,
                    verify: true,
                    timeout_secs: 10.0,
                })
            }),
        ),
    ];
    for (name, f) in runs {
        eprintln!("running {name} ...");
        match f() {
            Ok(s) => {
                if let Err(e) = check_summary(&s) {
                    failures.push(format!("{name}: {e}"));
                }
                rows.push((name.to_string(), s));
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    outln!();
    outln!(
        "{:<22} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "test",
        "records/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors"
    );
    match &disk {
        Ok(d) => outln!(
            "{:<22} {:>12} {:>10.1} (write)  {:.1} MB/s read, O_DIRECT {}",
            "disk",
            "-",
            d.write_mb_per_sec,
            d.read_mb_per_sec,
            d.data_dir
        ),
        Err(e) => failures.push(format!("disk: {e}")),
    }
    for (name, s) in &rows {
        let l = &s.latency_ms;
        let ms = |v: f64| {
            if l.max > 0.0 {
                format!("{v:.3}")
            } else {
                "-".to_string()
            }
        };
        outln!(
            "{:<22} {:>12.0} {:>10.2} {:>9} {:>9} {:>9} {:>9} {:>7}",
            name,
            s.records_per_sec,
            s.mb_per_sec,
            ms(l.p50),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            s.errors
        );
    }
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(n, s)| serde_json::json!({"test": n, "result": s}))
            .collect();
        let d = disk
            .as_ref()
            .ok()
            .map(|d| serde_json::to_value(d).unwrap_or_default());
        outln!("{}", serde_json::json!({"disk": d, "runs": v}));
    }
    for f in &failures {
        eprintln!("FAILED {f}");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ClientError::Invalid(format!(
            "{} suite step(s) failed",
            failures.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::client::fake_broker::{FakeBroker, FakeConfig};

    #[derive(Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: BenchCommand,
    }

    fn parse(args: &[&str]) -> BenchCommand {
        let mut v = vec!["gregor-bench"];
        v.extend_from_slice(args);
        TestCli::parse_from(v).command
    }

    fn fake(fail: Option<(usize, i16)>) -> FakeBroker {
        FakeBroker::start(FakeConfig {
            topic: "t".into(),
            partitions: 2,
            fail_every_nth_batch: fail,
            ..Default::default()
        })
    }

    #[test]
    fn produce_counts_only_acknowledged_records_and_reports_errors() {
        // Every 4th batch is refused with NOT_LEADER_OR_FOLLOWER.
        let broker = fake(Some((4, 6)));
        let cmd = parse(&[
            "produce",
            "--bootstrap",
            &broker.addr,
            "--topic",
            "t",
            "--messages",
            "3000",
            "--size",
            "100",
            "--batch-bytes",
            "2000",
            "--no-progress",
            "--executors",
            "1",
        ]);
        let BenchCommand::Produce(a) = cmd else {
            panic!("parsed the wrong subcommand")
        };
        let s = run_produce(&a).unwrap();
        let stored = (broker.stored_records(0) + broker.stored_records(1)) as u64;
        assert!(s.errors > 0, "{s:?}");
        assert_eq!(s.records + s.errors, 3000);
        assert_eq!(
            s.records, stored,
            "only what the broker stored may count as sent"
        );
        assert_eq!(s.bytes, stored * 100);
        let e = check_summary(&s).unwrap_err().to_string();
        assert!(e.contains("NOT_LEADER_OR_FOLLOWER"), "{e}");
    }

    #[test]
    fn produce_to_a_closed_port_fails() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let BenchCommand::Produce(a) = parse(&[
            "produce",
            "--bootstrap",
            &addr,
            "--messages",
            "10",
            "--no-progress",
        ]) else {
            panic!("parsed the wrong subcommand")
        };
        assert!(run_produce(&a).is_err());
    }

    /// Client setup (here a slow Metadata answer, for the topic check, the producers and the
    /// consumer alike) is not counted in a run's duration, so the rates are the broker's.
    #[test]
    fn throughput_is_timed_from_when_the_clients_are_ready() {
        let delay_ms = 400;
        let broker = FakeBroker::start(FakeConfig {
            topic: "t".into(),
            partitions: 2,
            metadata_delay_ms: delay_ms,
            ..Default::default()
        });
        let args = |mode: &str| {
            let v = [
                mode,
                "--bootstrap",
                &broker.addr,
                "--topic",
                "t",
                "--messages",
                "2000",
                "--size",
                "100",
                "--no-progress",
                "--executors",
                "1",
            ];
            parse(&v)
        };
        // The run took longer than the delay, its measured duration less.
        let timed_without_setup = |run: &dyn Fn() -> Result<Summary>| {
            let t = Instant::now();
            let s = run().unwrap();
            assert_eq!(s.records, 2000);
            assert!(t.elapsed().as_millis() >= delay_ms as u128);
            assert!(s.duration_sec * 1000.0 < delay_ms as f64, "{s:?}");
        };
        let (BenchCommand::Produce(p), BenchCommand::Consume(c)) =
            (args("produce"), args("consume"))
        else {
            panic!("parsed the wrong subcommands")
        };
        timed_without_setup(&|| run_produce(&p));
        timed_without_setup(&|| run_consume(&c));
    }

    #[test]
    fn open_loop_rate_is_respected_and_e2e_verifies() {
        let broker = fake(None);
        let BenchCommand::E2e(a) = parse(&[
            "e2e",
            "--bootstrap",
            &broker.addr,
            "--topic",
            "t",
            "--rate",
            "2000",
            "--duration-secs",
            "1",
            "--size",
            "64",
            "--verify",
            "--no-progress",
            "--executors",
            "1",
        ]) else {
            panic!("parsed the wrong subcommand")
        };
        let s = run_e2e(&a).unwrap();
        let v = s.verify.clone().unwrap();
        assert!(v.ok(), "{v:?}");
        // Open loop: 2000/s for 1 s, whatever the broker's speed.
        assert!((1900..=2100).contains(&v.acked), "{v:?}");
        assert_eq!(v.received, v.acked);
        assert!(s.latency_ms.p50 > 0.0);
        check_summary(&s).unwrap();
    }

    #[test]
    fn size_ranges_parse() {
        assert_eq!(parse_size("1024").unwrap(), (1024, 1024));
        assert_eq!(parse_size("100-1000").unwrap(), (100, 1000));
        assert!(parse_size("1000-100").is_err());
        assert!(parse_size("x").is_err());
    }
}
