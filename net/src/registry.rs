//! The partitions one core owns. Only that core touches them: no locks, `Rc` sharing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::log::PartitionLog;
use crate::notify::LocalNotify;

/// One owned partition.
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub index: i32,
    /// Its log.
    pub log: PartitionLog,
    /// Notified after every append; long-polling fetches wait on it.
    pub appended: LocalNotify,
}

/// Partitions owned by the current core, by topic then index.
pub struct PartitionRegistry {
    topics: RefCell<HashMap<String, HashMap<i32, Rc<Partition>>>>,
    /// The core's tail-cache budget (`tail.cache.bytes.per.core`), split equally.
    tail_cache_budget_bytes: usize,
    /// The core's read-ahead budget (`fetch.read.ahead.bytes.per.core`), split equally.
    read_ahead_budget_bytes: usize,
}

impl PartitionRegistry {
    /// An empty registry whose partitions share `tail_cache_budget_bytes` of tail cache and
    /// `read_ahead_budget_bytes` of reads ahead.
    pub fn new(tail_cache_budget_bytes: usize, read_ahead_budget_bytes: usize) -> Self {
        PartitionRegistry {
            topics: RefCell::default(),
            tail_cache_budget_bytes,
            read_ahead_budget_bytes,
        }
    }

    /// Each partition's tail-cache share once `extra` more partitions are added.
    pub fn cache_share_bytes(&self, extra: usize) -> usize {
        self.tail_cache_budget_bytes / (self.len() + extra).max(1)
    }

    /// Each partition's read-ahead share once `extra` more partitions are added.
    pub fn read_ahead_share_bytes(&self, extra: usize) -> usize {
        self.read_ahead_budget_bytes / (self.len() + extra).max(1)
    }

    /// Gives every partition its equal share of the budgets; call after adding or removing
    /// partitions, so the core's totals stay within the budgets whatever their number.
    pub fn rebalance_cache(&self) {
        let cache = self.cache_share_bytes(0);
        let read_ahead = self.read_ahead_share_bytes(0);
        for partition in self.all() {
            partition.log.set_memory_shares(cache, read_ahead);
        }
    }

    /// Looks a partition up.
    pub fn get(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        self.topics.borrow().get(topic)?.get(&index).cloned()
    }

    /// Adds a partition (replacing any previous one with the same key).
    pub fn insert(&self, partition: Partition) -> Rc<Partition> {
        let partition = Rc::new(partition);
        self.topics
            .borrow_mut()
            .entry(partition.topic.clone())
            .or_default()
            .insert(partition.index, partition.clone());
        partition
    }

    /// Removes every partition of `topic`, returning them.
    pub fn remove_topic(&self, topic: &str) -> Vec<Rc<Partition>> {
        self.topics
            .borrow_mut()
            .remove(topic)
            .map(|m| m.into_values().collect())
            .unwrap_or_default()
    }

    /// The partitions of `topic` owned here.
    pub fn topic_partitions(&self, topic: &str) -> Vec<Rc<Partition>> {
        self.topics
            .borrow()
            .get(topic)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every owned partition.
    pub fn all(&self) -> Vec<Rc<Partition>> {
        self.topics
            .borrow()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Number of owned partitions.
    pub fn len(&self) -> usize {
        self.topics.borrow().values().map(|m| m.len()).sum()
    }

    /// Whether no partition is owned here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
