//! The durable form of coordinator state: key/value records of the internal topic
//! `__consumer_offsets`. Gregor's own schema (not Kafka's byte layout, though shaped like it).
//!
//! All integers are big-endian. `str` is an i16 length then UTF-8 bytes; `nstr` is the same
//! with length -1 for null; `bytes` is an i32 length then the bytes.
//!
//! Key (every record has one; the key alone identifies what the value replaces):
//! ```text
//! i16 key_type      1 = committed offset, 2 = group metadata
//! str group_id
//! -- key_type 1 only:
//! str topic
//! i32 partition
//! ```
//! Offset value (key_type 1), a null value is a tombstone (offset deleted or expired):
//! ```text
//! i16 value_version = 1
//! i64 offset
//! i32 leader_epoch          -1 when the client sent none
//! str metadata
//! i64 commit_timestamp_ms
//! ```
//! Group value (key_type 2), a null value is a tombstone (group deleted; its offsets get
//! their own tombstones):
//! ```text
//! i16 value_version = 1
//! nstr protocol_type        null for a group used only to store offsets
//! i32 generation_id
//! nstr protocol_name
//! nstr leader_id
//! i64 state_timestamp_ms    when the group last changed state (empty-since for retention)
//! i32 member_count, then per member:
//!   str member_id, nstr group_instance_id, str client_id, str client_host,
//!   i32 rebalance_timeout_ms, i32 session_timeout_ms,
//!   bytes subscription (metadata of the selected protocol), bytes assignment
//! ```
//! Replay rule: records are applied in log order and the latest value per key wins, so any
//! suffix of the log that starts with a full snapshot of live state reproduces that state.
//! An unknown key type or value version is a typed error; the loader skips and counts it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Key type of a committed-offset record.
pub const KEY_TYPE_OFFSET: i16 = 1;
/// Key type of a group-metadata record.
pub const KEY_TYPE_GROUP: i16 = 2;
/// Value version this code writes for both record kinds.
pub const VALUE_VERSION: i16 = 1;

/// Largest member count a group record may claim; a bound for decoding hostile bytes.
const MEMBERS_MAX: i32 = 100_000;

/// A record that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes end before the field does.
    #[error("record truncated while reading {0}")]
    Truncated(&'static str),
    /// A key type this code does not know.
    #[error("unknown key type {0}")]
    UnknownKeyType(i16),
    /// A value version this code does not know.
    #[error("unknown value version {0}")]
    UnknownValueVersion(i16),
    /// A string that is not UTF-8, or a negative length where none is allowed.
    #[error("malformed field {0}")]
    Malformed(&'static str),
    /// A record whose key is missing.
    #[error("record without key")]
    MissingKey,
}

/// What a record is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    /// The committed offset of one partition for one group.
    Offset {
        /// Group id.
        group: String,
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
    },
    /// A group's membership and generation.
    Group {
        /// Group id.
        group: String,
    },
}

impl RecordKey {
    /// The group the record belongs to.
    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. } | RecordKey::Group { group } => group,
        }
    }
}

/// One committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    /// Next offset to consume.
    pub offset: i64,
    /// Leader epoch the client saw, -1 if none.
    pub leader_epoch: i32,
    /// Client-supplied metadata string.
    pub metadata: String,
    /// When the broker accepted the commit (ms since the epoch).
    pub commit_timestamp_ms: i64,
}

/// One member as stored in a group record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    /// Member id given by the coordinator.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
    /// Client id from the request header.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Rebalance timeout the member asked for.
    pub rebalance_timeout_ms: i32,
    /// Session timeout the member asked for.
    pub session_timeout_ms: i32,
    /// Protocol metadata of the selected protocol (the consumer's subscription).
    pub subscription: Bytes,
    /// The member's assignment in the current generation.
    pub assignment: Bytes,
}

