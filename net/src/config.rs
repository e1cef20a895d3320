//! Broker configuration: one flat map of Kafka-style dotted names (`log.retention.ms`), filled
//! from built-in defaults, then a TOML file, then `GREGOR_*` environment variables, then
//! command-line overrides, each layer winning over the previous one.
//!
//! Every setting is listed in [`SETTINGS`] with its Kafka equivalent; `docs/CONFIG.md` mirrors
//! that table.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// Error loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML file is not valid TOML.
    #[error("cannot parse config file {path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A setting name that Gregor does not know.
    #[error("unknown setting '{name}' (from {origin})")]
    Unknown {
        /// Setting name.
        name: String,
        /// Where it came from (file, env var, flag).
        origin: String,
    },
    /// A setting value that does not parse or is out of range.
    #[error("invalid value '{value}' for '{name}': {reason}")]
    Invalid {
        /// Setting name.
        name: String,
        /// The offending value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
}

/// Which storage backend the partition logs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageBackend {
    /// O_DIRECT io_uring segments through glommio DMA files.
    Dma,
    /// Portable `std::fs` files.
    Std,
}

/// Upper bound of `produce.pipeline.depth` (its queue is allocated up front).
pub const PRODUCE_PIPELINE_DEPTH_MAX: usize = 1024;

/// One known setting: its Gregor name, Kafka equivalent, default and meaning.
#[derive(Debug)]
pub struct SettingSpec {
    /// Gregor name (TOML key, `--set` key; env var is `GREGOR_` + upper-cased, `.` -> `_`).
    pub name: &'static str,
    /// The Kafka broker setting it corresponds to, or "-" if none.
    pub kafka_name: &'static str,
    /// Default value as text.
    pub default: &'static str,
    /// One-line description.
    pub doc: &'static str,
}

