//! Cluster view: bootstrap, broker addresses, one connection per broker (opened lazily and
//! replaced when it fails), and Metadata. Everything is per executor (`Rc`), nothing is shared
//! across threads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::{
    MetadataRequest, TopicName, metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::StrBytes;

use super::conn::{ConnConfig, Connection};
use super::error::{ClientError, Result};

/// Client settings shared by admin, producer and consumer.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of one or more brokers.
    pub bootstrap: Vec<String>,
    /// Per-connection settings.
    pub conn: ConnConfig,
    /// Timeout of one request/response exchange.
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// Settings for a comma-separated bootstrap list.
    pub fn new(bootstrap: &str) -> Self {
        Self {
            bootstrap: bootstrap
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            conn: ConnConfig::default(),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A broker as listed by Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Node id.
    pub node_id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// Rack, if set.
    pub rack: Option<String>,
}

/// One partition as listed by Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: i32,
    /// Leader node id, -1 if none.
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// Kafka error code for this partition.
    pub error_code: i16,
}

/// One topic as listed by Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Kafka error code for this topic (e.g. UNKNOWN_TOPIC_OR_PARTITION).
    pub error_code: i16,
    /// Internal topic (like `__consumer_offsets`).
    pub is_internal: bool,
    /// Partitions sorted by index.
    pub partitions: Vec<PartitionInfo>,
}

/// A Metadata response in plain types.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// Brokers.
    pub brokers: Vec<BrokerInfo>,
    /// Controller node id (-1 if unknown).
    pub controller_id: i32,
    /// Cluster id, if any.
    pub cluster_id: Option<String>,
    /// Topics.
    pub topics: Vec<TopicInfo>,
}

impl Metadata {
    /// The topic, or UNKNOWN_TOPIC_OR_PARTITION / its own error.
    pub fn topic(&self, name: &str) -> Result<&TopicInfo> {
        let t = self
            .topics
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ClientError::kafka(format!("topic {name}"), 3, None))?;
        ClientError::check(t.error_code, || format!("topic {name}"))?;
        Ok(t)
    }
}

/// Runs `fut` with a timeout.
pub async fn with_timeout<T>(
    dur: Duration,
    what: &str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    futures_lite::future::or(fut, async {
        glommio::timer::sleep(dur).await;
        Err(ClientError::Timeout(format!(
            "{what} after {} ms",
            dur.as_millis()
        )))
    })
    .await
}

/// Connections to the brokers of one cluster.
pub struct Cluster {
    cfg: ClientConfig,
    bootstrap: RefCell<Option<Rc<Connection>>>,
    brokers: RefCell<HashMap<i32, String>>,
    conns: RefCell<HashMap<i32, Rc<Connection>>>,
    controller_id: Cell<i32>,
}

impl Cluster {
    /// Connects to the first reachable bootstrap broker and learns the broker list.
    pub async fn connect(cfg: ClientConfig) -> Result<Rc<Cluster>> {
        if cfg.bootstrap.is_empty() {
            return Err(ClientError::Invalid("empty --bootstrap".into()));
        }
        let cluster = Rc::new(Cluster {
            cfg,
            bootstrap: RefCell::new(None),
            brokers: RefCell::new(HashMap::new()),
            conns: RefCell::new(HashMap::new()),
            controller_id: Cell::new(-1),
        });
        cluster.metadata(Some(&[]), false).await?;
        Ok(cluster)
    }

    /// The client settings.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// A working connection to any broker (the bootstrap one while it lives).
    pub async fn any(&self) -> Result<Rc<Connection>> {
        let current = self.bootstrap.borrow().clone();
        if let Some(c) = current
            && !c.is_failed()
        {
            return Ok(c);
        }
        let mut last_err = None;
        let mut candidates = self.cfg.bootstrap.clone();
        candidates.extend(self.brokers.borrow().values().cloned());
        for addr in candidates {
            match Connection::connect(&addr, &self.cfg.conn).await {
                Ok(c) => {
                    let c = Rc::new(c);
                    *self.bootstrap.borrow_mut() = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| ClientError::Invalid("no broker to connect to".into())))
    }

    /// A connection to broker `node_id`, opened if needed.
    pub async fn node(&self, node_id: i32) -> Result<Rc<Connection>> {
        let existing = self.conns.borrow().get(&node_id).cloned();
        if let Some(c) = existing
            && !c.is_failed()
        {
            return Ok(c);
        }
        let addr = self.brokers.borrow().get(&node_id).cloned();
        let Some(addr) = addr else {
            return Err(ClientError::Invalid(format!(
                "broker {node_id} not in metadata"
            )));
        };
        let c = Rc::new(Connection::connect(&addr, &self.cfg.conn).await?);
        self.conns.borrow_mut().insert(node_id, c.clone());
        Ok(c)
    }

    /// A connection to the controller (admin requests), or any broker if unknown.
    pub async fn controller(&self) -> Result<Rc<Connection>> {
        let id = self.controller_id.get();
        let known = id >= 0 && self.brokers.borrow().contains_key(&id);
        if known && let Ok(c) = self.node(id).await {
            return Ok(c);
        }
        self.any().await
    }

    /// Metadata for `topics` (None = all topics). Updates the broker list.
    pub async fn metadata(
        &self,
        topics: Option<&[String]>,
        allow_auto_create: bool,
    ) -> Result<Metadata> {
        let conn = self.any().await?;
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut mt = MetadataRequestTopic::default();
                    mt.name = Some(TopicName(StrBytes::from_string(t.clone())));
                    mt
                })
                .collect()
        });
        req.allow_auto_topic_creation = allow_auto_create;
        let resp = with_timeout(self.cfg.request_timeout, "Metadata", conn.call(&req)).await?;
        let md = Metadata {
            brokers: resp
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    node_id: b.node_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                })
                .collect(),
            controller_id: resp.controller_id.0,
            cluster_id: resp.cluster_id.as_ref().map(|c| c.to_string()),
            topics: resp
                .topics
                .iter()
                .map(|t| {
                    let mut partitions: Vec<PartitionInfo> = t
                        .partitions
                        .iter()
                        .map(|p| PartitionInfo {
                            partition: p.partition_index,
                            leader: p.leader_id.0,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replica_nodes.iter().map(|r| r.0).collect(),
                            isr: p.isr_nodes.iter().map(|r| r.0).collect(),
                            error_code: p.error_code,
                        })
                        .collect();
                    partitions.sort_by_key(|p| p.partition);
                    TopicInfo {
                        name: t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                        error_code: t.error_code,
                        is_internal: t.is_internal,
                        partitions,
                    }
                })
                .collect(),
        };
        {
            let mut brokers = self.brokers.borrow_mut();
            brokers.clear();
            for b in &md.brokers {
                brokers.insert(b.node_id, format!("{}:{}", b.host, b.port));
            }
        }
        self.controller_id.set(md.controller_id);
        Ok(md)
    }

    /// Metadata of one topic, waiting (bounded) while its partitions have no leader yet, as
    /// happens right after creation.
    pub async fn topic_metadata(&self, topic: &str, allow_auto_create: bool) -> Result<TopicInfo> {
        let topics = [topic.to_string()];
        let mut attempt = 0;
        loop {
            let md = self.metadata(Some(&topics), allow_auto_create).await?;
            let t = md.topic(topic);
            let retriable = match &t {
                Ok(t) => t.partitions.is_empty() || t.partitions.iter().any(|p| p.leader < 0),
                Err(e) => e.is_retriable() && allow_auto_create,
            };
            if !retriable || attempt >= 50 {
                return t.cloned();
            }
            attempt += 1;
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }
}
