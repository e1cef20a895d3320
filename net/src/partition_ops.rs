//! Partition operations, run on the core that owns the partitions (see [`crate::service`]).

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::ResponseError;

use crate::cores::{
    CoreContext, DeleteRecordsPart, DeleteRecordsResult, FetchPart, FetchPartResult, OffsetQuery,
    OffsetResult, ProducePart, ProducePartResult, WaitPart,
};
use crate::disk_activity::READ_AHEAD_QUIET_MS;
use crate::join::join_all;
use crate::log::SendOutcome;
use crate::registry::Partition;
use gregor_engine::{ColdReadPace, SendData};

/// Why a partition is not served here, as a Kafka error code.
fn missing_partition_error(ctx: &CoreContext, topic: &str, partition: i32) -> i16 {
    match ctx.metadata().topics.get(topic) {
        Some(t) if partition >= 0 && partition < t.partitions => {
            // Known but not open here: being created or failed to open; clients retry.
            tracing::warn!(
                core = ctx.core_id,
                topic,
                partition,
                "partition not open on its owner core"
            );
            ResponseError::NotLeaderOrFollower.code()
        }
        _ => ResponseError::UnknownTopicOrPartition.code(),
    }
}

fn lookup(ctx: &CoreContext, topic: &str, partition: i32) -> Result<Rc<Partition>, i16> {
    ctx.registry
        .get(topic, partition)
        .ok_or_else(|| missing_partition_error(ctx, topic, partition))
}

/// Appends each part; with `acks == -1` also waits for the data to be flushed. The parts are
/// appended concurrently (each partition is its own log and file, so their writes overlap
/// instead of waiting one behind the other), then flushed concurrently (one fdatasync per
/// partition, all in flight at once). Results keep request order; two parts for the same
/// partition keep theirs too, since a log queues appends in call order.
pub async fn produce(
    ctx: &Rc<CoreContext>,
    parts: Vec<ProducePart>,
    acks: i16,
) -> Vec<ProducePartResult> {
    let appends: Vec<_> = parts
        .into_iter()
        .map(|part| append_part(ctx, part))
        .collect();
    let appended = join_all(appends).await;
    let mut results = Vec::with_capacity(appended.len());
    let mut to_flush = Vec::new();
    for (result, partition) in appended {
        if let Some(partition) = partition.filter(|_| acks == -1 && result.error_code == 0) {
            to_flush.push((results.len(), partition));
        }
        results.push(result);
    }
    let flushes: Vec<_> = to_flush
        .iter()
        .map(|(_, partition)| partition.log.flush())
        .collect();
    for ((i, partition), flushed) in to_flush.iter().zip(join_all(flushes).await) {
        if let Err(code) = flushed {
            tracing::warn!(topic = %partition.topic, partition = partition.index, code, "flush failed");
            results[*i] = ProducePartResult::error(code);
        }
    }
    results
}

/// Appends one part; returns its result and, if it was appended, its partition.
async fn append_part(
    ctx: &CoreContext,
    part: ProducePart,
) -> (ProducePartResult, Option<Rc<Partition>>) {
    let partition = match lookup(ctx, &part.topic, part.partition) {
        Ok(p) => p,
        Err(code) => return (ProducePartResult::error(code), None),
    };
    let Some(records) = part.records.filter(|r| !r.is_empty()) else {
        return (
            ProducePartResult::error(ResponseError::CorruptMessage.code()),
            None,
        );
    };
    ctx.appends.note_append();
    match partition.log.append(records).await {
        Ok(outcome) => {
            partition.appended.notify_all();
            let result = ProducePartResult {
                error_code: 0,
                base_offset: outcome.base_offset,
                log_append_time_ms: outcome.log_append_time_ms,
                log_start_offset: outcome.log_start_offset,
                error_message: None,
            };
            (result, Some(partition))
        }
        Err(code) => {
            tracing::debug!(topic = %part.topic, partition = part.partition, code, "append rejected");
            (ProducePartResult::error(code), None)
        }
    }
}

/// A part of a fetch after its read (or its failed lookup).
enum PartRead {
    Missing(i16),
    Read(Rc<Partition>, Result<SendOutcome, i16>),
}

