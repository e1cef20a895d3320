//! Fetch (key 1), sessionless (we always answer session id 0, which every client takes to
//! mean "send full fetch requests").
//!
//! Long polling: read every partition on its owning core; if fewer than `min_bytes` came back
//! and `max_wait_ms` has not passed, ask each involved core to wait until one of its
//! partitions grows past what we saw and then read its partitions again. The first core to
//! wake sends its data with the wake-up; the other cores' partitions are read again (they may
//! have grown meanwhile), and the loop goes on until `min_bytes` or the deadline.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, RequestHeader};

use super::topic_name;
use crate::cores::{CoreContext, CoreReply, CoreRequest, FetchPart, FetchPartResult, WaitPart};
use crate::routing::{call_owners, split_by_owner};
use crate::vectored::Placeholders;
use gregor_engine::SendData;

/// Longest a fetch may wait, whatever the client asks: bounds how long a connection (and a
/// shutdown) can be held by one request.
pub const FETCH_WAIT_MS_MAX: u64 = 60_000;

/// Protocol version from which topics are named by id.
const TOPIC_ID_VERSION: i16 = 13;

struct TopicShape {
    name: String,
    id: uuid::Uuid,
    partitions: Vec<i32>,
    /// Error for every partition (unknown topic id), if any.
    error: Option<i16>,
}

