//! Consumer group administration: FindCoordinator, ListGroups, DescribeGroups, OffsetFetch,
//! OffsetCommit (as an admin, generation -1) and DeleteGroups. Plain Kafka protocol, used by
//! `gregor groups`.
//!
//! Versions are chosen here rather than in [`super::versions::IMPLEMENTED`]: the highest one
//! inside both the broker's range and the range this module encodes.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest,
    FindCoordinatorRequest, GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
    TopicName,
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
};
use kafka_protocol::protocol::{Decodable, Request, StrBytes};

use super::cluster::{Cluster, with_timeout};
use super::conn::Connection;
use super::error::{ClientError, Result};

/// A group as listed by ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Protocol type ("consumer", or empty for offsets-only groups).
    pub protocol_type: String,
    /// State (ListGroups v4+), empty if the broker does not report it.
    pub state: String,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Assigned (topic, partition)s, decoded from the consumer protocol (empty if the group
    /// is not a consumer group or the assignment does not decode).
    pub assignment: Vec<(String, i32)>,
}

/// A described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// State name (`Stable`, `Empty`, `Dead`, ...).
    pub state: String,
    /// Protocol type.
    pub protocol_type: String,
    /// Selected protocol (assignor).
    pub protocol: String,
    /// Members.
    pub members: Vec<GroupMember>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Offset.
    pub offset: i64,
    /// Leader epoch, -1 if none.
    pub leader_epoch: i32,
    /// Metadata string.
    pub metadata: String,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn gid(s: &str) -> GroupId {
    GroupId(sb(s))
}

/// Highest version of `R` inside both `ours` and the broker's advertised range.
fn pick_version<R: Request>(conn: &Connection, ours: (i16, i16)) -> Result<i16> {
    let api = ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions);
    let unsupported = || ClientError::UnsupportedVersion {
        api: format!("{api:?}"),
    };
    let (lo, hi) = conn.versions().broker_range(api).ok_or_else(unsupported)?;
    let (lo, hi) = (lo.max(ours.0), hi.min(ours.1));
    if lo > hi {
        return Err(unsupported());
    }
    Ok(hi)
}

async fn call_at<R: Request>(
    cluster: &Cluster,
    conn: &Connection,
    req: &R,
    ours: (i16, i16),
    what: &str,
) -> Result<R::Response> {
    let v = pick_version::<R>(conn, ours)?;
    with_timeout(cluster.config().request_timeout, what, async {
        conn.send(req, v).await?.wait().await
    })
    .await
}

/// Decodes a consumer-protocol assignment (i16 version, then the body) into partitions.
pub fn decode_assignment(mut bytes: Bytes) -> Option<Vec<(String, i32)>> {
    if bytes.remaining() < 2 {
        return None;
    }
    let version = bytes.get_i16().clamp(0, 3);
    let a = ConsumerProtocolAssignment::decode(&mut bytes, version).ok()?;
    let mut out = Vec::new();
    for tp in a.assigned_partitions {
        for p in tp.partitions {
            out.push((tp.topic.0.to_string(), p));
        }
    }
    out.sort();
    Some(out)
}

impl Cluster {
    /// A connection to the coordinator of `group` (FindCoordinator, key type 0).
    pub async fn group_coordinator(&self, group: &str) -> Result<Rc<Connection>> {
        let conn = self.any().await?;
        let mut req = FindCoordinatorRequest::default();
        let v = pick_version::<FindCoordinatorRequest>(&conn, (0, 4))?;
        if v >= 4 {
            req.coordinator_keys = vec![sb(group)];
        } else {
            req.key = sb(group);
        }
        let resp = call_at(self, &conn, &req, (0, 4), "FindCoordinator").await?;
        let (code, node) = if v >= 4 {
            let c = resp
                .coordinators
                .first()
                .ok_or_else(|| ClientError::Protocol("FindCoordinator: no coordinator".into()))?;
            (c.error_code, c.node_id.0)
        } else {
            (resp.error_code, resp.node_id.0)
        };
        ClientError::check(code, || format!("find coordinator of group {group}"))?;
        // Make sure the broker list knows the node before connecting to it.
        if self.node(node).await.is_err() {
            self.metadata(Some(&[]), false).await?;
        }
        self.node(node).await
    }