/// Every setting the broker accepts. Topic-level defaults (`log.*`, `message.max.bytes`) become
/// the default of the matching topic config (see [`crate::topic_config`]).
pub const SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        name: "listen",
        kafka_name: "listeners",
        default: "127.0.0.1:9092",
        doc: "Address the broker accepts Kafka connections on (HOST:PORT).",
    },
    SettingSpec {
        name: "advertised.listener",
        kafka_name: "advertised.listeners",
        default: "",
        doc: "HOST:PORT given to clients in Metadata; empty means the listen address.",
    },
    SettingSpec {
        name: "data.dir",
        kafka_name: "log.dirs",
        default: "./data",
        doc: "Directory holding the metadata file and one directory per partition.",
    },
    SettingSpec {
        name: "cores",
        kafka_name: "num.io.threads",
        default: "0",
        doc: "Number of cores (one executor each); 0 means all online cores.",
    },
    SettingSpec {
        name: "cores.pinned",
        kafka_name: "-",
        default: "true",
        doc: "Pin each core's executor to its own CPU (when there are at least as many CPUs as cores). Set false where the broker shares its CPUs with other busy processes (clients or a load tool on the same machine, a small VM or container): a woken executor then runs on whichever CPU is free instead of waiting for its own (BENCHMARKS change 43).",
    },
    SettingSpec {
        name: "node.id",
        kafka_name: "node.id",
        default: "0",
        doc: "This broker's node id, reported in Metadata.",
    },
    SettingSpec {
        name: "storage.backend",
        kafka_name: "-",
        default: "dma",
        doc: "Segment I/O backend: dma (O_DIRECT io_uring) or std (portable std::fs).",
    },
    SettingSpec {
        name: "auto.create.topics.enable",
        kafka_name: "auto.create.topics.enable",
        default: "true",
        doc: "Create a topic when a Metadata request names an unknown one.",
    },
    SettingSpec {
        name: "num.partitions",
        kafka_name: "num.partitions",
        default: "1",
        doc: "Partition count of auto-created topics and of CreateTopics with -1.",
    },
    SettingSpec {
        name: "socket.request.max.bytes",
        kafka_name: "socket.request.max.bytes",
        default: "104857600",
        doc: "Largest request frame accepted; a longer one closes the connection.",
    },
    SettingSpec {
        name: "max.connections",
        kafka_name: "max.connections",
        default: "65536",
        doc: "Client connections the broker holds at once (split evenly over the cores); a connection beyond it is closed at once with a log line.",
    },
    SettingSpec {
        name: "queued.max.request.bytes",
        kafka_name: "queued.max.request.bytes",
        default: "268435456",
        doc: "Request bytes a core buffers at once; readers wait for room (at least socket.request.max.bytes).",
    },
    SettingSpec {
        name: "produce.pipeline.depth",
        kafka_name: "-",
        default: "8",
        doc: "Produce requests of one connection the broker works on at once: the next is read and its appends issued while earlier ones are written, and the answers go out in request order (clients send up to max.in.flight.requests.per.connection). Appends keep request order on every partition. Any other request waits until those in flight are answered. 1 handles one request at a time, as Kafka does.",
    },
    SettingSpec {
        name: "tail.cache.bytes.per.core",
        kafka_name: "-",
        default: "268435456",
        doc: "Memory each core may use to keep recently appended batches for tail fetches, shared equally by the partitions it owns (so the total does not grow with the partition count). Each kept write buffer is charged its footprint in the registered region (the next power of two of its size). With the O_DIRECT backend and `auto` registered memory, at most 960 MiB per core (the cache lives in that memory, which io_uring registers up to 1 GiB per core; see io.registered.memory.bytes.per.core). Size it for how far behind the tail consumers run: one further back reads from disk, and while producers write those reads are paced to spare their latency (256 KiB reads, two in flight for each partition a fetch reads; with fetch.cold.reads=sendfile, two per core).",
    },
    SettingSpec {
        name: "log.segment.zeros.ahead",
        kafka_name: "-",
        default: "true",
        doc: "While a partition's append writes average under 32 KiB (larger ones gain nothing from it), write zeros ahead of its active segment's appends, in the background (O_DIRECT backend), so appends overwrite written blocks: io_uring issues them without a kernel worker thread (measured: 15% less broker CPU at 100,000 records/s of 16 KB batches) and an fsync has no file size change to persist. In chunks of up to 4 MiB for partitions that are flushed (acks=all, flush.messages, flush.ms), of up to 256 KiB for the others, whose acks=1 latency a large zero write queued ahead of an append would raise. Costs up to 16 MiB (about 1 MiB before a first flush) of disk per active segment and the disk bandwidth of the zeros.",
    },
    SettingSpec {
        name: "log.segment.allocate.ahead",
        kafka_name: "-",
        default: "true",
        doc: "While a partition's append writes average 32 KiB or more (when no zeros go ahead), allocate blocks ahead of its active segment's appends (fallocate, in the background, O_DIRECT backend; up to 16 MiB past the data and at most about half the data already in the segment), and write an append that reaches into them as two writes: the rewritten partly filled last block, and the rest. On ext4 each is then issued by io_uring without a kernel worker thread, where one write over both kinds of block, or past the file's end, is not (measured at 567,000 records/s of 256 KiB batches: the broker's write p99 0.75 ms against 2.0, BENCHMARKS change 35). The active segment's file size includes the allocated blocks until it is sealed; recovery after a crash cuts them off like the zeros ahead.",
    },
    SettingSpec {
        name: "io.registered.memory.bytes.per.core",
        kafka_name: "-",
        default: "auto",
        doc: "Memory each core allocates at start and registers with io_uring for O_DIRECT write buffers (glommio's io_memory). Writes from it skip pinning their pages on every write, and its pages are touched once at start instead of on the first writes (measured: 15% less broker CPU per produced record, BENCHMARKS change 24). `auto` is tail.cache.bytes.per.core plus 64 MiB (all cores together at most half the machine's memory): the tail cache keeps written buffers and is charged their footprint in this region, so the cache fits in it and the broker's memory is this region, not the cache on top of it. A number sets it (glommio's own default is 10 MiB). Both are at most 1 GiB, the most io_uring registers as one buffer. Under `auto` the tail cache is cut to what fits in the region with the 64 MiB to spare (so at most 960 MiB per core); with a number set here, a cache that does not fit keeps its size and its buffers beyond the region come from the heap (unregistered, their pages faulted in on first use). Either way the broker says so at start. Without the right to lock that much memory (RLIMIT_MEMLOCK of 3 x this x cores, or CAP_IPC_LOCK), registration fails, the region serves as plain buffers, and the broker logs a warning at start saying how to fix it.",
    },
    SettingSpec {
        name: "log.segment.recycle",
        kafka_name: "-",
        default: "true",
        doc: "Reuse the files of segments removed by retention or DeleteRecords as new segments (O_DIRECT backend), once their file.delete.delay.ms has passed and no read holds them, instead of deleting them and allocating new ones. Each partition keeps at most two unused spares, and none unused for over 60 s.",
    },
    SettingSpec {
        name: "fetch.cold.pages.keep",
        kafka_name: "-",
        default: "true",
        doc: "With fetch.cold.reads=sendfile: keep the page-cache pages of segment data sent to consumers from disk, as Kafka does (the default). Set false and a connection drops them (POSIX_FADV_DONTNEED) when it answers its next request, so a catch-up read reuses the same few pages rather than filling the page cache. That pays in a VM that hands freed memory back to its host, where touching new pages is what a long catch-up spends most on (a 4.5 GB catch-up: 730 to 780 MB/s against 535 to 645), and costs elsewhere: a 1.5 GB catch-up read 770 to 870 MB/s dropping against 1,030 to 1,290 keeping (BENCHMARKS change 30), and consumers reading the same old data one after another read it from disk again.",
    },
    SettingSpec {
        name: "fetch.cold.reads",
        kafka_name: "-",
        default: "direct",
        doc: "How data no longer in the tail cache reaches consumers (O_DIRECT backend). `direct`: read with O_DIRECT into the core's buffers and sent from there, with reads started ahead of a catching-up consumer's next fetch (fetch.read.ahead.bytes.per.core) while no producer has written for 500 ms; while producers write, only what a fetch asks for is read, 256 KiB at a time with one more in flight. `sendfile`: sent from the page cache with sendfile, as Kafka does, each range loaded into the page cache by the core's blocking thread first. Buffered reads cost more than the disk on a VM that hands freed memory back to its host (measured here: 880 MB/s through the page cache where O_DIRECT read 1,600; BENCHMARKS change 41); `sendfile` keeps read data in the page cache for the next consumer of the same range.",
    },
    SettingSpec {
        name: "fetch.cold.read.bytes.per.core",
        kafka_name: "-",
        default: "134217728",
        doc: "With fetch.cold.reads=direct: memory each core's fetch responses may hold in data read from disk for them, from the read until the response has been written to its socket (which a slow client can put off). A fetch reserves what it may read from the core's free share; with none free, each partition it reads from disk gets its first batch only, so every consumer still progresses and the memory stays within this plus one batch per partition of each fetch in flight. Data from the tail cache or sent with sendfile is not counted.",
    },
    SettingSpec {
        name: "fetch.read.ahead.bytes.per.core",
        kafka_name: "-",
        default: "33554432",
        doc: "With fetch.cold.reads=direct: memory each core may hold in reads started ahead of consumers catching up from disk (in flight or read, not yet fetched), shared equally by the partitions it owns. Reads are 1 MiB; a partition whose share is below that reads only what its fetches ask for. 0 turns reading ahead off.",
    },
    SettingSpec {
        name: "fetch.max.bytes",
        kafka_name: "fetch.max.bytes",
        default: "57671680",
        doc: "Upper bound on the bytes one Fetch response carries.",
    },
    SettingSpec {
        name: "message.max.bytes",
        kafka_name: "message.max.bytes",
        default: "1048588",
        doc: "Default max.message.bytes of topics: largest record batch accepted.",
    },
    SettingSpec {
        name: "log.segment.bytes",
        kafka_name: "log.segment.bytes",
        default: "1073741824",
        doc: "Default segment.bytes of topics: roll a segment at this size.",
    },
    SettingSpec {
        name: "log.roll.ms",
        kafka_name: "log.roll.ms",
        default: "604800000",
        doc: "Default segment.ms of topics: roll a segment at this age.",
    },
    SettingSpec {
        name: "log.retention.ms",
        kafka_name: "log.retention.ms",
        default: "604800000",
        doc: "Default retention.ms of topics (-1: keep forever).",
    },
    SettingSpec {
        name: "log.retention.bytes",
        kafka_name: "log.retention.bytes",
        default: "-1",
        doc: "Default retention.bytes of topics, per partition (-1: no limit).",
    },
    SettingSpec {
        name: "log.retention.check.interval.ms",
        kafka_name: "log.retention.check.interval.ms",
        default: "300000",
        doc: "How often each core applies retention to its partitions.",
    },
    SettingSpec {
        name: "log.flush.interval.messages",
        kafka_name: "log.flush.interval.messages",
        default: "9223372036854775807",
        doc: "Default flush.messages of topics: fsync after this many messages.",
    },
    SettingSpec {
        name: "log.flush.interval.ms",
        kafka_name: "log.flush.interval.ms",
        default: "9223372036854775807",
        doc: "Default flush.ms of topics: fsync at least this often.",
    },
    SettingSpec {
        name: "log.index.interval.bytes",
        kafka_name: "log.index.interval.bytes",
        default: "4096",
        doc: "Default index.interval.bytes of topics: bytes between sparse index entries.",
    },
    SettingSpec {
        name: "log.segment.delete.delay.ms",
        kafka_name: "log.segment.delete.delay.ms",
        default: "60000",
        doc: "Default file.delete.delay.ms of topics: how long a segment removed by retention or DeleteRecords stays on disk (renamed *.deleted) before a background thread deletes it or, with log.segment.recycle, a new segment reuses it.",
    },
    SettingSpec {
        name: "log.message.timestamp.type",
        kafka_name: "log.message.timestamp.type",
        default: "CreateTime",
        doc: "Default message.timestamp.type of topics: CreateTime or LogAppendTime.",
    },
    SettingSpec {
        name: "log.level",
        kafka_name: "-",
        default: "info",
        doc: "tracing filter (e.g. info, debug, gregor_net=trace); GREGOR_LOG also works.",
    },
    SettingSpec {
        name: "group.initial.rebalance.delay.ms",
        kafka_name: "group.initial.rebalance.delay.ms",
        default: "3000",
        doc: "How long the first rebalance of an empty group waits for more members.",
    },
    SettingSpec {
        name: "group.min.session.timeout.ms",
        kafka_name: "group.min.session.timeout.ms",
        default: "6000",
        doc: "Smallest session.timeout.ms a consumer may ask for.",
    },
    SettingSpec {
        name: "group.max.session.timeout.ms",
        kafka_name: "group.max.session.timeout.ms",
        default: "1800000",
        doc: "Largest session.timeout.ms a consumer may ask for.",
    },
    SettingSpec {
        name: "group.max.size",
        kafka_name: "group.max.size",
        default: "10000",
        doc: "Most members one consumer group may have.",
    },
    SettingSpec {
        name: "offsets.retention.minutes",
        kafka_name: "offsets.retention.minutes",
        default: "10080",
        doc: "Committed offsets of a group that stays empty this long are dropped.",
    },
    SettingSpec {
        name: "offset.metadata.max.bytes",
        kafka_name: "offset.metadata.max.bytes",
        default: "4096",
        doc: "Longest metadata string an offset commit may carry.",
    },
    SettingSpec {
        name: "offsets.topic.num.partitions",
        kafka_name: "offsets.topic.num.partitions",
        default: "50",
        doc: "Partitions of __consumer_offsets when it is created (fixed afterwards).",
    },
    SettingSpec {
        name: "offsets.topic.segment.bytes",
        kafka_name: "offsets.topic.segment.bytes",
        default: "16777216",
        doc: "Segment size of __consumer_offsets.",
    },
    SettingSpec {
        name: "offsets.topic.compaction.records",
        kafka_name: "-",
        default: "10000",
        doc: "Snapshot a __consumer_offsets partition and drop older records after this many appends.",
    },
];