async fn read_part(
    ctx: &CoreContext,
    part: &FetchPart,
    limit: usize,
    disk_bytes_max: usize,
) -> PartRead {
    match lookup(ctx, &part.topic, part.partition) {
        Ok(partition) => {
            // Reads ahead only while the disk is the consumers' (`disk_activity.rs`).
            let pace = if ctx.appends.quiet_for(READ_AHEAD_QUIET_MS) {
                ColdReadPace::Ahead
            } else {
                ColdReadPace::Paced
            };
            let outcome = partition
                .log
                .read_for_send(part.fetch_offset, limit.max(1), pace, disk_bytes_max)
                .await;
            PartRead::Read(partition, outcome)
        }
        Err(code) => PartRead::Missing(code),
    }
}

/// Reads each part (no waiting), spending at most `max_bytes` over all of them, but always
/// at least one batch of the first partition that has data so consumers make progress.
///
/// Budget is reserved in request order as if every read came back full; the parts that got
/// some are read concurrently (their O_DIRECT reads overlap instead of waiting one behind the
/// other), the rest one by one with what is really left. So the bytes read at once stay
/// within `max_bytes` (plus, per part, the one batch KIP-74 lets exceed a limit).
///
/// What may be read from disk into memory is also reserved from the core's
/// `fetch.cold.read.bytes.per.core` (`cold_budget.rs`), in the same order: with it spent, a
/// part read from disk gets its first batch only. What was read is charged to it until sent.
pub async fn fetch(
    ctx: &Rc<CoreContext>,
    parts: Vec<FetchPart>,
    max_bytes: usize,
) -> Vec<FetchPartResult> {
    let mut reserved = 0usize;
    let mut limits = Vec::with_capacity(parts.len());
    for part in &parts {
        let limit = part.partition_max_bytes.min(max_bytes - reserved);
        if limit == 0 {
            break;
        }
        reserved += limit;
        limits.push(limit);
    }
    let disk = ctx.cold_reads.reserve(reserved);
    let mut disk_left = disk.bytes();
    let reads: Vec<_> = parts
        .iter()
        .zip(&limits)
        .map(|(part, &limit)| {
            let disk_bytes_max = limit.min(disk_left);
            disk_left -= disk_bytes_max;
            read_part(ctx, part, limit, disk_bytes_max)
        })
        .collect();
    let mut early = join_all(reads).await.into_iter();

    let mut results = Vec::with_capacity(parts.len());
    let mut budget = max_bytes;
    let mut returned_any = false;
    for part in &parts {
        let limit = part.partition_max_bytes.min(budget);
        let read = match early.next() {
            Some(read) => Some(read),
            None if limit == 0 && returned_any => None,
            None => {
                let disk = ctx.cold_reads.reserve(limit);
                Some(read_part(ctx, part, limit, disk.bytes()).await)
            }
        };
        let (partition, outcome) = match read {
            Some(PartRead::Read(partition, outcome)) => (partition, Some(outcome)),
            Some(PartRead::Missing(code)) => {
                results.push(FetchPartResult::error(code));
                continue;
            }
            None => match lookup(ctx, &part.topic, part.partition) {
                Ok(partition) => (partition, None),
                Err(code) => {
                    results.push(FetchPartResult::error(code));
                    continue;
                }
            },
        };
        let outcome = match outcome {
            Some(outcome) if limit > 0 || !returned_any => outcome,
            _ => {
                // Budget spent: report offsets only; the client fetches the rest next time.
                let w = partition.log.watermarks();
                results.push(FetchPartResult {
                    error_code: 0,
                    high_watermark: w.log_end_offset,
                    log_start_offset: w.log_start_offset,
                    records: SendData::default(),
                    published: Some(partition.log.published().clone()),
                });
                continue;
            }
        };
        match outcome {
            Ok(mut outcome) => {
                // The engine always returns one whole batch (KIP-74); only the first
                // partition with data may exceed the limits.
                if returned_any && outcome.records.len() > limit {
                    outcome.records = SendData::default();
                }
                budget = budget.saturating_sub(outcome.records.len());
                returned_any |= !outcome.records.is_empty();
                let records = match outcome.read_from_disk {
                    true => ctx.cold_reads.charge(outcome.records),
                    false => outcome.records,
                };
                results.push(FetchPartResult {
                    error_code: 0,
                    high_watermark: outcome.high_watermark,
                    log_start_offset: outcome.log_start_offset,
                    records,
                    published: Some(partition.log.published().clone()),
                });
            }
            Err(code) => {
                let w = partition.log.watermarks();
                results.push(FetchPartResult {
                    error_code: code,
                    high_watermark: w.log_end_offset,
                    log_start_offset: w.log_start_offset,
                    records: SendData::default(),
                    published: None,
                });
            }
        }
    }
    results
}

