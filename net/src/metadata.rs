//! Cluster metadata: topics, their ids, partition counts and config overrides.
//!
//! Core 0 owns the authoritative copy and is the only writer ([`crate::admin`]); every core
//! holds a read-only [`MetadataImage`] snapshot, replaced whole when core 0 broadcasts a
//! [`MetadataChange`]. Snapshots are `Rc`-shared, so a handler takes one and never holds a
//! borrow across an await.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the metadata file inside the data directory.
pub const METADATA_FILE: &str = "__gregor_metadata.json";

/// Longest topic name Kafka accepts.
pub const TOPIC_NAME_MAX_CHARS: usize = 249;

/// Upper bound on partitions per topic, so a hostile CreateTopics cannot make us open
/// millions of files.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Random UUID, used by Fetch v13+ and Metadata v10+.
    pub id: u128,
    /// Partition count.
    pub partitions: i32,
    /// Topic config overrides (only those set explicitly).
    pub configs: BTreeMap<String, String>,
}

/// The whole metadata state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Cluster id, generated on first start.
    pub cluster_id: String,
    /// Incremented by every change.
    pub epoch: u64,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
}

/// One change, applied by every core in the order core 0 made them.
#[derive(Clone, Debug)]
pub enum MetadataChange {
    /// A topic was created.
    CreateTopic {
        /// Name.
        name: String,
        /// Its metadata.
        meta: TopicMeta,
    },
    /// A topic was deleted.
    DeleteTopic {
        /// Name.
        name: String,
    },
    /// Partitions were added (count only grows).
    SetPartitions {
        /// Name.
        name: String,
        /// New partition count.
        partitions: i32,
    },
    /// Config overrides replaced.
    SetConfigs {
        /// Name.
        name: String,
        /// New overrides.
        configs: BTreeMap<String, String>,
    },
}

impl MetadataImage {
    /// A new empty image with a fresh random cluster id.
    pub fn fresh() -> Self {
        let id = uuid::Uuid::from_u128(rand::random::<u128>());
        Self {
            cluster_id: base64_url(id.as_bytes()),
            epoch: 0,
            topics: BTreeMap::new(),
        }
    }

    /// Applies a change to this image.
    pub fn apply(&mut self, change: &MetadataChange) {
        self.epoch += 1;
        match change {
            MetadataChange::CreateTopic { name, meta } => {
                self.topics.insert(name.clone(), meta.clone());
            }
            MetadataChange::DeleteTopic { name } => {
                self.topics.remove(name);
            }
            MetadataChange::SetPartitions { name, partitions } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.partitions = *partitions;
                }
            }
            MetadataChange::SetConfigs { name, configs } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.configs = configs.clone();
                }
            }
        }
    }

    /// Finds a topic by id.
    pub fn topic_by_id(&self, id: u128) -> Option<(&String, &TopicMeta)> {
        self.topics.iter().find(|(_, t)| t.id == id)
    }

    /// The CRC32C of the image's compact JSON form: what the metadata file's `crc32c`
    /// field must match.
    fn checksum(&self) -> Result<u32, serde_json::Error> {
        Ok(gregor_engine::batch::crc32c(&serde_json::to_vec(self)?))
    }

    /// Loads the image from `data_dir`, or a fresh one if the file does not exist. A file
    /// whose checksum does not match is refused: a bit flip that still parses (a renamed
    /// topic, a changed partition count) must stop the broker, not silently change topics.
    pub fn load(data_dir: &Path) -> Result<Self, MetadataError> {
        let path = data_dir.join(METADATA_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::fresh()),
            Err(source) => return Err(MetadataError::Io { path, source }),
        };
        let corrupt = |message: String| MetadataError::Corrupt {
            path: path.clone(),
            message,
        };
        let file: MetadataFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let image = MetadataImage {
            cluster_id: file.cluster_id,
            epoch: file.epoch,
            topics: file.topics,
        };
        let actual = image.checksum().map_err(|e| corrupt(e.to_string()))?;
        if actual != file.crc32c {
            return Err(corrupt(format!(
                "checksum mismatch (stored {:08x}, computed {actual:08x})",
                file.crc32c
            )));
        }
        Ok(image)
    }

    /// Writes the image atomically: temp file, fsync, rename, fsync the directory. A crash
    /// leaves either the old or the new file, never a torn one.
    pub fn save(&self, data_dir: &Path) -> Result<(), MetadataError> {
        let path = data_dir.join(METADATA_FILE);
        let tmp = data_dir.join(format!("{METADATA_FILE}.tmp"));
        let io = |source| MetadataError::Io {
            path: path.clone(),
            source,
        };
        let encode_err = |e: serde_json::Error| MetadataError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        };
        let file = MetadataFile {
            cluster_id: self.cluster_id.clone(),
            epoch: self.epoch,
            topics: self.topics.clone(),
            crc32c: self.checksum().map_err(encode_err)?,
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(encode_err)?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

/// The metadata file: the image's fields plus a checksum of them, still plain JSON so an
/// operator can read it.
#[derive(Serialize, Deserialize)]
struct MetadataFile {
    cluster_id: String,
    epoch: u64,
    topics: BTreeMap<String, TopicMeta>,
    /// CRC32C of the image's compact JSON serialisation.
    crc32c: u32,
}

/// Metadata file errors.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// I/O failure.
    #[error("metadata file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("metadata file {path} is corrupt: {message}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
}

/// Kafka's topic name rule: 1..=249 chars of `[a-zA-Z0-9._-]`, not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".to_string());
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'".to_string());
    }
    if name.len() > TOPIC_NAME_MAX_CHARS {
        return Err(format!(
            "topic name is longer than {TOPIC_NAME_MAX_CHARS} characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "topic name '{name}' contains characters other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Directory of one partition inside the data directory, as Kafka names it.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// Unpadded URL-safe base64, the form Kafka cluster ids take.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders_v1.x-y").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut image = MetadataImage::fresh();
        assert_eq!(image.cluster_id.len(), 22);
        image.apply(&MetadataChange::CreateTopic {
            name: "t".to_string(),
            meta: TopicMeta {
                id: 7,
                partitions: 3,
                configs: BTreeMap::new(),
            },
        });
        image.save(dir.path()).unwrap();
        let loaded = MetadataImage::load(dir.path()).unwrap();
        assert_eq!(loaded, image);
        // A change that still parses (topic renamed) is caught by the checksum.
        let path = dir.path().join(METADATA_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"t\""));
        std::fs::write(&path, text.replace("\"t\"", "\"u\"")).unwrap();
        let err = MetadataImage::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(MetadataImage::load(dir.path()).is_err());
    }
}