/// The broker's validated configuration.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Address to accept connections on.
    pub listen: SocketAddr,
    /// Host and port told to clients (Metadata, DescribeCluster).
    pub advertised_host: String,
    /// Port told to clients.
    pub advertised_port: u16,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Core count; 0 = all online cores.
    pub cores: usize,
    /// Pin each core's executor to a CPU.
    pub cores_pinned: bool,
    /// Node id.
    pub node_id: i32,
    /// Storage backend for partition logs.
    pub storage_backend: StorageBackend,
    /// Auto-create topics named in Metadata requests.
    pub auto_create_topics: bool,
    /// Default partition count.
    pub num_partitions: i32,
    /// Largest request frame accepted.
    pub socket_request_max_bytes: usize,
    /// Request bytes one core buffers at once.
    pub queued_max_request_bytes: usize,
    /// Client connections held at once, broker-wide.
    pub max_connections: usize,
    /// Produce requests of one connection worked on at once (`produce.pipeline.depth`).
    pub produce_pipeline_depth: usize,
    /// Cap on a Fetch response's record bytes.
    pub fetch_max_bytes: usize,
    /// Keep the page cache of cold data sent to consumers (`fetch.cold.pages.keep`).
    pub fetch_cold_pages_keep: bool,
    /// Read cold data with O_DIRECT rather than sending it with `sendfile`
    /// (`fetch.cold.reads=direct`).
    pub fetch_cold_reads_direct: bool,
    /// Reads ahead of catch-up consumers each core may hold, shared by its partitions
    /// (`fetch.read.ahead.bytes.per.core`).
    pub fetch_read_ahead_bytes_per_core: usize,
    /// Data read from disk that each core's fetch responses may hold until sent
    /// (`fetch.cold.read.bytes.per.core`, `cold_budget.rs`).
    pub fetch_cold_read_bytes_per_core: usize,
    /// Tail-cache budget of each core, shared by its partitions: `tail.cache.bytes.per.core`,
    /// or less when `auto` registered memory cannot hold that much (see
    /// [`tail_cache_requested_bytes_per_core`](Self::tail_cache_requested_bytes_per_core)).
    pub tail_cache_bytes_per_core: usize,
    /// `tail.cache.bytes.per.core` as set. Under `auto` registered memory (Dma backend) a cache
    /// that does not fit in the region with room for the writes in flight is cut to fit: past
    /// the region its buffers would come from the heap, each page faulted in on its first
    /// write (a second of latency per write while the cache filled, BENCHMARKS session 16).
    pub tail_cache_requested_bytes_per_core: usize,
    /// Write zeros ahead of active segments' appends (`log.segment.zeros.ahead`).
    pub segment_zeros_ahead: bool,
    /// Allocate blocks ahead of active segments' large appends (`log.segment.allocate.ahead`).
    pub segment_allocate_ahead: bool,
    /// Reuse retired segment files as new segments (`log.segment.recycle`).
    pub segment_recycle: bool,
    /// Memory each core registers with io_uring for write buffers
    /// (`io.registered.memory.bytes.per.core`).
    pub io_registered_memory_bytes_per_core: usize,
    /// Interval between retention passes.
    pub retention_check_interval_ms: u64,
    /// tracing filter directive.
    pub log_level: String,
    /// Broker-level topic defaults, keyed by *topic* config name (`retention.ms`, ...).
    pub topic_defaults: BTreeMap<String, String>,
    /// Consumer group coordinator settings (`group.*`, `offsets.*`).
    pub coordinator: crate::group::CoordinatorSettings,
}

