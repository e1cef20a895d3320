//! OffsetFetch (key 9), v1-v9: one group before v8, several groups per request from v8.
//! A partition without a committed offset answers -1, as Kafka does.

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, RequestHeader};

use super::{str_bytes, topic_name};
use crate::cores::CoreContext;
use crate::group::GroupError;
use crate::group::records::OffsetValue;
use crate::group::rpc::{GroupReply, GroupRequest, call_owner};

/// Most groups one request may ask about (a bound on a hostile request).
const GROUPS_MAX: usize = 1_000;

type Fetched = Result<Vec<(String, i32, Option<OffsetValue>)>, GroupError>;

async fn fetch_group(
    ctx: &Rc<CoreContext>,
    group_id: &str,
    partitions: Option<Vec<(String, i32)>>,
) -> Fetched {
    let reply = call_owner(
        ctx,
        group_id,
        GroupRequest::FetchOffsets {
            group_id: group_id.to_string(),
            partitions,
        },
    )
    .await;
    match reply {
        Ok(GroupReply::FetchOffsets(r)) => r,
        Ok(_) => Err(GroupError::UnknownServerError),
        Err(e) => Err(e),
    }
}

/// Groups (topic, partition, value) rows by topic, keeping first-seen topic order.
type TopicRows = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

fn by_topic(rows: Vec<(String, i32, Option<OffsetValue>)>) -> TopicRows {
    let mut out: TopicRows = Vec::new();
    for (t, p, v) in rows {
        match out.iter_mut().find(|(name, _)| *name == t) {
            Some((_, parts)) => parts.push((p, v)),
            None => out.push((t, vec![(p, v)])),
        }
    }
    out
}

/// Answers OffsetFetch.
pub async fn handle(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let version = header.request_api_version;
    if version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for g in request.groups.into_iter().take(GROUPS_MAX) {
            let group_id = g.group_id.0.to_string();
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .flat_map(|t| {
                        let name = t.name.0.to_string();
                        t.partition_indexes
                            .into_iter()
                            .map(move |p| (name.clone(), p))
                    })
                    .collect::<Vec<_>>()
            });
            let fetched = fetch_group(ctx, &group_id, wanted).await;
            let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id);
            groups.push(match fetched {
                Err(e) => group.with_error_code(e.code()),
                Ok(rows) => group.with_topics(
                    by_topic(rows)
                        .into_iter()
                        .map(|(t, parts)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(topic_name(&t))
                                .with_partitions(
                                    parts
                                        .into_iter()
                                        .map(|(p, v)| {
                                            let v = v.unwrap_or(OffsetValue {
                                                offset: -1,
                                                leader_epoch: -1,
                                                metadata: String::new(),
                                                commit_timestamp_ms: -1,
                                            });
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(v.offset)
                                                .with_committed_leader_epoch(v.leader_epoch)
                                                .with_metadata(Some(str_bytes(&v.metadata)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group_id = request.group_id.0.to_string();
    let wanted: Option<Vec<(String, i32)>> = request.topics.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|t| {
                let name = t.name.0.to_string();
                t.partition_indexes.iter().map(move |p| (name.clone(), *p))
            })
            .collect()
    });
    let fetched = fetch_group(ctx, &group_id, wanted.clone()).await;
    let (rows, group_error) = match fetched {
        Ok(rows) => (rows, 0),
        // Before v2 there is no top-level error: every asked-for partition carries it.
        Err(e) => (
            wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, p)| (t, p, None))
                .collect(),
            e.code(),
        ),
    };
    let partition_error = if version < 2 { group_error } else { 0 };
    let topics = by_topic(rows)
        .into_iter()
        .map(|(t, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&t))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, v)| {
                            let mut out = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(partition_error);
                            out = match v {
                                Some(v) => {
                                    let mut o = out
                                        .with_committed_offset(v.offset)
                                        .with_metadata(Some(str_bytes(&v.metadata)));
                                    if version >= 5 {
                                        o = o.with_committed_leader_epoch(v.leader_epoch);
                                    }
                                    o
                                }
                                None => out
                                    .with_committed_offset(-1)
                                    .with_metadata(Some(str_bytes(""))),
                            };
                            out
                        })
                        .collect(),
                )
        })
        .collect();
    let mut out = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        out = out.with_error_code(group_error);
    }
    out
}
