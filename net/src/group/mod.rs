//! The consumer group coordinator (Kafka's classic group protocol).
//!
//! - [`state`]: one group's membership state machine (join/sync/heartbeat/leave, timeouts,
//!   static membership), pure and driven by an injected clock.
//! - [`coordinator`]: one core's set of groups, committed offsets, and the queue of records
//!   for `__consumer_offsets`.
//! - [`records`]: the versioned key/value schema of `__consumer_offsets`.
//! - [`oneshot`]: how parked JoinGroup/SyncGroup requests get their answer.
//! - [`rpc`]/[`service`]: requests carried to a group's owner core and served there.
//! - [`runtime`]: per-core loading, group-commit persistence, timers and compaction.
//! - [`settings`]: the coordinator's configuration.
//!
//! A group lives on exactly one core: the core owning partition
//! [`coordinator::group_partition`] of `__consumer_offsets`, so the coordinator's appends are
//! core-local. Nothing here is shared between cores or locked.

pub mod coordinator;
pub mod oneshot;
pub mod records;
pub mod rpc;
pub mod runtime;
pub mod service;
pub mod settings;
pub mod state;

pub use coordinator::{GroupCoordinator, OFFSETS_TOPIC, group_partition};
pub use settings::CoordinatorSettings;
pub use state::{GroupConfig, GroupError, GroupState};

#[cfg(test)]
mod tests;
