//! A lean Kafka-protocol client on glommio: connections with pipelining, version negotiation,
//! metadata, admin requests, a batching producer and a fetch consumer. It speaks plain Kafka
//! protocol, so it works against Gregor, Apache Kafka and Redpanda alike.

pub mod admin;
pub mod cluster;
pub mod conn;
pub mod consumer;
pub mod error;
mod oneshot;
pub mod partitioner;
pub mod producer;
pub mod records;
pub mod versions;

pub use admin::{ConfigChange, ConfigEntry};
pub use cluster::{ClientConfig, Cluster, Metadata, TopicInfo};
pub use consumer::{Consumer, ConsumerConfig, StartOffset};
pub use error::{ClientError, Result};
pub use producer::{BatchAck, Producer, ProducerConfig};
pub use records::Compression;

/// Runs `fut` on a fresh single-threaded glommio executor on this thread's behalf and returns
/// its output. The CLI commands use this; the load tools start one executor per core instead.
pub fn block_on<T, F>(fut: impl FnOnce() -> F + Send + 'static) -> std::io::Result<T>
where
    F: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .name("gregor-client")
        .spawn(fut)
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .join()
        .map_err(|_| std::io::Error::other("client executor panicked"))
}
