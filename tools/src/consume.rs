//! `gregor consume`: console consumer of assigned partitions, over plain Kafka protocol.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use gregor_bench::cli::{self, DEFAULT_BOOTSTRAP, invalid};
use gregor_bench::client::{ClientConfig, Cluster, Consumer, ConsumerConfig, StartOffset};

/// `gregor consume` arguments.
#[derive(Args)]
pub struct ConsumeArgs {
    /// Broker to bootstrap from (host:port, comma-separated list allowed).
    #[arg(long, default_value = DEFAULT_BOOTSTRAP, env = "GREGOR_BOOTSTRAP")]
    bootstrap: String,
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Start at the earliest offset (default: only new records).
    #[arg(long)]
    from_beginning: bool,
    /// Read only this partition, repeatable (default: all).
    #[arg(long = "partition")]
    partitions: Vec<i32>,
    /// Start at this offset (in every assigned partition).
    #[arg(long, conflicts_with = "from_beginning")]
    offset: Option<i64>,
    /// Exit after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Print the key before the value.
    #[arg(long)]
    print_key: bool,
    /// Print headers (k:v,k2:v2) before key and value.
    #[arg(long)]
    print_headers: bool,
    /// Print partition:offset before everything else.
    #[arg(long)]
    print_offset: bool,
    /// Print the record timestamp (ms).
    #[arg(long)]
    print_timestamp: bool,
    /// Separator between printed fields.
    #[arg(long, default_value = "\t")]
    separator: String,
    /// Exit (successfully) when no record arrived for this many milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Exit at the end of the partitions as they were at start.
    #[arg(long)]
    exit_at_end: bool,
    /// Consumer groups are not supported yet.
    #[arg(long, hide = true)]
    group: Option<String>,
}

/// Runs `gregor consume`.
pub fn run(args: ConsumeArgs) -> ExitCode {
    cli::run(move || async move {
        if args.group.is_some() {
            return Err(invalid(
                "--group: consumer groups are not supported yet; use --partition/--from-beginning",
            ));
        }
        if args.count == Some(0) {
            return Ok(());
        }
        let cluster = Cluster::connect(ClientConfig::new(&args.bootstrap)).await?;
        let cfg = ConsumerConfig {
            max_wait_ms: 500,
            ..Default::default()
        };
        let mut consumer = Consumer::new(cluster, &args.topic, cfg);
        let partitions: Vec<i32> = if args.partitions.is_empty() {
            (0..consumer.partition_count().await?).collect()
        } else {
            args.partitions.clone()
        };
        let start = match (args.offset, args.from_beginning) {
            (Some(o), _) => StartOffset::Offset(o),
            (None, true) => StartOffset::Earliest,
            (None, false) => StartOffset::Latest,
        };
        consumer.assign(&partitions, start).await?;
        let ends = if args.exit_at_end {
            Some(consumer.cluster_list_latest(&partitions).await?)
        } else {
            None
        };
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut printed = 0u64;
        let mut last_record = Instant::now();
        let sep = args.separator.as_bytes();
        loop {
            if let Some(ends) = &ends {
                let done = consumer
                    .positions()
                    .iter()
                    .all(|(p, pos)| *pos >= ends.get(p).copied().unwrap_or(0));
                if done {
                    break;
                }
            }
            let fetched = consumer.poll().await?;
            for f in &fetched {
                for b in &f.batches {
                    if b.is_control {
                        continue;
                    }
                    for r in b.records() {
                        let r = r?;
                        if r.offset < f.skip_below {
                            continue;
                        }
                        let w = |out: &mut std::io::BufWriter<_>| -> std::io::Result<()> {
                            if args.print_offset {
                                write!(out, "{}:{}", f.partition, r.offset)?;
                                out.write_all(sep)?;
                            }
                            if args.print_timestamp {
                                write!(out, "{}", r.timestamp_ms)?;
                                out.write_all(sep)?;
                            }
                            if args.print_headers {
                                for (i, h) in r.headers().enumerate() {
                                    let (k, v) = h.map_err(std::io::Error::other)?;
                                    if i > 0 {
                                        out.write_all(b",")?;
                                    }
                                    out.write_all(k)?;
                                    out.write_all(b":")?;
                                    out.write_all(v.unwrap_or(b""))?;
                                }
                                out.write_all(sep)?;
                            }
                            if args.print_key {
                                out.write_all(r.key.unwrap_or(b""))?;
                                out.write_all(sep)?;
                            }
                            out.write_all(r.value.unwrap_or(b""))?;
                            out.write_all(b"\n")
                        };
                        w(&mut out).map_err(|e| invalid(format!("writing stdout: {e}")))?;
                        printed += 1;
                        last_record = Instant::now();
                        if Some(printed) == args.count {
                            out.flush()
                                .map_err(|e| invalid(format!("writing stdout: {e}")))?;
                            return Ok(());
                        }
                    }
                }
            }
            out.flush()
                .map_err(|e| invalid(format!("writing stdout: {e}")))?;
            if let Some(t) = args.timeout_ms
                && last_record.elapsed() >= Duration::from_millis(t)
            {
                break;
            }
        }
        if let Some(n) = args.count
            && printed < n
        {
            return Err(invalid(format!(
                "only {printed} of {n} records arrived before the timeout"
            )));
        }
        Ok(())
    })
}
