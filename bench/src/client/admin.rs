//! Admin requests: topics, partitions, configs, offsets. Each checks the per-topic error code
//! and turns it into a [`ClientError::Kafka`] carrying Kafka's error name.

use std::collections::BTreeMap;

use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, ListOffsetsRequest, TopicName,
    create_partitions_request::CreatePartitionsTopic,
    create_topics_request::{CreatableTopic, CreatableTopicConfig},
    delete_topics_request::DeleteTopicState,
    describe_configs_request::DescribeConfigsResource,
    incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
};
use kafka_protocol::protocol::StrBytes;

use super::cluster::{Cluster, with_timeout};
use super::error::{ClientError, Result};

/// `ListOffsets` timestamp meaning "the earliest offset".
pub const EARLIEST: i64 = -2;
/// `ListOffsets` timestamp meaning "the offset after the last record".
pub const LATEST: i64 = -1;

const RESOURCE_TOPIC: i8 = 2;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}
fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// One topic configuration entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Config name, e.g. `retention.ms`.
    pub name: String,
    /// Value (None when sensitive or unset).
    pub value: Option<String>,
    /// Read-only config.
    pub read_only: bool,
    /// True when set explicitly on the topic (config source DYNAMIC_TOPIC_CONFIG).
    pub is_topic_override: bool,
    /// Sensitive (value hidden).
    pub is_sensitive: bool,
}

/// A config change for [`Cluster::alter_topic_configs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Set `name` to `value`.
    Set(String, String),
    /// Remove the override of `name`.
    Delete(String),
}