/// Answers Fetch. Record data still on disk, or in pieces of the tail cache, is in the
/// response as placeholders from the returned [`Placeholders`] (encode with
/// `vectored::encode_frame_parts`).
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    request: FetchRequest,
) -> (FetchResponse, Placeholders) {
    let version = header.request_api_version;
    let mut files = Placeholders::default();
    if request.session_id != 0 {
        // We never hand out sessions, so any id is unknown.
        let response = FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
        return (response, files);
    }
    let image = ctx.metadata();
    let mut shape = Vec::with_capacity(request.topics.len());
    let mut parts = Vec::new();
    for topic in request.topics {
        let (name, error) = if version >= TOPIC_ID_VERSION {
            match image.topic_by_id(topic.topic_id.as_u128()) {
                Some((name, _)) => (name.clone(), None),
                None => (String::new(), Some(ResponseError::UnknownTopicId.code())),
            }
        } else {
            (topic.topic.0.to_string(), None)
        };
        let mut indexes = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            indexes.push(p.partition);
            if error.is_none() {
                parts.push(FetchPart {
                    topic: name.clone(),
                    partition: p.partition,
                    fetch_offset: p.fetch_offset,
                    partition_max_bytes: p.partition_max_bytes.max(0) as usize,
                });
            }
        }
        shape.push(TopicShape {
            name,
            id: topic.topic_id,
            partitions: indexes,
            error,
        });
    }

    let max_bytes = (request.max_bytes.max(0) as usize).min(ctx.config.fetch_max_bytes);
    let min_bytes = request.min_bytes.max(0) as usize;
    let wait_ms = (request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MS_MAX);
    let deadline = Instant::now() + Duration::from_millis(wait_ms);

    // Topic ids, to match other cores' published offsets (`None`: not in our metadata, so
    // the owner answers).
    let ids: Vec<Option<u128>> = parts
        .iter()
        .map(|p| image.topics.get(&p.topic).map(|t| t.id))
        .collect();
    let mut results = vec![FetchPartResult::default(); parts.len()];
    read_fresh(ctx, &parts, &ids, 0..parts.len(), max_bytes, &mut results).await;
    loop {
        let bytes: usize = results.iter().map(|r| r.records.len()).sum();
        let any_error = results.iter().any(|r| r.error_code != 0);
        let now = Instant::now();
        if bytes >= min_bytes || any_error || now >= deadline || ctx.draining.get() {
            break;
        }
        let waits: Vec<WaitPart> = parts
            .iter()
            .zip(&results)
            .map(|(part, r)| WaitPart {
                topic: part.topic.clone(),
                partition: part.partition,
                offset: part.fetch_offset.max(r.high_watermark),
            })
            .collect();
        match wait_any(ctx, &parts, waits, max_bytes, deadline - now).await {
            Some(woken) => {
                let mut fresh = vec![false; parts.len()];
                for (&position, result) in woken.positions.iter().zip(woken.results) {
                    fresh[position] = true;
                    results[position] = result;
                }
                learn(ctx, &parts, &ids, &woken.positions, &results);
                // The other cores' partitions may have grown too.
                let others = (0..parts.len()).filter(|&p| !fresh[p]);
                read_fresh(ctx, &parts, &ids, others, max_bytes, &mut results).await;
            }
            None => read_fresh(ctx, &parts, &ids, 0..parts.len(), max_bytes, &mut results).await,
        }
    }

    // Cores each spent the whole budget; trim to max_bytes overall, keeping the first
    // non-empty partition whole so a consumer always progresses.
    let mut spent = 0usize;
    for r in results.iter_mut() {
        if r.records.is_empty() {
            continue;
        }
        if spent > 0 && spent + r.records.len() > max_bytes {
            r.records = SendData::default();
        } else {
            spent += r.records.len();
        }
    }

    let read_committed = request.isolation_level == 1;
    let mut results = results.into_iter();
    let responses = shape
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|&index| {
                    let mut r = match topic.error {
                        Some(code) => FetchPartResult::error(code),
                        None => results.next().unwrap_or_default(),
                    };
                    let records = match std::mem::take(&mut r.records) {
                        SendData::Memory(bytes) => bytes,
                        SendData::Pieces(pieces) => files.placeholder_for_pieces(pieces),
                        SendData::File(range) => match files.placeholder_for(range) {
                            Ok(placeholder) => placeholder,
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot read a segment range; answering KAFKA_STORAGE_ERROR");
                                r.error_code = ResponseError::KafkaStorageError.code();
                                Bytes::new()
                            }
                        },
                    };
                    PartitionData::default()
                        .with_partition_index(index)
                        .with_error_code(r.error_code)
                        .with_high_watermark(r.high_watermark)
                        .with_last_stable_offset(r.high_watermark)
                        .with_log_start_offset(r.log_start_offset)
                        .with_aborted_transactions(read_committed.then(Vec::new))
                        .with_records(Some(records))
                })
                .collect();
            let mut response = FetchableTopicResponse::default().with_partitions(partitions);
            if version >= TOPIC_ID_VERSION {
                response = response.with_topic_id(topic.id);
            } else {
                response = response.with_topic(topic_name(&topic.name));
            }
            response
        })
        .collect();
    let response = FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses);
    (response, files)
}

/// Reads the parts at `positions` into `results`, each on its owning core, except parts of
/// other cores whose published offsets show nothing at or past the fetch offset: those are
/// answered here, empty, as their owner would (`published.rs`), without a trip to it.
async fn read_fresh(
    ctx: &Rc<CoreContext>,
    parts: &[FetchPart],
    ids: &[Option<u128>],
    positions: impl Iterator<Item = usize>,
    max_bytes: usize,
    results: &mut [FetchPartResult],
) {
    let mut to_read = Vec::with_capacity(parts.len());
    let mut read_positions = Vec::with_capacity(parts.len());
    for position in positions {
        let part = &parts[position];
        let caught_up = ids[position]
            .filter(|_| ctx.owner_of(&part.topic, part.partition) != ctx.core_id)
            .and_then(|id| {
                ctx.remote_offsets
                    .caught_up(&part.topic, part.partition, id, part.fetch_offset)
            });
        match caught_up {
            Some((high_watermark, log_start_offset)) => {
                results[position] = FetchPartResult {
                    error_code: 0,
                    high_watermark,
                    log_start_offset,
                    records: SendData::default(),
                    published: None,
                }
            }
            None => {
                to_read.push(part.clone());
                read_positions.push(position);
            }
        }
    }
    if to_read.is_empty() {
        return;
    }
    let read = read_round(ctx, &to_read, max_bytes).await;
    for (&position, result) in read_positions.iter().zip(read) {
        results[position] = result;
    }
    learn(ctx, parts, ids, &read_positions, results);
}