/// A group as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    /// Protocol type ("consumer"), `None` for an offsets-only group.
    pub protocol_type: Option<String>,
    /// Generation id.
    pub generation_id: i32,
    /// Selected protocol (assignor) name.
    pub protocol_name: Option<String>,
    /// Leader's member id.
    pub leader_id: Option<String>,
    /// When the group entered its current state (ms since the epoch).
    pub state_timestamp_ms: i64,
    /// Members of the current generation.
    pub members: Vec<MemberValue>,
}

/// A decoded record value; `None` in [`decode`]'s output is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordValue {
    /// Value of an offset key.
    Offset(OffsetValue),
    /// Value of a group key.
    Group(GroupValue),
}

fn put_str(buf: &mut BytesMut, s: &str) {
    // Group ids, topics and member ids are far below i16::MAX bytes (validated on input);
    // truncating would corrupt, so clamp is never hit in practice but keeps the cast honest.
    let len = s.len().min(i16::MAX as usize);
    buf.put_i16(len as i16);
    buf.put_slice(&s.as_bytes()[..len]);
}

fn put_nstr(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        None => buf.put_i16(-1),
        Some(s) => put_str(buf, s),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

fn get_i16(buf: &mut Bytes, what: &'static str) -> Result<i16, RecordError> {
    if buf.remaining() < 2 {
        return Err(RecordError::Truncated(what));
    }
    Ok(buf.get_i16())
}

fn get_i32(buf: &mut Bytes, what: &'static str) -> Result<i32, RecordError> {
    if buf.remaining() < 4 {
        return Err(RecordError::Truncated(what));
    }
    Ok(buf.get_i32())
}

fn get_i64(buf: &mut Bytes, what: &'static str) -> Result<i64, RecordError> {
    if buf.remaining() < 8 {
        return Err(RecordError::Truncated(what));
    }
    Ok(buf.get_i64())
}

fn get_nstr(buf: &mut Bytes, what: &'static str) -> Result<Option<String>, RecordError> {
    let len = get_i16(buf, what)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if buf.remaining() < len {
        return Err(RecordError::Truncated(what));
    }
    let raw = buf.split_to(len);
    String::from_utf8(raw.to_vec())
        .map(Some)
        .map_err(|_| RecordError::Malformed(what))
}

fn get_str(buf: &mut Bytes, what: &'static str) -> Result<String, RecordError> {
    get_nstr(buf, what)?.ok_or(RecordError::Malformed(what))
}

fn get_bytes(buf: &mut Bytes, what: &'static str) -> Result<Bytes, RecordError> {
    let len = get_i32(buf, what)?;
    if len < 0 {
        return Err(RecordError::Malformed(what));
    }
    let len = len as usize;
    if buf.remaining() < len {
        return Err(RecordError::Truncated(what));
    }
    Ok(buf.split_to(len))
}

/// Encodes a record key.
pub fn encode_key(key: &RecordKey) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => {
            buf.put_i16(KEY_TYPE_OFFSET);
            put_str(&mut buf, group);
            put_str(&mut buf, topic);
            buf.put_i32(*partition);
        }
        RecordKey::Group { group } => {
            buf.put_i16(KEY_TYPE_GROUP);
            put_str(&mut buf, group);
        }
    }
    buf.freeze()
}

/// Encodes an offset value.
pub fn encode_offset_value(v: &OffsetValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(32 + v.metadata.len());
    buf.put_i16(VALUE_VERSION);
    buf.put_i64(v.offset);
    buf.put_i32(v.leader_epoch);
    put_str(&mut buf, &v.metadata);
    buf.put_i64(v.commit_timestamp_ms);
    buf.freeze()
}