/// Where a value came from, for error messages.
fn origin_env(var: &str) -> String {
    format!("environment variable {var}")
}

/// Collects raw values by setting name, in precedence order.
#[derive(Debug, Default)]
pub struct ConfigBuilder {
    values: BTreeMap<String, String>,
}

impl ConfigBuilder {
    /// A builder holding only the defaults.
    pub fn new() -> Self {
        let values = SETTINGS
            .iter()
            .map(|s| (s.name.to_string(), s.default.to_string()))
            .collect();
        Self { values }
    }

    /// Sets one value; unknown names are an error.
    pub fn set(&mut self, name: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
        if !SETTINGS.iter().any(|s| s.name == name) {
            return Err(ConfigError::Unknown {
                name: name.to_string(),
                origin: origin.to_string(),
            });
        }
        self.values.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// Applies a TOML document. Dotted keys and nested tables both flatten to dotted names,
    /// so `log.retention.ms = 1000` and `[log] retention.ms = 1000` mean the same.
    pub fn apply_toml(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut flat = Vec::new();
        flatten_toml("", &toml::Value::Table(table), &mut flat);
        let origin = format!("config file {}", path.display());
        for (name, value) in flat {
            self.set(&name, &value, &origin)?;
        }
        Ok(())
    }

    /// Applies a TOML file.
    pub fn apply_toml_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.apply_toml(&text, path)
    }

