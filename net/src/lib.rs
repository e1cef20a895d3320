//! Gregor's Kafka protocol server.
//!
//! Thread-per-core: [`server::start`] runs one pinned glommio executor per core. Each core
//! accepts connections on the shared port, owns a fixed subset of partitions
//! ([`cores::partition_owner`]) and forwards work on other cores' partitions over a channel
//! mesh. Topic metadata is owned by core 0 and broadcast to every core in order.
//!
//! Request path: [`connection`] (frames, one request at a time) → [`handlers`] (one module
//! per Kafka API, `kafka-protocol` codecs) → [`routing`]/[`cores`] (split by owner) →
//! [`service`]/[`partition_ops`] on the owning core → [`log`] (the storage engine).

pub mod admin;
pub mod alloc;
pub mod balance;
pub mod cold_budget;
pub mod config;
pub mod connection;
pub mod cores;
pub mod disk_activity;
pub mod framing;
pub mod group;
pub mod handlers;
pub mod join;
pub mod listener;
pub mod log;
pub mod memlock;
pub mod metadata;
pub mod notify;
pub mod page_cache;
pub mod partition_ops;
pub mod published;
pub mod registry;
pub mod request_pool;
pub mod routing;
pub mod server;
pub mod service;
pub mod topic_config;
pub mod vectored;

pub use config::{BrokerConfig, ConfigBuilder, ConfigError};
pub use server::{ServerError, ServerHandle, run_until_signal, start};