/// Encodes a group value.
pub fn encode_group_value(v: &GroupValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(128);
    buf.put_i16(VALUE_VERSION);
    put_nstr(&mut buf, v.protocol_type.as_deref());
    buf.put_i32(v.generation_id);
    put_nstr(&mut buf, v.protocol_name.as_deref());
    put_nstr(&mut buf, v.leader_id.as_deref());
    buf.put_i64(v.state_timestamp_ms);
    buf.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_str(&mut buf, &m.member_id);
        put_nstr(&mut buf, m.group_instance_id.as_deref());
        put_str(&mut buf, &m.client_id);
        put_str(&mut buf, &m.client_host);
        buf.put_i32(m.rebalance_timeout_ms);
        buf.put_i32(m.session_timeout_ms);
        put_bytes(&mut buf, &m.subscription);
        put_bytes(&mut buf, &m.assignment);
    }
    buf.freeze()
}

/// Encodes a key and optional value (None = tombstone) into record key/value bytes.
pub fn encode(key: &RecordKey, value: Option<&RecordValue>) -> (Bytes, Option<Bytes>) {
    let v = value.map(|v| match v {
        RecordValue::Offset(o) => encode_offset_value(o),
        RecordValue::Group(g) => encode_group_value(g),
    });
    (encode_key(key), v)
}

/// Decodes a record key.
pub fn decode_key(mut buf: Bytes) -> Result<RecordKey, RecordError> {
    let key_type = get_i16(&mut buf, "key_type")?;
    match key_type {
        KEY_TYPE_OFFSET => Ok(RecordKey::Offset {
            group: get_str(&mut buf, "group")?,
            topic: get_str(&mut buf, "topic")?,
            partition: get_i32(&mut buf, "partition")?,
        }),
        KEY_TYPE_GROUP => Ok(RecordKey::Group {
            group: get_str(&mut buf, "group")?,
        }),
        other => Err(RecordError::UnknownKeyType(other)),
    }
}

fn decode_offset_value(mut buf: Bytes) -> Result<OffsetValue, RecordError> {
    let version = get_i16(&mut buf, "value_version")?;
    if version != VALUE_VERSION {
        return Err(RecordError::UnknownValueVersion(version));
    }
    Ok(OffsetValue {
        offset: get_i64(&mut buf, "offset")?,
        leader_epoch: get_i32(&mut buf, "leader_epoch")?,
        metadata: get_str(&mut buf, "metadata")?,
        commit_timestamp_ms: get_i64(&mut buf, "commit_timestamp_ms")?,
    })
}

fn decode_group_value(mut buf: Bytes) -> Result<GroupValue, RecordError> {
    let version = get_i16(&mut buf, "value_version")?;
    if version != VALUE_VERSION {
        return Err(RecordError::UnknownValueVersion(version));
    }
    let protocol_type = get_nstr(&mut buf, "protocol_type")?;
    let generation_id = get_i32(&mut buf, "generation_id")?;
    let protocol_name = get_nstr(&mut buf, "protocol_name")?;
    let leader_id = get_nstr(&mut buf, "leader_id")?;
    let state_timestamp_ms = get_i64(&mut buf, "state_timestamp_ms")?;
    let count = get_i32(&mut buf, "member_count")?;
    if !(0..=MEMBERS_MAX).contains(&count) {
        return Err(RecordError::Malformed("member_count"));
    }
    let mut members = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        members.push(MemberValue {
            member_id: get_str(&mut buf, "member_id")?,
            group_instance_id: get_nstr(&mut buf, "group_instance_id")?,
            client_id: get_str(&mut buf, "client_id")?,
            client_host: get_str(&mut buf, "client_host")?,
            rebalance_timeout_ms: get_i32(&mut buf, "rebalance_timeout_ms")?,
            session_timeout_ms: get_i32(&mut buf, "session_timeout_ms")?,
            subscription: get_bytes(&mut buf, "subscription")?,
            assignment: get_bytes(&mut buf, "assignment")?,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation_id,
        protocol_name,
        leader_id,
        state_timestamp_ms,
        members,
    })
}

