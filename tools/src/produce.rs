//! `gregor produce`: console producer, one record per stdin line, over plain Kafka protocol.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use clap::Args;
use gregor_bench::cli::{self, DEFAULT_BOOTSTRAP, invalid};
use gregor_bench::client::producer::AckCallback;
use gregor_bench::client::{
    BatchAck, ClientConfig, Cluster, Compression, Producer, ProducerConfig,
};

/// `gregor produce` arguments.
#[derive(Args)]
pub struct ProduceArgs {
    /// Broker to bootstrap from (host:port, comma-separated list allowed).
    #[arg(long, default_value = DEFAULT_BOOTSTRAP, env = "GREGOR_BOOTSTRAP")]
    bootstrap: String,
    /// Topic to write to.
    #[arg(long)]
    topic: String,
    /// Split each line at the first occurrence of this string into key and value.
    #[arg(long)]
    key_separator: Option<String>,
    /// Header added to every record, repeatable: --header source=cli
    #[arg(long = "header", value_parser = cli::parse_kv)]
    headers: Vec<(String, String)>,
    /// Write every record to this partition (default: murmur2 of the key, or sticky).
    #[arg(long)]
    partition: Option<i32>,
    /// 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = cli::parse_acks)]
    acks: i16,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = cli::parse_compression)]
    compression: Compression,
    /// Seal a batch at this many bytes.
    #[arg(long, default_value_t = 16384)]
    batch_bytes: usize,
    /// Send a non-full batch after this many milliseconds.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Request timeout in milliseconds.
    #[arg(long, default_value_t = 30000)]
    timeout_ms: u64,
}

/// Largest chunk read from stdin at once.
const STDIN_CHUNK_BYTES: usize = 256 * 1024;
/// Longest line accepted (records larger than this are refused, not buffered without bound).
const MAX_LINE_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
}

/// Runs `gregor produce`.
pub fn run(args: ProduceArgs) -> ExitCode {
    cli::run(move || async move {
        let mut ccfg = ClientConfig::new(&args.bootstrap);
        ccfg.request_timeout = Duration::from_millis(args.timeout_ms);
        let cluster = Cluster::connect(ccfg).await?;
        let pcfg = ProducerConfig {
            acks: args.acks,
            batch_bytes: args.batch_bytes,
            linger: Duration::from_millis(args.linger_ms),
            compression: args.compression,
            request_timeout: Duration::from_millis(args.timeout_ms),
            ..Default::default()
        };
        let tally = Rc::new(RefCell::new(Tally::default()));
        let t = tally.clone();
        let on_ack: AckCallback = Rc::new(move |b: &BatchAck<'_>| {
            let mut t = t.borrow_mut();
            match b.error {
                None => t.ok += b.record_count as u64,
                Some(e) => {
                    t.failed += b.record_count as u64;
                    if t.first_error.is_none() {
                        eprintln!("error: {e}");
                        t.first_error = Some(e.to_string());
                    }
                }
            }
        });
        let producer = Producer::new(cluster, &args.topic, pcfg, on_ack).await?;
        let headers: Vec<(&str, Option<&[u8]>)> = args
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_bytes())))
            .collect();
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = cli::read_stdin_chunk(STDIN_CHUNK_BYTES)
                .await
                .map_err(|e| invalid(format!("reading stdin: {e}")))?;
            let eof = chunk.is_empty();
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
                let line = &pending[start..start + nl];
                start += nl + 1;
                send_line(&producer, &args, &headers, line).await?;
            }
            pending.drain(..start);
            if eof {
                if !pending.is_empty() {
                    let line = std::mem::take(&mut pending);
                    send_line(&producer, &args, &headers, &line).await?;
                }
                break;
            }
            if pending.len() > MAX_LINE_BYTES {
                return Err(invalid(format!(
                    "input line longer than {MAX_LINE_BYTES} bytes"
                )));
            }
        }
        producer.close().await?;
        let t = tally.borrow();
        eprintln!(
            "{} records produced to {}{}",
            t.ok,
            args.topic,
            if t.failed > 0 {
                format!(", {} failed", t.failed)
            } else {
                String::new()
            }
        );
        match &t.first_error {
            Some(e) => Err(invalid(format!("{} records not produced: {e}", t.failed))),
            None => Ok(()),
        }
    })
}

async fn send_line(
    producer: &Producer,
    args: &ProduceArgs,
    headers: &[(&str, Option<&[u8]>)],
    line: &[u8],
) -> gregor_bench::client::Result<()> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (key, value) = match &args.key_separator {
        Some(sep) if !sep.is_empty() => match find(line, sep.as_bytes()) {
            Some(i) => (Some(&line[..i]), &line[i + sep.len()..]),
            None => (None, line),
        },
        _ => (None, line),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    producer
        .send(args.partition, key, Some(value), headers, now_ms, 0)
        .await?;
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