/// Completes when any of `waits` has data past its offset (or is gone), or after
/// `timeout_ms`, or when the core starts draining for shutdown.
pub async fn wait_for_data(ctx: &Rc<CoreContext>, waits: &[WaitPart], timeout_ms: u64) {
    let mut partitions = Vec::with_capacity(waits.len());
    for w in waits {
        match ctx.registry.get(&w.topic, w.partition) {
            Some(p) if p.log.watermarks().log_end_offset <= w.offset => partitions.push(p),
            // Data already there, or the partition vanished: the caller should re-read now.
            _ => return,
        }
    }
    if partitions.is_empty() || ctx.draining.get() {
        return;
    }
    let notified: Vec<_> = partitions.iter().map(|p| p.appended.notified()).collect();
    let any_append = crate::join::first_of(notified.into_iter().map(Box::pin).collect());
    let timeout = glommio::timer::sleep(Duration::from_millis(timeout_ms));
    let drain = ctx.drain_signal.notified();
    futures_lite::future::or(any_append, futures_lite::future::or(timeout, drain)).await;
}

/// Answers ListOffsets queries: -2 earliest, -1 latest, -3 max timestamp, else the first
/// offset whose timestamp is at or after the given one.
pub async fn list_offsets(ctx: &Rc<CoreContext>, parts: Vec<OffsetQuery>) -> Vec<OffsetResult> {
    let mut results = Vec::with_capacity(parts.len());
    for q in parts {
        let partition = match lookup(ctx, &q.topic, q.partition) {
            Ok(p) => p,
            Err(code) => {
                results.push(OffsetResult {
                    error_code: code,
                    timestamp: -1,
                    offset: -1,
                });
                continue;
            }
        };
        let w = partition.log.watermarks();
        let found = match q.timestamp {
            -2 => Ok(Some((w.log_start_offset, -1))),
            -1 => Ok(Some((w.log_end_offset, -1))),
            -3 => partition.log.max_timestamp().await.map(|found| {
                // Kafka answers (-1, -1) for an empty partition.
                Some(found.unwrap_or((-1, -1)))
            }),
            ts if ts >= 0 => partition
                .log
                .offset_for_timestamp(ts)
                .await
                .map(|found| Some(found.unwrap_or((-1, -1)))),
            _ => Ok(None),
        };
        results.push(match found {
            Ok(Some((offset, timestamp))) => OffsetResult {
                error_code: 0,
                timestamp: if q.timestamp >= 0 || q.timestamp == -3 {
                    timestamp
                } else {
                    -1
                },
                offset,
            },
            Ok(None) => OffsetResult {
                error_code: ResponseError::InvalidRequest.code(),
                timestamp: -1,
                offset: -1,
            },
            Err(code) => OffsetResult {
                error_code: code,
                timestamp: -1,
                offset: -1,
            },
        });
    }
    results
}

/// DeleteRecords: moves each log's start offset forward.
pub async fn delete_records(
    ctx: &Rc<CoreContext>,
    parts: Vec<DeleteRecordsPart>,
) -> Vec<DeleteRecordsResult> {
    let mut results = Vec::with_capacity(parts.len());
    for part in parts {
        let partition = match lookup(ctx, &part.topic, part.partition) {
            Ok(p) => p,
            Err(code) => {
                results.push(DeleteRecordsResult {
                    error_code: code,
                    low_watermark: -1,
                });
                continue;
            }
        };
        let offset = if part.offset == -1 {
            partition.log.watermarks().log_end_offset
        } else {
            part.offset
        };
        results.push(match partition.log.delete_records_before(offset).await {
            Ok(low_watermark) => DeleteRecordsResult {
                error_code: 0,
                low_watermark,
            },
            Err(code) => DeleteRecordsResult {
                error_code: code,
                low_watermark: -1,
            },
        });
    }
    results
}
