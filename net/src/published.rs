//! A partition's offsets as its owning core last published them, readable from every core.
//!
//! A Fetch over partitions on several cores used to ask each owning core to read its
//! partitions, even those with nothing new: at the tail, where consumers wait for data, every
//! fetch cost a round trip to each other core (two executor wake-ups) before it could even
//! start waiting. The owner now publishes each partition's high watermark and log start in
//! atomics after every change, and a fetching core answers a partition of another core whose
//! published high watermark equals the fetch offset itself (empty, as the owner would).
//!
//! A published value may lag the log by nothing more than the store's visibility: the owner
//! publishes in the same step that moves the high watermark. A stale value only sends the
//! fetch on to wait at the owner, whose wait sees the data at once and reads it (see
//! `handlers/fetch.rs`), so nothing is missed, and the owner still answers everything else
//! (data, errors, offsets out of range).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// One partition's offsets, written by its owning core only.
#[derive(Debug)]
pub struct PublishedOffsets {
    /// The topic's id when the partition was opened: a topic deleted and created again under
    /// the same name has a new id, so an old entry never answers for the new topic.
    topic_id: u128,
    high_watermark: AtomicI64,
    log_start_offset: AtomicI64,
    /// Set by the first publication (the log is open).
    opened: AtomicBool,
    /// Set once the log is closed or deleted, never cleared: the owner answers from then on.
    closed: AtomicBool,
}

impl PublishedOffsets {
    /// Offsets of a partition of topic `topic_id`, not yet open.
    pub fn new(topic_id: u128) -> Arc<Self> {
        Arc::new(PublishedOffsets {
            topic_id,
            high_watermark: AtomicI64::new(-1),
            log_start_offset: AtomicI64::new(-1),
            opened: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    /// The topic id the partition was opened under.
    pub fn topic_id(&self) -> u128 {
        self.topic_id
    }

    /// Publishes the partition's current offsets (owner core only).
    pub fn publish(&self, high_watermark: i64, log_start_offset: i64) {
        self.log_start_offset
            .store(log_start_offset, Ordering::Release);
        self.high_watermark.store(high_watermark, Ordering::Release);
        self.opened.store(true, Ordering::Release);
    }

    /// The log is closing: other cores must ask the owner from now on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// `(high_watermark, log_start_offset)` if the partition is open as topic `topic_id` and
    /// has nothing at or past `fetch_offset`.
    pub fn caught_up(&self, topic_id: u128, fetch_offset: i64) -> Option<(i64, i64)> {
        if !self.current(topic_id) {
            return None;
        }
        let high_watermark = self.high_watermark.load(Ordering::Acquire);
        let log_start_offset = self.log_start_offset.load(Ordering::Acquire);
        (high_watermark == fetch_offset && log_start_offset <= fetch_offset)
            .then_some((high_watermark, log_start_offset))
    }

    /// Whether this is a live partition of topic `topic_id`.
    fn current(&self, topic_id: u128) -> bool {
        self.topic_id == topic_id
            && self.opened.load(Ordering::Acquire)
            && !self.closed.load(Ordering::Acquire)
    }
}

/// The published offsets of other cores' partitions that this core's fetches have read,
/// learned from the owners' answers. At most one entry per partition of the cluster; a
/// deleted topic's entries go when the deletion is applied here.
#[derive(Default)]
pub struct RemoteOffsets {
    by_topic: RefCell<HashMap<String, HashMap<i32, Arc<PublishedOffsets>>>>,
}

impl RemoteOffsets {
    /// `(high_watermark, log_start_offset)` of `topic`/`partition` (topic id `topic_id`) if
    /// its owner published that it has nothing at or past `fetch_offset`.
    pub fn caught_up(
        &self,
        topic: &str,
        partition: i32,
        topic_id: u128,
        fetch_offset: i64,
    ) -> Option<(i64, i64)> {
        self.by_topic
            .borrow()
            .get(topic)?
            .get(&partition)?
            .caught_up(topic_id, fetch_offset)
    }

    /// Keeps `published` for `topic`/`partition`, replacing an entry for an older topic of
    /// that name or a closed log.
    pub fn remember(&self, topic: &str, partition: i32, published: &Arc<PublishedOffsets>) {
        let mut by_topic = self.by_topic.borrow_mut();
        if let Some(partitions) = by_topic.get_mut(topic) {
            match partitions.get(&partition) {
                Some(known) if Arc::ptr_eq(known, published) => {}
                _ => {
                    partitions.insert(partition, published.clone());
                }
            }
            return;
        }
        by_topic.insert(
            topic.to_string(),
            HashMap::from([(partition, published.clone())]),
        );
    }

    /// Drops `topic`'s entries (it was deleted).
    pub fn forget_topic(&self, topic: &str) {
        self.by_topic.borrow_mut().remove(topic);
    }

    /// Partitions with an entry.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_topic.borrow().values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_for_an_open_caught_up_partition_of_the_same_topic() {
        let p = PublishedOffsets::new(7);
        assert_eq!(p.caught_up(7, 0), None, "not open yet");
        p.publish(10, 2);
        assert_eq!(p.caught_up(7, 10), Some((10, 2)));
        assert_eq!(p.caught_up(7, 9), None, "data at 9");
        assert_eq!(p.caught_up(7, 11), None, "out of range: the owner answers");
        assert_eq!(p.caught_up(8, 10), None, "another topic of that name");
        p.publish(10, 11);
        assert_eq!(p.caught_up(7, 10), None, "below the log start");
        p.publish(12, 2);
        p.close();
        assert_eq!(p.caught_up(7, 12), None, "closed");
        p.publish(12, 2);
        assert_eq!(p.caught_up(7, 12), None, "closed for good");
    }

    #[test]
    fn remembers_per_partition_and_forgets_deleted_topics() {
        let remote = RemoteOffsets::default();
        let (a, b) = (PublishedOffsets::new(1), PublishedOffsets::new(1));
        a.publish(5, 0);
        b.publish(6, 0);
        remote.remember("t", 0, &a);
        remote.remember("t", 1, &b);
        remote.remember("t", 1, &b);
        assert_eq!(remote.len(), 2);
        assert_eq!(remote.caught_up("t", 0, 1, 5), Some((5, 0)));
        assert_eq!(remote.caught_up("t", 1, 1, 5), None);
        assert_eq!(remote.caught_up("u", 0, 1, 5), None);
        // The topic is created again: the old entry does not answer for the new id, and the
        // new partition's offsets replace it once learned.
        let a2 = PublishedOffsets::new(2);
        a2.publish(0, 0);
        assert_eq!(remote.caught_up("t", 0, 2, 0), None);
        remote.remember("t", 0, &a2);
        assert_eq!(remote.caught_up("t", 0, 2, 0), Some((0, 0)));
        assert_eq!(remote.len(), 2);
        remote.forget_topic("t");
        assert_eq!(remote.len(), 0);
    }
}