/// Keeps the published offsets the owners sent for parts of other cores, if they are of the
/// topic our metadata knows by that name.
fn learn(
    ctx: &CoreContext,
    parts: &[FetchPart],
    ids: &[Option<u128>],
    positions: &[usize],
    results: &[FetchPartResult],
) {
    for &position in positions {
        let part = &parts[position];
        if let Some(published) = &results[position].published
            && ids[position] == Some(published.topic_id())
            && ctx.owner_of(&part.topic, part.partition) != ctx.core_id
        {
            ctx.remote_offsets
                .remember(&part.topic, part.partition, published);
        }
    }
}

/// Reads every part once on its owning core.
async fn read_round(
    ctx: &Rc<CoreContext>,
    parts: &[FetchPart],
    max_bytes: usize,
) -> Vec<FetchPartResult> {
    call_owners(
        ctx,
        parts.to_vec(),
        |p| ctx.owner_of(&p.topic, p.partition),
        |parts| CoreRequest::Fetch { parts, max_bytes },
        |reply| match reply {
            CoreReply::Fetch(r) => Some(r),
            _ => None,
        },
        || FetchPartResult::error(ResponseError::NotLeaderOrFollower.code()),
    )
    .await
}

/// The parts one core read when it woke up (see [`wait_any`]).
struct Woken {
    /// Positions of the parts in the fetch's list.
    positions: Vec<usize>,
    /// Their results, in the same order.
    results: Vec<FetchPartResult>,
}

/// Waits until any involved core has new data, or `timeout` (`None`). The first core to have
/// some reads its share of `parts` and answers with it.
async fn wait_any(
    ctx: &Rc<CoreContext>,
    parts: &[FetchPart],
    waits: Vec<WaitPart>,
    max_bytes: usize,
    timeout: Duration,
) -> Option<Woken> {
    let timeout_ms = timeout.as_millis().max(1) as u64;
    let pairs: Vec<(WaitPart, FetchPart)> = waits.into_iter().zip(parts.iter().cloned()).collect();
    let splits = split_by_owner(pairs, |(w, _)| ctx.owner_of(&w.topic, w.partition));
    let waiters: Vec<_> = splits
        .into_iter()
        .map(|split| {
            let ctx = ctx.clone();
            Box::pin(async move {
                let (waits, reads): (Vec<WaitPart>, Vec<FetchPart>) =
                    split.items.into_iter().unzip();
                let expected = reads.len();
                let request = CoreRequest::WaitForData {
                    parts: waits,
                    reads,
                    max_bytes,
                    timeout_ms,
                };
                let results = match ctx.call(split.core, request).await {
                    Ok(CoreReply::Fetch(results)) if results.len() == expected => results,
                    // Unreachable (logged by `call`) or a wrong answer: as `read_round` does.
                    _ => (0..expected)
                        .map(|_| FetchPartResult::error(ResponseError::NotLeaderOrFollower.code()))
                        .collect(),
                };
                Some(Woken {
                    positions: split.positions,
                    results,
                })
            })
        })
        .collect();
    if waiters.is_empty() {
        // Nothing to wait on (an empty fetch): sleep out the wait, as Kafka does, rather
        // than spinning.
        glommio::timer::sleep(timeout).await;
        return None;
    }
    let first = crate::join::first_of(waiters);
    let timer = async {
        glommio::timer::sleep(timeout).await;
        None
    };
    futures_lite::future::or(first, timer).await
}

/// The record data of every partition in a response (for an encoder that references it).
pub fn record_slices(response: &FetchResponse) -> Vec<Bytes> {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter_map(|p| p.records.clone())
        .filter(|r| !r.is_empty())
        .collect()
}
