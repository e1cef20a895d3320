//! Partition operations, run on the core that owns the partitions (see [`crate::service`]).

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::ResponseError;

use crate::cores::{
    CoreContext, DeleteRecordsPart, DeleteRecordsResult, FetchPart, FetchPartResult, OffsetQuery,
    OffsetResult, ProducePart, ProducePartResult, WaitPart,
};
use crate::registry::Partition;

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

/// Appends each part; with `acks == -1` also waits for the data to be flushed.
pub async fn produce(
    ctx: &Rc<CoreContext>,
    parts: Vec<ProducePart>,
    acks: i16,
) -> Vec<ProducePartResult> {
    let mut results = Vec::with_capacity(parts.len());
    let mut to_flush = Vec::new();
    for part in parts {
        let partition = match lookup(ctx, &part.topic, part.partition) {
            Ok(p) => p,
            Err(code) => {
                results.push(ProducePartResult::error(code));
                continue;
            }
        };
        let Some(records) = part.records.filter(|r| !r.is_empty()) else {
            results.push(ProducePartResult::error(
                ResponseError::CorruptMessage.code(),
            ));
            continue;
        };
        match partition.log.append(records).await {
            Ok(outcome) => {
                partition.appended.notify_all();
                if acks == -1 {
                    to_flush.push((results.len(), partition.clone()));
                }
                results.push(ProducePartResult {
                    error_code: 0,
                    base_offset: outcome.base_offset,
                    log_append_time_ms: outcome.log_append_time_ms,
                    log_start_offset: outcome.log_start_offset,
                    error_message: None,
                });
            }
            Err(code) => {
                tracing::debug!(topic = %part.topic, partition = part.partition, code, "append rejected");
                results.push(ProducePartResult::error(code));
            }
        }
    }
    for (i, partition) in to_flush {
        if let Err(code) = partition.log.flush().await {
            tracing::warn!(topic = %partition.topic, partition = partition.index, code, "flush failed");
            results[i] = ProducePartResult::error(code);
        }
    }
    results
}

/// Reads each part (no waiting), spending at most `max_bytes` over all of them, but always
/// at least one batch of the first partition that has data so consumers make progress.
pub async fn fetch(
    ctx: &Rc<CoreContext>,
    parts: Vec<FetchPart>,
    max_bytes: usize,
) -> Vec<FetchPartResult> {
    let mut results = Vec::with_capacity(parts.len());
    let mut budget = max_bytes;
    let mut returned_any = false;
    for part in parts {
        let partition = match lookup(ctx, &part.topic, part.partition) {
            Ok(p) => p,
            Err(code) => {
                results.push(FetchPartResult::error(code));
                continue;
            }
        };
        let limit = part.partition_max_bytes.min(budget);
        if limit == 0 && returned_any {
            // Budget spent: report offsets only; the client fetches the rest next time.
            let w = partition.log.watermarks();
            results.push(FetchPartResult {
                error_code: 0,
                high_watermark: w.log_end_offset,
                log_start_offset: w.log_start_offset,
                records: bytes::Bytes::new(),
            });
            continue;
        }
        match partition.log.read(part.fetch_offset, limit.max(1)).await {
            Ok(mut outcome) => {
                // The engine always returns one whole batch (KIP-74); only the first
                // partition with data may exceed the limits.
                if returned_any && outcome.records.len() > limit {
                    outcome.records = bytes::Bytes::new();
                }
                budget = budget.saturating_sub(outcome.records.len());
                returned_any |= !outcome.records.is_empty();
                results.push(FetchPartResult {
                    error_code: 0,
                    high_watermark: outcome.high_watermark,
                    log_start_offset: outcome.log_start_offset,
                    records: outcome.records,
                });
            }
            Err(code) => {
                let w = partition.log.watermarks();
                results.push(FetchPartResult {
                    error_code: code,
                    high_watermark: w.log_end_offset,
                    log_start_offset: w.log_start_offset,
                    records: bytes::Bytes::new(),
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