    /// Applies `GREGOR_*` variables: `GREGOR_LOG_RETENTION_MS` sets `log.retention.ms`.
    /// `GREGOR_LOG` (the tracing filter read by the CLI) maps to `log.level`. Other tools
    /// share the `GREGOR_` prefix (`GREGOR_BIN`, ...), so variables that match no setting are
    /// skipped and returned, for the caller to mention in its log.
    pub fn apply_env<I>(&mut self, vars: I) -> Result<Vec<String>, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut ignored = Vec::new();
        for (var, value) in vars {
            let Some(rest) = var.strip_prefix("GREGOR_") else {
                continue;
            };
            if rest == "LOG" {
                self.set("log.level", &value, &origin_env(&var))?;
                continue;
            }
            let wanted = rest.to_ascii_lowercase();
            match SETTINGS.iter().find(|s| s.name.replace('.', "_") == wanted) {
                Some(spec) => self.set(spec.name, &value, &origin_env(&var))?,
                None => ignored.push(var),
            }
        }
        Ok(ignored)
    }

    /// Validates and builds the configuration.
    pub fn build(&self) -> Result<BrokerConfig, ConfigError> {
        let get = |name: &str| self.values.get(name).cloned().unwrap_or_default();
        let listen_text = get("listen");
        let listen = parse_addr("listen", &listen_text)?;
        let advertised_text = get("advertised.listener");
        let (advertised_host, advertised_port) = if advertised_text.is_empty() {
            (listen.ip().to_string(), listen.port())
        } else {
            split_host_port("advertised.listener", &advertised_text)?
        };
        let storage_backend = match get("storage.backend").to_ascii_lowercase().as_str() {
            "dma" => StorageBackend::Dma,
            "std" => StorageBackend::Std,
            other => {
                return Err(invalid("storage.backend", other, "expected dma or std"));
            }
        };
        let num_partitions: i32 = parse_num("num.partitions", &get("num.partitions"))?;
        if num_partitions < 1 {
            return Err(invalid(
                "num.partitions",
                &get("num.partitions"),
                "must be >= 1",
            ));
        }
        let socket_request_max_bytes: usize =
            parse_num("socket.request.max.bytes", &get("socket.request.max.bytes"))?;
        if !(64..=i32::MAX as usize).contains(&socket_request_max_bytes) {
            return Err(invalid(
                "socket.request.max.bytes",
                &get("socket.request.max.bytes"),
                "must be between 64 and 2147483647",
            ));
        }
        // Raised to one largest request if set lower, so every valid request can be read.
        let queued_max_request_bytes: usize =
            parse_num::<usize>("queued.max.request.bytes", &get("queued.max.request.bytes"))?
                .max(socket_request_max_bytes);
        let max_connections: usize = parse_num("max.connections", &get("max.connections"))?;
        if max_connections == 0 {
            return Err(invalid(
                "max.connections",
                &get("max.connections"),
                "must be >= 1",
            ));
        }
        let produce_pipeline_depth: usize =
            parse_num("produce.pipeline.depth", &get("produce.pipeline.depth"))?;
        if !(1..=PRODUCE_PIPELINE_DEPTH_MAX).contains(&produce_pipeline_depth) {
            return Err(invalid(
                "produce.pipeline.depth",
                &get("produce.pipeline.depth"),
                "must be between 1 and 1024",
            ));
        }
        let fetch_max_bytes: usize = parse_num("fetch.max.bytes", &get("fetch.max.bytes"))?;
        if fetch_max_bytes == 0 || fetch_max_bytes > i32::MAX as usize {
            return Err(invalid(
                "fetch.max.bytes",
                &get("fetch.max.bytes"),
                "out of range",
            ));
        }
        let mut topic_defaults = BTreeMap::new();
        for (broker_name, topic_name) in crate::topic_config::BROKER_DEFAULT_NAMES {
            topic_defaults.insert(topic_name.to_string(), get(broker_name));
        }
        // Validate the defaults with the same rules topic overrides face.
        for (name, value) in &topic_defaults {
            crate::topic_config::validate(name, value).map_err(|reason| {
                let broker_name = crate::topic_config::BROKER_DEFAULT_NAMES
                    .iter()
                    .find(|(_, t)| t == name)
                    .map(|(b, _)| *b)
                    .unwrap_or("?");
                invalid(broker_name, value, &reason)
            })?;
        }
        let cores = parse_num("cores", &get("cores"))?;
        let tail_cache_requested_bytes_per_core: usize = parse_num(
            "tail.cache.bytes.per.core",
            &get("tail.cache.bytes.per.core"),
        )?;
        let registered_memory = get("io.registered.memory.bytes.per.core");
        let io_registered_memory_bytes_per_core = parse_registered_memory(
            &registered_memory,
            tail_cache_requested_bytes_per_core,
            cores,
        )?;
        let registered_auto = registered_memory.trim().eq_ignore_ascii_case("auto");
        let tail_cache_bytes_per_core = if registered_auto && storage_backend == StorageBackend::Dma
        {
            tail_cache_requested_bytes_per_core.min(
                io_registered_memory_bytes_per_core.saturating_sub(REGISTERED_BYTES_BEYOND_CACHE),
            )
        } else {
            tail_cache_requested_bytes_per_core
        };
        Ok(BrokerConfig {
            listen,
            advertised_host,
            advertised_port,
            data_dir: PathBuf::from(get("data.dir")),
            cores,
            cores_pinned: parse_bool("cores.pinned", &get("cores.pinned"))?,
            node_id: parse_num("node.id", &get("node.id"))?,
            storage_backend,
            auto_create_topics: parse_bool(
                "auto.create.topics.enable",
                &get("auto.create.topics.enable"),
            )?,
            num_partitions,
            socket_request_max_bytes,
            queued_max_request_bytes,
            max_connections,
            produce_pipeline_depth,
            fetch_max_bytes,
            fetch_cold_pages_keep: parse_bool(
                "fetch.cold.pages.keep",
                &get("fetch.cold.pages.keep"),
            )?,
            fetch_cold_reads_direct: parse_cold_reads(&get("fetch.cold.reads"))?,
            fetch_read_ahead_bytes_per_core: parse_num(
                "fetch.read.ahead.bytes.per.core",
                &get("fetch.read.ahead.bytes.per.core"),
            )?,
            fetch_cold_read_bytes_per_core: parse_num(
                "fetch.cold.read.bytes.per.core",
                &get("fetch.cold.read.bytes.per.core"),
            )?,
            tail_cache_bytes_per_core,
            tail_cache_requested_bytes_per_core,
            segment_zeros_ahead: parse_bool(
                "log.segment.zeros.ahead",
                &get("log.segment.zeros.ahead"),
            )?,
            segment_allocate_ahead: parse_bool(
                "log.segment.allocate.ahead",
                &get("log.segment.allocate.ahead"),
            )?,
            segment_recycle: parse_bool("log.segment.recycle", &get("log.segment.recycle"))?,
            io_registered_memory_bytes_per_core,
            retention_check_interval_ms: parse_num(
                "log.retention.check.interval.ms",
                &get("log.retention.check.interval.ms"),
            )?,
            log_level: get("log.level"),
            topic_defaults,
            coordinator: crate::group::CoordinatorSettings::from_config(&get)?,
        })
    }
}