    /// ListGroups on every broker, optionally filtered by state names (v4+).
    pub async fn list_groups(&self, states: &[String]) -> Result<Vec<GroupListing>> {
        let md = self.metadata(Some(&[]), false).await?;
        let mut out = Vec::new();
        for b in &md.brokers {
            let conn = self.node(b.node_id).await?;
            let mut req = ListGroupsRequest::default();
            req.states_filter = states.iter().map(|s| sb(s)).collect();
            let v = pick_version::<ListGroupsRequest>(&conn, (0, 4))?;
            if v < 4 && !states.is_empty() {
                return Err(ClientError::Invalid(
                    "broker does not support filtering groups by state".into(),
                ));
            }
            let resp = call_at(self, &conn, &req, (0, 4), "ListGroups").await?;
            ClientError::check(resp.error_code, || "list groups".to_string())?;
            out.extend(resp.groups.iter().map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    /// DescribeGroups for one group.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let conn = self.group_coordinator(group).await?;
        let mut req = DescribeGroupsRequest::default();
        req.groups = vec![gid(group)];
        let resp = call_at(self, &conn, &req, (0, 5), "DescribeGroups").await?;
        let g = resp
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("DescribeGroups: empty response".into()))?;
        ClientError::check(g.error_code, || format!("describe group {group}"))?;
        let consumer = g.protocol_type.as_str() == "consumer";
        Ok(GroupDescription {
            group_id: group.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.map(|s| s.to_string()),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: if consumer {
                        decode_assignment(m.member_assignment).unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        })
    }

    /// Every committed offset of `group` (OffsetFetch with all topics).
    pub async fn fetch_group_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<(String, i32), CommittedOffset>> {
        let conn = self.group_coordinator(group).await?;
        let mut req = OffsetFetchRequest::default();
        req.group_id = gid(group);
        req.topics = None;
        let resp = call_at(self, &conn, &req, (2, 7), "OffsetFetch").await?;
        ClientError::check(resp.error_code, || {
            format!("fetch offsets of group {group}")
        })?;
        let mut out = BTreeMap::new();
        for t in resp.topics {
            for p in t.partitions {
                ClientError::check(p.error_code, || {
                    format!("fetch offset of {}-{}", t.name.0, p.partition_index)
                })?;
                if p.committed_offset >= 0 {
                    out.insert(
                        (t.name.0.to_string(), p.partition_index),
                        CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.metadata.map(|m| m.to_string()).unwrap_or_default(),
                        },
                    );
                }
            }
        }
        Ok(out)
    }

    /// Commits offsets for `group` as an admin (generation -1, no member): accepted by the
    /// broker only while the group has no members.
    pub async fn commit_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<(String, i32), i64>,
    ) -> Result<()> {
        let conn = self.group_coordinator(group).await?;
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for ((t, p), o) in offsets {
            by_topic.entry(t.as_str()).or_default().push((*p, *o));
        }
        let mut req = OffsetCommitRequest::default();
        req.group_id = gid(group);
        req.generation_id_or_member_epoch = -1;
        req.member_id = sb("");
        req.retention_time_ms = -1;
        req.topics = by_topic
            .into_iter()
            .map(|(t, parts)| {
                let mut rt = OffsetCommitRequestTopic::default();
                rt.name = TopicName(sb(t));
                rt.partitions = parts
                    .into_iter()
                    .map(|(p, o)| {
                        let mut rp = OffsetCommitRequestPartition::default();
                        rp.partition_index = p;
                        rp.committed_offset = o;
                        rp.committed_leader_epoch = -1;
                        rp.committed_metadata = Some(sb(""));
                        rp
                    })
                    .collect();
                rt
            })
            .collect();
        let resp = call_at(self, &conn, &req, (2, 8), "OffsetCommit").await?;
        for t in &resp.topics {
            for p in &t.partitions {
                ClientError::check(p.error_code, || {
                    format!(
                        "commit offset of {}-{} for group {group}",
                        t.name.0, p.partition_index
                    )
                })?;
            }
        }
        Ok(())
    }

    /// DeleteGroups for one group.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let conn = self.group_coordinator(group).await?;
        let mut req = DeleteGroupsRequest::default();
        req.groups_names = vec![gid(group)];
        let resp = call_at(self, &conn, &req, (0, 2), "DeleteGroups").await?;
        let r = resp
            .results
            .iter()
            .find(|r| r.group_id.0.as_str() == group)
            .ok_or_else(|| ClientError::Protocol("DeleteGroups: no result for group".into()))?;
        ClientError::check(r.error_code, || format!("delete group {group}"))
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;

    use super::*;

    #[test]
    fn decodes_consumer_assignment() {
        let mut a = ConsumerProtocolAssignment::default();
        let mut tp = TopicPartition::default();
        tp.topic = TopicName(sb("t"));
        tp.partitions = vec![2, 0];
        a.assigned_partitions = vec![tp];
        let mut buf = BytesMut::new();
        buf.put_i16(1);
        a.encode(&mut buf, 1).unwrap();
        assert_eq!(
            decode_assignment(buf.freeze()),
            Some(vec![("t".to_string(), 0), ("t".to_string(), 2)])
        );
        assert_eq!(decode_assignment(Bytes::from_static(b"\x00")), None);
        assert_eq!(decode_assignment(Bytes::from_static(b"\x00\x01\xff")), None);
    }
}