impl Cluster {
    /// CreateTopics for one topic.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
        validate_only: bool,
    ) -> Result<()> {
        let mut t = CreatableTopic::default();
        t.name = name(topic);
        t.num_partitions = partitions;
        t.replication_factor = replication_factor;
        t.configs = configs
            .iter()
            .map(|(k, v)| {
                let mut c = CreatableTopicConfig::default();
                c.name = sb(k);
                c.value = Some(sb(v));
                c
            })
            .collect();
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = self.config().request_timeout.as_millis() as i32;
        req.validate_only = validate_only;
        let conn = self.controller().await?;
        let resp = with_timeout(
            self.config().request_timeout,
            "CreateTopics",
            conn.call(&req),
        )
        .await?;
        let r = resp
            .topics
            .iter()
            .find(|r| r.name.0.as_str() == topic)
            .ok_or_else(|| {
                ClientError::Protocol("CreateTopics response without our topic".into())
            })?;
        if r.error_code != 0 {
            return Err(ClientError::kafka(
                format!("create topic {topic}"),
                r.error_code,
                r.error_message.as_ref().map(|m| m.to_string()),
            ));
        }
        Ok(())
    }

    /// DeleteTopics for one topic.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let conn = self.controller().await?;
        let mut req = DeleteTopicsRequest::default();
        if conn.version_of::<DeleteTopicsRequest>()? >= 6 {
            let mut st = DeleteTopicState::default();
            st.name = Some(name(topic));
            req.topics = vec![st];
        } else {
            req.topic_names = vec![name(topic)];
        }
        req.timeout_ms = self.config().request_timeout.as_millis() as i32;
        let resp = with_timeout(
            self.config().request_timeout,
            "DeleteTopics",
            conn.call(&req),
        )
        .await?;
        let r = resp
            .responses
            .first()
            .ok_or_else(|| ClientError::Protocol("empty DeleteTopics response".into()))?;
        if r.error_code != 0 {
            return Err(ClientError::kafka(
                format!("delete topic {topic}"),
                r.error_code,
                r.error_message.as_ref().map(|m| m.to_string()),
            ));
        }
        Ok(())
    }

    /// CreatePartitions: grow `topic` to `count` partitions.
    pub async fn create_partitions(&self, topic: &str, count: i32) -> Result<()> {
        let mut t = CreatePartitionsTopic::default();
        t.name = name(topic);
        t.count = count;
        let mut req = CreatePartitionsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = self.config().request_timeout.as_millis() as i32;
        let conn = self.controller().await?;
        let resp = with_timeout(
            self.config().request_timeout,
            "CreatePartitions",
            conn.call(&req),
        )
        .await?;
        let r = resp
            .results
            .first()
            .ok_or_else(|| ClientError::Protocol("empty CreatePartitions response".into()))?;
        if r.error_code != 0 {
            return Err(ClientError::kafka(
                format!("alter partitions of {topic}"),
                r.error_code,
                r.error_message.as_ref().map(|m| m.to_string()),
            ));
        }
        Ok(())
    }

    /// DescribeConfigs of a topic, sorted by name.
    pub async fn describe_topic_configs(&self, topic: &str) -> Result<Vec<ConfigEntry>> {
        let mut res = DescribeConfigsResource::default();
        res.resource_type = RESOURCE_TOPIC;
        res.resource_name = sb(topic);
        res.configuration_keys = None;
        let mut req = DescribeConfigsRequest::default();
        req.resources = vec![res];
        let conn = self.any().await?;
        let resp = with_timeout(
            self.config().request_timeout,
            "DescribeConfigs",
            conn.call(&req),
        )
        .await?;
        let r = resp
            .results
            .first()
            .ok_or_else(|| ClientError::Protocol("empty DescribeConfigs response".into()))?;
        if r.error_code != 0 {
            return Err(ClientError::kafka(
                format!("describe configs of {topic}"),
                r.error_code,
                r.error_message.as_ref().map(|m| m.to_string()),
            ));
        }
        let mut out: Vec<ConfigEntry> = r
            .configs
            .iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.as_ref().map(|v| v.to_string()),
                read_only: c.read_only,
                // Config source 1 = DYNAMIC_TOPIC_CONFIG.
                is_topic_override: c.config_source == 1,
                is_sensitive: c.is_sensitive,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// IncrementalAlterConfigs on a topic.
    pub async fn alter_topic_configs(&self, topic: &str, changes: &[ConfigChange]) -> Result<()> {
        let mut res = AlterConfigsResource::default();
        res.resource_type = RESOURCE_TOPIC;
        res.resource_name = sb(topic);
        res.configs = changes
            .iter()
            .map(|ch| {
                let mut c = AlterableConfig::default();
                match ch {
                    ConfigChange::Set(k, v) => {
                        c.name = sb(k);
                        c.config_operation = 0;
                        c.value = Some(sb(v));
                    }
                    ConfigChange::Delete(k) => {
                        c.name = sb(k);
                        c.config_operation = 1;
                        c.value = None;
                    }
                }
                c
            })
            .collect();
        let mut req = IncrementalAlterConfigsRequest::default();
        req.resources = vec![res];
        let conn = self.controller().await?;
        let resp = with_timeout(
            self.config().request_timeout,
            "IncrementalAlterConfigs",
            conn.call(&req),
        )
        .await?;
        let r = resp.responses.first().ok_or_else(|| {
            ClientError::Protocol("empty IncrementalAlterConfigs response".into())
        })?;
        if r.error_code != 0 {
            return Err(ClientError::kafka(
                format!("alter configs of {topic}"),
                r.error_code,
                r.error_message.as_ref().map(|m| m.to_string()),
            ));
        }
        Ok(())
    }

    /// ListOffsets for some partitions of a topic at `timestamp` ([`EARLIEST`], [`LATEST`] or a
    /// time in ms), each sent to its partition's leader. Returns partition -> offset.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, i64>> {
        let meta = self.topic_metadata(topic, false).await?;
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in partitions {
            let info = meta
                .partitions
                .iter()
                .find(|i| i.partition == *p)
                .ok_or_else(|| ClientError::kafka(format!("partition {topic}-{p}"), 3, None))?;
            if info.leader < 0 {
                return Err(ClientError::kafka(
                    format!("partition {topic}-{p}"),
                    5,
                    None,
                ));
            }
            by_leader.entry(info.leader).or_default().push(*p);
        }
        let mut out = BTreeMap::new();
        for (leader, parts) in by_leader {
            let mut t = ListOffsetsTopic::default();
            t.name = name(topic);
            t.partitions = parts
                .iter()
                .map(|p| {
                    let mut lp = ListOffsetsPartition::default();
                    lp.partition_index = *p;
                    lp.current_leader_epoch = -1;
                    lp.timestamp = timestamp;
                    lp
                })
                .collect();
            let mut req = ListOffsetsRequest::default();
            req.replica_id = (-1).into();
            req.topics = vec![t];
            let conn = self.node(leader).await?;
            let resp = with_timeout(
                self.config().request_timeout,
                "ListOffsets",
                conn.call(&req),
            )
            .await?;
            for t in &resp.topics {
                for p in &t.partitions {
                    ClientError::check(p.error_code, || {
                        format!("list offsets of {topic}-{}", p.partition_index)
                    })?;
                    out.insert(p.partition_index, p.offset);
                }
            }
        }
        Ok(out)
    }
}