impl BrokerConfig {
    /// The defaults alone (what `gregor broker` with no flags runs with).
    pub fn defaults() -> Self {
        match ConfigBuilder::new().build() {
            Ok(config) => config,
            // The defaults are constants checked by a unit test; failing here is a bug.
            Err(e) => unreachable!("built-in defaults are invalid: {e}"),
        }
    }
}

fn flatten_toml(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten_toml(&name, value, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

fn invalid(name: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Registered memory beyond the tail cache under `auto`: room for the writes in flight and
/// the buffers of appends too small to be cached as they are.
pub const REGISTERED_BYTES_BEYOND_CACHE: usize = 64 << 20;

/// The most io_uring registers as one buffer: it refuses more with `EFAULT` (`SZ_1G` in
/// `io_buffer_validate`, every kernel since 5.1), and glommio registers a core's whole region
/// as one buffer. Registration then fails as a whole and the region's pages go untouched until
/// writes fault them in one by one: on this host the first seconds of a 600 MB/s load had
/// latencies of a second (BENCHMARKS, session 16).
pub const REGISTERED_BYTES_MAX: usize = 1 << 30;

/// `io.registered.memory.bytes.per.core`: glommio allocates it at start and panics if it
/// cannot, so more than a quarter of the machine's memory per core is refused here, and so is
/// more than io_uring can register ([`REGISTERED_BYTES_MAX`]). `auto` takes at most half the
/// machine's memory over all cores in use (`cores_in_use`), since it is taken at start rather
/// than as the cache fills, and at most [`REGISTERED_BYTES_MAX`].
fn parse_registered_memory(
    value: &str,
    tail_cache_bytes: usize,
    cores: usize,
) -> Result<usize, ConfigError> {
    let name = "io.registered.memory.bytes.per.core";
    // SAFETY: sysconf only reads system parameters.
    let (pages, page_bytes) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let physical_bytes = (pages.max(0) as u128) * (page_bytes.max(0) as u128);
    // A share of the machine's memory; no bound when it is unknown.
    let share_of_memory = |divisor: u128| match physical_bytes {
        0 => u128::MAX,
        known => known / divisor,
    };
    let limit_bytes = share_of_memory(4);
    if value.trim().eq_ignore_ascii_case("auto") {
        let all_cores = share_of_memory(2 * cores_in_use(cores) as u128);
        let wanted = tail_cache_bytes.saturating_add(REGISTERED_BYTES_BEYOND_CACHE) as u128;
        return Ok(wanted.min(all_cores).min(REGISTERED_BYTES_MAX as u128) as usize);
    }
    let bytes: usize = parse_num(name, value)?;
    if bytes > REGISTERED_BYTES_MAX {
        return Err(invalid(
            name,
            value,
            &format!("more than io_uring registers as one buffer ({REGISTERED_BYTES_MAX} bytes)"),
        ));
    }
    if bytes as u128 > limit_bytes {
        return Err(invalid(
            name,
            value,
            "more than a quarter of the machine's memory per core",
        ));
    }
    Ok(bytes)
}

/// The executors the broker runs for the `cores` setting: 0 means one per CPU this process
/// may use.
pub fn cores_in_use(configured: usize) -> usize {
    if configured != 0 {
        return configured;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn parse_num<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(name, value, "not a valid number"))
}

/// `fetch.cold.reads`: true for `direct`.
fn parse_cold_reads(value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "direct" => Ok(true),
        "sendfile" => Ok(false),
        _ => Err(invalid(
            "fetch.cold.reads",
            value,
            "expected direct or sendfile",
        )),
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(name, value, "expected true or false")),
    }
}

fn parse_addr(name: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let text = value.trim().trim_start_matches("PLAINTEXT://");
    text.to_socket_addrs()
        .map_err(|e| invalid(name, value, &e.to_string()))?
        .next()
        .ok_or_else(|| invalid(name, value, "resolves to no address"))
}

fn split_host_port(name: &str, value: &str) -> Result<(String, u16), ConfigError> {
    let text = value.trim().trim_start_matches("PLAINTEXT://");
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| invalid(name, value, "expected HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|_| invalid(name, value, "bad port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid(name, value, "empty host"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build() {
        let c = BrokerConfig::defaults();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.socket_request_max_bytes, 100 << 20);
        assert_eq!(c.num_partitions, 1);
        assert!(c.auto_create_topics);
        assert_eq!(c.storage_backend, StorageBackend::Dma);
        assert_eq!(c.topic_defaults["retention.ms"], "604800000");
        assert_eq!(c.advertised_host, "127.0.0.1");
        assert_eq!(c.queued_max_request_bytes, 256 << 20);
        let mut b = ConfigBuilder::new();
        b.set("queued.max.request.bytes", "10", "flag").unwrap();
        assert_eq!(
            b.build().unwrap().queued_max_request_bytes,
            100 << 20,
            "raised to socket.request.max.bytes"
        );
    }

    #[test]
    fn layers_override_in_order() {
        let mut b = ConfigBuilder::new();
        b.apply_toml(
            "num.partitions = 3\nlog.retention.ms = 1000\n[auto.create.topics]\nenable = false\n",
            Path::new("x.toml"),
        )
        .unwrap();
        b.apply_env(vec![
            ("GREGOR_NUM_PARTITIONS".to_string(), "5".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ])
        .unwrap();
        b.set("log.retention.ms", "2000", "flag").unwrap();
        let c = b.build().unwrap();
        assert_eq!(c.num_partitions, 5);
        assert!(!c.auto_create_topics);
        assert_eq!(c.topic_defaults["retention.ms"], "2000");
    }

    #[test]
    fn unknown_and_invalid_are_errors() {
        let mut b = ConfigBuilder::new();
        assert!(matches!(
            b.apply_toml("no.such = 1", Path::new("x")),
            Err(ConfigError::Unknown { .. })
        ));
        assert_eq!(
            b.apply_env(vec![("GREGOR_BIN".to_string(), "/x".to_string())])
                .unwrap(),
            vec!["GREGOR_BIN".to_string()]
        );
        assert!(matches!(
            b.apply_env(vec![("GREGOR_NUM_PARTITIONS".to_string(), "x".to_string())])
                .and_then(|_| b.build()),
            Err(ConfigError::Invalid { .. })
        ));
        let mut b = ConfigBuilder::new();
        b.set("num.partitions", "0", "flag").unwrap();
        assert!(b.build().is_err());
        let mut b = ConfigBuilder::new();
        b.set("log.message.timestamp.type", "Whenever", "flag")
            .unwrap();
        assert!(b.build().is_err());
        let mut b = ConfigBuilder::new();
        b.set("storage.backend", "tape", "flag").unwrap();
        assert!(b.build().is_err());
    }

    #[test]
    fn registered_memory_is_bounded() {
        let set_by_hand = |value: &str| {
            let mut b = ConfigBuilder::new();
            b.set("io.registered.memory.bytes.per.core", value, "flag")
                .unwrap();
            b.build().map(|c| c.io_registered_memory_bytes_per_core)
        };
        assert_eq!(set_by_hand("67108864").unwrap(), 64 << 20);
        // `auto`: the tail cache plus 64 MiB, all cores together never past half the machine.
        let auto = |cache: &str, cores: &str| {
            let mut b = ConfigBuilder::new();
            b.set("tail.cache.bytes.per.core", cache, "flag").unwrap();
            b.set("cores", cores, "flag").unwrap();
            b.build().unwrap().io_registered_memory_bytes_per_core
        };
        assert_eq!(auto("268435456", "2"), (256 + 64) << 20);
        assert_eq!(auto("0", "2"), 64 << 20);
        let huge = (1u64 << 50).to_string();
        // SAFETY: sysconf only reads system parameters.
        let physical_bytes = unsafe {
            libc::sysconf(libc::_SC_PHYS_PAGES) as u128 * libc::sysconf(libc::_SC_PAGESIZE) as u128
        };
        for cores in [1u128, 4, 64] {
            let share = (physical_bytes / (2 * cores)).min(REGISTERED_BYTES_MAX as u128);
            assert_eq!(
                auto(&huge, &cores.to_string()) as u128,
                share,
                "{cores} cores"
            );
        }
        // io_uring registers at most 1 GiB as one buffer: `auto` stops there, a number past
        // it is refused (registration would fail as a whole).
        assert_eq!(auto(&(4u64 << 30).to_string(), "1"), 1 << 30);
        assert_eq!(auto(&((1u64 << 30) - (64 << 20)).to_string(), "1"), 1 << 30);
        assert_eq!(set_by_hand("1073741824").unwrap(), 1 << 30);
        // Under `auto` (O_DIRECT backend) the cache is cut to what fits in the region with
        // room for the writes in flight; with a region set by hand, or the std backend, it stays.
        let cache = |sets: &[(&str, &str)]| {
            let mut b = ConfigBuilder::new();
            for (k, v) in sets {
                b.set(k, v, "flag").unwrap();
            }
            let c = b.build().unwrap();
            (
                c.tail_cache_requested_bytes_per_core,
                c.tail_cache_bytes_per_core,
            )
        };
        let two_gib = (2u64 << 30).to_string();
        let one_core = [
            ("tail.cache.bytes.per.core", two_gib.as_str()),
            ("cores", "1"),
        ];
        assert_eq!(cache(&one_core), (2 << 30, 960 << 20));
        assert_eq!(
            cache(&[("tail.cache.bytes.per.core", "268435456")]),
            (256 << 20, 256 << 20)
        );
        let by_hand = [
            one_core[0],
            one_core[1],
            ("io.registered.memory.bytes.per.core", "67108864"),
        ];
        assert_eq!(cache(&by_hand), (2 << 30, 2 << 30));
        let std_backend = [one_core[0], one_core[1], ("storage.backend", "std")];
        assert_eq!(cache(&std_backend), (2 << 30, 2 << 30));
        for bad in ["1073745920", "1000000000000000", "-1", "lots"] {
            assert!(set_by_hand(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn config_doc_lists_every_setting() {
        let doc = include_str!("../../docs/CONFIG.md");
        for spec in SETTINGS {
            assert!(
                doc.contains(&format!("| `{}` |", spec.name)),
                "docs/CONFIG.md misses {}",
                spec.name
            );
        }
    }

    #[test]
    fn advertised_listener_parses() {
        let mut b = ConfigBuilder::new();
        b.set(
            "advertised.listener",
            "PLAINTEXT://broker.example:19092",
            "flag",
        )
        .unwrap();
        let c = b.build().unwrap();
        assert_eq!(c.advertised_host, "broker.example");
        assert_eq!(c.advertised_port, 19092);
    }
}
