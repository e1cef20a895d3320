//! Produce (key 0): split the partitions by owning core, append there (and with acks=-1
//! wait for the flush), merge the answers in request order. acks=0 gets no response. In two
//! steps, [`issue`] then [`IssuedProduce::finish`], so that a connection can have several
//! Produce requests in flight (see `connection.rs`).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, RequestHeader};

use super::topic_name;
use crate::cores::{CoreContext, CoreReply, CoreRequest, ProducePart, ProducePartResult};
use crate::routing::{Issued, answers_of, issue_to_owners};

/// What a Produce request gets back.
pub enum Produced {
    /// acks=1/-1: the response.
    Response(ProduceResponse),
    /// acks=0, all appended: nothing.
    Silent,
    /// acks=0 and something failed: no response, close the connection.
    SilentFailure,
}

/// A Produce handed to its partitions' cores, its answers still to come.
pub struct IssuedProduce {
    acks: i16,
    /// The response lists topics and partitions in request order.
    shape: Vec<(String, Vec<i32>)>,
    /// `None` for an invalid `acks`: nothing was issued.
    issued: Option<Vec<Issued>>,
}

/// Hands each partition's records to the core that owns it and returns once all are handed
/// over: a Produce issued after this one returns is appended after it on every partition
/// they share (so a connection can pipeline Produce requests; see `connection.rs`).
pub async fn issue(
    ctx: &Rc<CoreContext>,
    _header: &RequestHeader,
    request: ProduceRequest,
) -> IssuedProduce {
    let acks = request.acks;
    let mut shape: Vec<(String, Vec<i32>)> = Vec::with_capacity(request.topic_data.len());
    let mut parts = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let mut indexes = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            indexes.push(p.index);
            parts.push(ProducePart {
                topic: name.clone(),
                partition: p.index,
                records: p.records,
            });
        }
        shape.push((name, indexes));
    }
    let issued = if matches!(acks, -1..=1) {
        Some(
            issue_to_owners(
                ctx,
                parts,
                |p| ctx.owner_of(&p.topic, p.partition),
                |parts| CoreRequest::Produce { parts, acks },
            )
            .await,
        )
    } else {
        None
    };
    IssuedProduce {
        acks,
        shape,
        issued,
    }
}

impl IssuedProduce {
    /// Waits for every partition's answer and builds the response.
    pub async fn finish(self) -> Produced {
        let IssuedProduce {
            acks,
            shape,
            issued,
        } = self;
        let total = shape.iter().map(|(_, indexes)| indexes.len()).sum();
        let results: Vec<ProducePartResult> = match issued {
            None => (0..total)
                .map(|_| ProducePartResult::error(ResponseError::InvalidRequiredAcks.code()))
                .collect(),
            Some(issued) => {
                answers_of(
                    total,
                    issued,
                    |reply| match reply {
                        CoreReply::Produce(r) => Some(r),
                        _ => None,
                    },
                    || ProducePartResult::error(ResponseError::NotLeaderOrFollower.code()),
                )
                .await
            }
        };
        respond(acks, shape, results)
    }
}

/// The answer to a Produce, from its per-partition results in request order.
fn respond(acks: i16, shape: Vec<(String, Vec<i32>)>, results: Vec<ProducePartResult>) -> Produced {
    if acks == 0 {
        // No response; like Kafka, a failure closes the connection so the client notices
        // and refreshes its metadata.
        return if results.iter().any(|r| r.error_code != 0) {
            Produced::SilentFailure
        } else {
            Produced::Silent
        };
    }
    let mut results = results.into_iter();
    let responses = shape
        .into_iter()
        .map(|(name, indexes)| {
            let partition_responses = indexes
                .into_iter()
                .map(|index| {
                    let r = results.next().unwrap_or_default();
                    PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(r.error_code)
                        .with_base_offset(r.base_offset)
                        .with_log_append_time_ms(r.log_append_time_ms)
                        .with_log_start_offset(r.log_start_offset)
                        .with_error_message(r.error_message.map(|m| super::str_bytes(&m)))
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic_name(&name))
                .with_partition_responses(partition_responses)
        })
        .collect();
    Produced::Response(ProduceResponse::default().with_responses(responses))
}
