//! Measurement: shared progress counters (atomics, read by the progress bar and the throughput
//! sampler), per-executor latency histograms (merged at the end), and the final summary printed
//! as a table or as one JSON object.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to one hour.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// Counters shared by all executors of one run.
#[derive(Debug, Default)]
pub struct Progress {
    /// Records acknowledged (producers) or received (consumers), warm-up included.
    pub records: AtomicU64,
    /// Payload bytes of those records.
    pub bytes: AtomicU64,
    /// Records that failed.
    pub errors: AtomicU64,
    /// Set when the load generators are done.
    pub done: AtomicBool,
    /// Consumers that have their partitions assigned and are fetching.
    pub ready: AtomicU64,
    /// Highest latency (µs) recorded since the sampler last took it.
    pub latency_max_us: AtomicU64,
}

impl Progress {
    /// A new shared counter set.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

/// Throughput (and worst latency) over time: one sample per interval, taken by the main thread.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    /// Seconds since start of each sample.
    pub t_sec: Vec<f64>,
    /// Records per second in the interval ending at `t_sec`.
    pub records_per_sec: Vec<f64>,
    /// MB per second in that interval.
    pub mb_per_sec: Vec<f64>,
    /// Highest latency (ms) measured in that interval (0 when none was): a stall shows here
    /// as one bad second, where the percentiles only say that one happened.
    pub latency_max_ms: Vec<f64>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 99.99th percentile.
    pub p9999: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl LatencyMs {
    /// From a histogram in microseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: h.max() as f64 / 1000.0,
            mean: h.mean() / 1000.0,
        }
    }
}

/// The result of one benchmark run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// `produce`, `consume` or `e2e`.
    pub mode: String,
    /// Records counted (acknowledged for produce, received for consume/e2e), after warm-up.
    pub records: u64,
    /// Failed records.
    pub errors: u64,
    /// Payload bytes counted.
    pub bytes: u64,
    /// Measured duration.
    pub duration_sec: f64,
    /// Records per second.
    pub records_per_sec: f64,
    /// Payload MB (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// Latency: produce = send (scheduled time with --rate) to ack; e2e = send to receive.
    pub latency_ms: LatencyMs,
    /// Produce: from the request being written to its acknowledgment, per record. The
    /// broker's and the network's share of `latency_ms`, without the wait to fill and send a
    /// batch (linger, batch size, requests in flight ahead of it in the client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_latency_ms: Option<LatencyMs>,
    /// Target rate, if open loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rate: Option<f64>,
    /// Verification outcome (e2e --verify).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<super::verify::VerifyReport>,
    /// First error message, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Throughput samples over time.
    pub series: Series,
    /// Free-form settings of the run (for reports).
    pub settings: serde_json::Value,
}

impl Summary {
    /// Fills rates from records, bytes and duration.
    pub fn finish_rates(&mut self) {
        let d = self.duration_sec.max(1e-9);
        self.records_per_sec = self.records as f64 / d;
        self.mb_per_sec = self.bytes as f64 / 1e6 / d;
    }

    /// Human-readable summary.
    pub fn print_text(&self) {
        outln!(
            "{}: {} records in {:.2} s: {:.0} records/s, {:.2} MB/s, {} errors",
            self.mode,
            self.records,
            self.duration_sec,
            self.records_per_sec,
            self.mb_per_sec,
            self.errors
        );
        if let Some(r) = self.target_rate {
            outln!("  target rate {r:.0} records/s (open loop; latency from scheduled send time)");
        }
        let l = &self.latency_ms;
        if l.max > 0.0 {
            outln!(
                "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.3}  mean {:.3}",
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.p9999,
                l.max,
                l.mean
            );
        }
        if let Some(l) = self.request_latency_ms.as_ref().filter(|l| l.max > 0.0) {
            outln!(
                "  of which request ms (written to acknowledged): p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                l.p50,
                l.p99,
                l.p999,
                l.max
            );
        }
        if let Some(v) = &self.verify {
            outln!(
                "  verify: {} acked, {} received, {} lost, {} duplicated, {} reordered: {}",
                v.acked,
                v.received,
                v.lost,
                v.duplicated,
                v.reordered,
                if v.ok() { "OK" } else { "FAILED" }
            );
            for e in &v.examples {
                outln!("    {e}");
            }
        }
        if let Some(e) = &self.first_error {
            outln!("  first error: {e}");
        }
    }
}

impl Series {
    /// One sample: the rates of the interval ending `since_start`, and the worst latency
    /// recorded in it (taken from `progress`).
    fn push(&mut self, since_start: Duration, rps: f64, mbps: f64, progress: &Progress) {
        self.t_sec.push(since_start.as_secs_f64());
        self.records_per_sec.push(rps);
        self.mb_per_sec.push(mbps);
        self.latency_max_ms.push(take_latency_max_ms(progress));
    }
}

/// The highest latency recorded since the last call, in ms.
fn take_latency_max_ms(progress: &Progress) -> f64 {
    progress.latency_max_us.swap(0, Ordering::Relaxed) as f64 / 1000.0
}

/// Samples `progress` every `interval` until `done`, driving the progress bar; returns the
/// throughput series.
pub fn sample_until_done(
    progress: &Progress,
    interval: Duration,
    label: &str,
    expected_records: Option<u64>,
    show_bar: bool,
) -> Series {
    let bar = if show_bar {
        let b = match expected_records {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} {prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        b.set_style(style);
        b.set_prefix(label.to_string());
        b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let start = Instant::now();
    let mut series = Series::default();
    let (mut last_r, mut last_b, mut last_t) = (0u64, 0u64, start);
    let tick = Duration::from_millis(100);
    let mut next_sample = start + interval;
    while !progress.done.load(Ordering::Acquire) {
        std::thread::sleep(tick);
        let now = Instant::now();
        let r = progress.records.load(Ordering::Relaxed);
        bar.set_position(r);
        if now >= next_sample {
            let b = progress.bytes.load(Ordering::Relaxed);
            let dt = now.duration_since(last_t).as_secs_f64();
            let rps = (r - last_r) as f64 / dt;
            let mbps = (b - last_b) as f64 / 1e6 / dt;
            series.push(now.duration_since(start), rps, mbps, progress);
            bar.set_message(format!(
                "{rps:.0} rec/s {mbps:.1} MB/s, {} errors",
                progress.errors.load(Ordering::Relaxed)
            ));
            (last_r, last_b, last_t) = (r, b, now);
            next_sample += interval;
        }
    }
    // A last, partial interval, so short runs still have a data point.
    let now = Instant::now();
    let dt = now.duration_since(last_t).as_secs_f64();
    if dt > 0.05 {
        let r = progress.records.load(Ordering::Relaxed);
        let b = progress.bytes.load(Ordering::Relaxed);
        let (rps, mbps) = ((r - last_r) as f64 / dt, (b - last_b) as f64 / 1e6 / dt);
        series.push(now.duration_since(start), rps, mbps, progress);
    }
    bar.finish_and_clear();
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sample_takes_the_worst_latency_since_the_last() {
        let p = Progress::new();
        p.latency_max_us.fetch_max(2_500, Ordering::Relaxed);
        p.latency_max_us.fetch_max(7_500, Ordering::Relaxed);
        p.latency_max_us.fetch_max(3_000, Ordering::Relaxed);
        assert_eq!(take_latency_max_ms(&p), 7.5);
        // A quiet interval reports 0, not the previous interval's worst.
        assert_eq!(take_latency_max_ms(&p), 0.0);
    }
}
