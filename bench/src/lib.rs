//! Gregor load tools and the Kafka-protocol client they are built on.
//!
//! - [`client`]: connections, version negotiation, metadata, admin, producer, consumer.
//! - [`load`]: `gregor bench produce|consume|e2e|disk`.

pub mod cli;
pub mod client;
pub mod load;
