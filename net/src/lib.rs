//! Gregor Kafka protocol server (being written).
