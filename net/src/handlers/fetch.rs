//! Fetch (key 1), sessionless (we always answer session id 0, which every client takes to
//! mean "send full fetch requests").
//!
//! Long polling: read every partition on its owning core; if fewer than `min_bytes` came back
//! and `max_wait_ms` has not passed, ask each involved core to wait until one of its
//! partitions grows past what we saw, take the first such wake-up (or the deadline), and read
//! again.

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

    let mut results = read_round(ctx, &parts, max_bytes).await;
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
        wait_any(ctx, waits, deadline - now).await;
        results = read_round(ctx, &parts, max_bytes).await;
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

/// Returns when any involved core reports new data, or after `timeout`.
async fn wait_any(ctx: &Rc<CoreContext>, waits: Vec<WaitPart>, timeout: Duration) {
    let timeout_ms = timeout.as_millis().max(1) as u64;
    let splits = split_by_owner(waits, |w| ctx.owner_of(&w.topic, w.partition));
    let waiters: Vec<_> = splits
        .into_iter()
        .map(|split| {
            let ctx = ctx.clone();
            Box::pin(async move {
                let _ = ctx
                    .call(
                        split.core,
                        CoreRequest::WaitForData {
                            parts: split.items,
                            timeout_ms,
                        },
                    )
                    .await;
            })
        })
        .collect();
    if waiters.is_empty() {
        // Nothing to wait on (an empty fetch): sleep out the wait, as Kafka does, rather
        // than spinning.
        glommio::timer::sleep(timeout).await;
        return;
    }
    let first = crate::join::first_of(waiters);
    let timer = glommio::timer::sleep(timeout);
    futures_lite::future::or(first, timer).await;
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