/// Decodes a record's key and value; a `None` value is a tombstone.
pub fn decode(
    key: Option<Bytes>,
    value: Option<Bytes>,
) -> Result<(RecordKey, Option<RecordValue>), RecordError> {
    let key = decode_key(key.ok_or(RecordError::MissingKey)?)?;
    let value = match (value, &key) {
        (None, _) => None,
        (Some(v), RecordKey::Offset { .. }) => Some(RecordValue::Offset(decode_offset_value(v)?)),
        (Some(v), RecordKey::Group { .. }) => Some(RecordValue::Group(decode_group_value(v)?)),
    };
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_group() -> GroupValue {
        GroupValue {
            protocol_type: Some("consumer".into()),
            generation_id: 7,
            protocol_name: Some("range".into()),
            leader_id: Some("c-1".into()),
            state_timestamp_ms: 1_700_000_000_000,
            members: vec![
                MemberValue {
                    member_id: "c-1".into(),
                    group_instance_id: Some("inst-a".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::from_static(b"\x00\x01sub"),
                    assignment: Bytes::from_static(b"assign"),
                },
                MemberValue {
                    member_id: "c-2".into(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "/127.0.0.2".into(),
                    rebalance_timeout_ms: 1,
                    session_timeout_ms: 2,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        }
    }

    #[test]
    fn offset_record_round_trips() {
        let key = RecordKey::Offset {
            group: "g".into(),
            topic: "topic-é".into(),
            partition: 5,
        };
        let value = RecordValue::Offset(OffsetValue {
            offset: 42,
            leader_epoch: -1,
            metadata: "meta".into(),
            commit_timestamp_ms: 123,
        });
        let (k, v) = encode(&key, Some(&value));
        assert_eq!(
            decode(Some(k.clone()), v).unwrap(),
            (key.clone(), Some(value))
        );
        // Tombstone.
        assert_eq!(decode(Some(k), None).unwrap(), (key, None));
    }

    #[test]
    fn group_record_round_trips() {
        let key = RecordKey::Group { group: "g".into() };
        let value = RecordValue::Group(sample_group());
        let (k, v) = encode(&key, Some(&value));
        assert_eq!(decode(Some(k), v).unwrap(), (key, Some(value)));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let key = RecordKey::Group {
            group: "grp".into(),
        };
        let (k, v) = encode(&key, Some(&RecordValue::Group(sample_group())));
        let v = v.unwrap();
        for cut in 0..v.len() {
            assert!(
                decode(Some(k.clone()), Some(v.slice(..cut))).is_err(),
                "cut {cut}"
            );
        }
        for cut in 0..k.len() {
            assert!(decode_key(k.slice(..cut)).is_err(), "key cut {cut}");
        }
    }

    #[test]
    fn unknown_versions_and_types_are_typed_errors() {
        let mut bad_key = BytesMut::new();
        bad_key.put_i16(9);
        put_str(&mut bad_key, "g");
        assert_eq!(
            decode_key(bad_key.freeze()),
            Err(RecordError::UnknownKeyType(9))
        );
        let key = encode_key(&RecordKey::Group { group: "g".into() });
        let mut bad_value = BytesMut::new();
        bad_value.put_i16(2);
        assert_eq!(
            decode(Some(key), Some(bad_value.freeze())),
            Err(RecordError::UnknownValueVersion(2))
        );
        assert_eq!(decode(None, None), Err(RecordError::MissingKey));
    }

    #[test]
    fn hostile_member_count_is_rejected() {
        let mut v = BytesMut::new();
        v.put_i16(VALUE_VERSION);
        put_nstr(&mut v, None);
        v.put_i32(1);
        put_nstr(&mut v, None);
        put_nstr(&mut v, None);
        v.put_i64(0);
        v.put_i32(i32::MAX);
        let key = encode_key(&RecordKey::Group { group: "g".into() });
        assert_eq!(
            decode(Some(key), Some(v.freeze())),
            Err(RecordError::Malformed("member_count"))
        );
    }
}
