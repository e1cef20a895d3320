//! Topic-level configs: the names Gregor accepts (Kafka's), their validation, and the typed
//! effective view (broker defaults overlaid with a topic's overrides).

use std::collections::BTreeMap;

/// (broker setting, topic config) pairs: the broker setting is the topic config's default.
pub const BROKER_DEFAULT_NAMES: &[(&str, &str)] = &[
    ("message.max.bytes", "max.message.bytes"),
    ("log.segment.bytes", "segment.bytes"),
    ("log.roll.ms", "segment.ms"),
    ("log.retention.ms", "retention.ms"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.flush.interval.messages", "flush.messages"),
    ("log.flush.interval.ms", "flush.ms"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    ("log.segment.delete.delay.ms", "file.delete.delay.ms"),
];

/// Topic configs with a fixed value on a single-node broker: accepted only at that value so
/// that tools which set them explicitly keep working.
pub const FIXED_TOPIC_CONFIGS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("compression.type", "producer"),
    ("min.insync.replicas", "1"),
];

/// All topic config names Gregor knows, sorted.
pub fn known_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = BROKER_DEFAULT_NAMES
        .iter()
        .map(|(_, t)| *t)
        .chain(FIXED_TOPIC_CONFIGS.iter().map(|(n, _)| *n))
        .collect();
    names.sort_unstable();
    names
}

/// Checks one topic config value. Returns a human-readable reason on rejection.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    if let Some((_, fixed)) = FIXED_TOPIC_CONFIGS.iter().find(|(n, _)| *n == name) {
        return if value == *fixed {
            Ok(())
        } else {
            Err(format!("only '{fixed}' is supported"))
        };
    }
    // Kafka types each config INT (32 bits) or LONG (64 bits) and refuses a value out of
    // its type's range; an INT accepted here would otherwise be clamped silently.
    let in_range = |min: i64, max: i64| -> Result<(), String> {
        match value.trim().parse::<i64>() {
            Ok(v) if v < min => Err(format!("must be >= {min}")),
            Ok(v) if v > max => Err(format!("must be <= {max} (a 32-bit integer)")),
            Ok(_) => Ok(()),
            Err(_) => Err("not an integer".to_string()),
        }
    };
    let int32 = |min: i64| in_range(min, i32::MAX as i64);
    let int = |min: i64| in_range(min, i64::MAX);
    match name {
        "max.message.bytes" => int32(0),
        "segment.bytes" => int32(14),
        "segment.ms" => int(1),
        "retention.ms" => int(-1),
        "retention.bytes" => int(-1),
        "flush.messages" => int(1),
        "flush.ms" => int(0),
        "index.interval.bytes" => int32(0),
        "file.delete.delay.ms" => int(0),
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err("expected CreateTime or LogAppendTime".to_string()),
        },
        _ => Err("unknown topic config".to_string()),
    }
}

/// Whether a topic config name is known.
pub fn is_known(name: &str) -> bool {
    BROKER_DEFAULT_NAMES.iter().any(|(_, t)| *t == name)
        || FIXED_TOPIC_CONFIGS.iter().any(|(n, _)| *n == name)
}

/// The effective value of `name` for a topic, and whether it is the broker default.
pub fn effective_value(
    name: &str,
    overrides: &BTreeMap<String, String>,
    defaults: &BTreeMap<String, String>,
) -> Option<(String, bool)> {
    if let Some(v) = overrides.get(name) {
        return Some((v.clone(), false));
    }
    if let Some(v) = defaults.get(name) {
        return Some((v.clone(), true));
    }
    FIXED_TOPIC_CONFIGS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| (v.to_string(), true))
}

/// Typed effective topic config, as the partition logs need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    /// Largest record batch accepted, bytes.
    pub max_message_bytes: u64,
    /// Segment roll size, bytes.
    pub segment_bytes: u64,
    /// Segment roll age, ms.
    pub segment_ms: u64,
    /// Retention by age, ms; `None` keeps forever.
    pub retention_ms: Option<u64>,
    /// Retention by size per partition, bytes; `None` = no limit.
    pub retention_bytes: Option<u64>,
    /// fsync after this many messages.
    pub flush_messages: u64,
    /// fsync at least this often, ms.
    pub flush_ms: u64,
    /// Bytes between sparse index entries.
    pub index_interval_bytes: u64,
    /// Broker assigns timestamps (LogAppendTime) instead of the producer (CreateTime).
    pub log_append_time: bool,
    /// How long a removed segment stays on disk before background deletion, ms.
    pub file_delete_delay_ms: u64,
}

impl TopicConfig {
    /// Resolves overrides over defaults. Values were validated on the way in; anything that
    /// still fails to parse falls back to a safe constant rather than failing the partition.
    pub fn resolve(
        overrides: &BTreeMap<String, String>,
        defaults: &BTreeMap<String, String>,
    ) -> Self {
        let get = |name: &str| effective_value(name, overrides, defaults).map(|(v, _)| v);
        let num = |name: &str, fallback: i64| -> i64 {
            get(name)
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(fallback)
        };
        let opt = |v: i64| if v < 0 { None } else { Some(v as u64) };
        Self {
            max_message_bytes: num("max.message.bytes", 1_048_588).max(0) as u64,
            segment_bytes: num("segment.bytes", 1 << 30).max(14) as u64,
            segment_ms: num("segment.ms", 604_800_000).max(1) as u64,
            retention_ms: opt(num("retention.ms", 604_800_000)),
            retention_bytes: opt(num("retention.bytes", -1)),
            flush_messages: num("flush.messages", i64::MAX).max(1) as u64,
            flush_ms: num("flush.ms", i64::MAX).max(0) as u64,
            index_interval_bytes: num("index.interval.bytes", 4096).max(0) as u64,
            log_append_time: get("message.timestamp.type").as_deref() == Some("LogAppendTime"),
            file_delete_delay_ms: num("file.delete.delay.ms", 60_000).max(0) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "abc").is_err());
        assert!(validate("segment.bytes", "10").is_err());
        assert!(validate("segment.bytes", "2147483647").is_ok());
        assert!(validate("segment.bytes", "2147483648").is_err());
        assert!(validate("max.message.bytes", "8589934592").is_err());
        assert!(validate("index.interval.bytes", "4294967296").is_err());
        assert!(validate("retention.bytes", "8589934592").is_ok());
        assert!(validate("cleanup.policy", "delete").is_ok());
        assert!(validate("cleanup.policy", "compact").is_err());
        assert!(validate("no.such.config", "1").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
    }

    #[test]
    fn resolve_prefers_overrides() {
        let mut defaults = BTreeMap::new();
        defaults.insert("retention.ms".to_string(), "1000".to_string());
        defaults.insert("segment.bytes".to_string(), "4096".to_string());
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "-1".to_string());
        let c = TopicConfig::resolve(&overrides, &defaults);
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.segment_bytes, 4096);
        assert!(!c.log_append_time);
        assert_eq!(
            effective_value("retention.ms", &overrides, &defaults),
            Some(("-1".to_string(), false))
        );
        assert_eq!(
            effective_value("segment.bytes", &overrides, &defaults),
            Some(("4096".to_string(), true))
        );
    }
}
