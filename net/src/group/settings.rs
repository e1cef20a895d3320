//! Coordinator settings taken from the broker configuration (Kafka's names; see
//! `docs/CONFIG.md`).

use super::state::GroupConfig;
use crate::config::ConfigError;

/// Everything the coordinator is configured with.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// State machine settings.
    pub group: GroupConfig,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets` (fixed once the
    /// topic exists; the existing count wins).
    pub offsets_topic_partitions: i32,
    /// `offsets.topic.segment.bytes`: segment size of `__consumer_offsets`.
    pub offsets_topic_segment_bytes: u64,
    /// Write a snapshot of a partition's live groups, then delete the records before it,
    /// once this many records were appended to the partition since its last snapshot.
    pub snapshot_after_records: u64,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        CoordinatorSettings {
            group: GroupConfig::default(),
            offsets_topic_partitions: super::coordinator::OFFSETS_TOPIC_PARTITIONS_DEFAULT,
            offsets_topic_segment_bytes: 16 * 1024 * 1024,
            snapshot_after_records: 10_000,
        }
    }
}

fn parse<T>(
    get: &dyn Fn(&str) -> String,
    name: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let text = get(name);
    let invalid = |reason: String| ConfigError::Invalid {
        name: name.to_string(),
        value: text.clone(),
        reason,
    };
    let v: T = text
        .trim()
        .parse()
        .map_err(|_| invalid("not a number".to_string()))?;
    if !range.contains(&v) {
        return Err(invalid(format!(
            "must be between {} and {}",
            range.start(),
            range.end()
        )));
    }
    Ok(v)
}

impl CoordinatorSettings {
    /// Reads the `group.*`/`offset*` settings through `get` (name -> value text).
    pub fn from_config(get: &dyn Fn(&str) -> String) -> Result<Self, ConfigError> {
        let min_session_timeout_ms = parse(get, "group.min.session.timeout.ms", 1..=i32::MAX)?;
        let max_session_timeout_ms = parse(
            get,
            "group.max.session.timeout.ms",
            min_session_timeout_ms..=i32::MAX,
        )?;
        let retention_minutes: i64 =
            parse(get, "offsets.retention.minutes", 1..=i64::MAX / 60_000)?;
        Ok(CoordinatorSettings {
            group: GroupConfig {
                initial_rebalance_delay_ms: parse(
                    get,
                    "group.initial.rebalance.delay.ms",
                    0..=i64::from(i32::MAX),
                )?,
                min_session_timeout_ms,
                max_session_timeout_ms,
                max_group_size: parse(get, "group.max.size", 1..=1_000_000)?,
                offsets_retention_ms: retention_minutes * 60_000,
                offset_metadata_max_bytes: parse(get, "offset.metadata.max.bytes", 0..=1 << 20)?,
            },
            offsets_topic_partitions: parse(get, "offsets.topic.num.partitions", 1..=1000)?,
            offsets_topic_segment_bytes: parse(
                get,
                "offsets.topic.segment.bytes",
                (1 << 20)..=(1 << 30),
            )?,
            snapshot_after_records: parse(get, "offsets.topic.compaction.records", 1..=u64::MAX)?,
        })
    }
}
