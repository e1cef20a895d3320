//! API version negotiation. Each API this client implements has a range it can encode; the
//! version used is the highest one inside both that range and the broker's (from ApiVersions).

use std::collections::HashMap;

use kafka_protocol::messages::ApiKey;

use super::error::{ClientError, Result};

/// The versions this client implements, per API. Fetch stops at 12 and Produce at 11 because
/// later versions address topics by id only; Metadata stops at 12 for the same reason.
pub const IMPLEMENTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
];

/// Versions agreed with one broker.
#[derive(Debug, Clone, Default)]
pub struct Negotiated {
    agreed: HashMap<i16, i16>,
    broker: HashMap<i16, (i16, i16)>,
}

impl Negotiated {
    /// Intersects the broker's advertised ranges (api key, min, max) with [`IMPLEMENTED`].
    pub fn from_broker(ranges: impl IntoIterator<Item = (i16, i16, i16)>) -> Self {
        let broker: HashMap<i16, (i16, i16)> = ranges
            .into_iter()
            .map(|(k, lo, hi)| (k, (lo, hi)))
            .collect();
        let mut agreed = HashMap::new();
        for (api, lo, hi) in IMPLEMENTED {
            if let Some((blo, bhi)) = broker.get(&(*api as i16)) {
                let (lo, hi) = ((*lo).max(*blo), (*hi).min(*bhi));
                if lo <= hi {
                    agreed.insert(*api as i16, hi);
                }
            }
        }
        Self { agreed, broker }
    }

    /// The version to use for `api`, or an error naming the API.
    pub fn version(&self, api: ApiKey) -> Result<i16> {
        self.agreed
            .get(&(api as i16))
            .copied()
            .ok_or_else(|| ClientError::UnsupportedVersion {
                api: format!("{api:?}"),
            })
    }

    /// The broker's advertised range for `api`, if any.
    pub fn broker_range(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.broker.get(&(api as i16)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_highest_common_version() {
        let n = Negotiated::from_broker([
            (ApiKey::Produce as i16, 0, 9),
            (ApiKey::Fetch as i16, 0, 17),
            (ApiKey::Metadata as i16, 13, 13),
        ]);
        assert_eq!(n.version(ApiKey::Produce).unwrap(), 9);
        assert_eq!(n.version(ApiKey::Fetch).unwrap(), 12);
        // No overlap: Metadata 13 only on the broker side.
        assert!(n.version(ApiKey::Metadata).is_err());
        // Absent from the broker.
        assert!(n.version(ApiKey::CreateTopics).is_err());
    }
}
