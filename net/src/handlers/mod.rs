//! One module per Kafka API. [`dispatch`] decodes the request body with `kafka-protocol`,
//! calls the API's `handle`, and encodes the response at the request's version.
//!
//! Adding an API: a new module with `handle(ctx, header, request) -> response`, a row in
//! [`SUPPORTED_APIS`], and an arm in [`dispatch`]. Only APIs listed here are advertised in
//! ApiVersions.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, FetchRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, ListOffsetsRequest, MetadataRequest,
    ProduceRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::cores::CoreContext;

pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod fetch;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod produce;
// Consumer groups.
pub mod delete_groups;
pub mod describe_groups;
pub mod find_coordinator;
pub mod heartbeat;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod sync_group;

/// (API, lowest version, highest version) this broker serves. Versions are those that
/// librdkafka 2.x, kafka-python and the Java client 3.x/4.x negotiate, within what
/// `kafka-protocol` can encode.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 4),
];

/// The supported version range of `key`, if it is served at all.
pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

/// A request that cannot be answered; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Unknown or unsupported API key.
    #[error("unsupported api key {0}")]
    UnknownApi(i16),
    /// API served, but not at this version (and it is not ApiVersions).
    #[error("unsupported version {version} of {key:?}")]
    UnsupportedVersion {
        /// API.
        key: ApiKey,
        /// Version asked for.
        version: i16,
    },
    /// The bytes do not decode.
    #[error("malformed {key:?} v{version} request: {message}")]
    Malformed {
        /// API.
        key: ApiKey,
        /// Version.
        version: i16,
        /// Decoder message.
        message: String,
    },
    /// Our response failed to encode (a bug, logged loudly).
    #[error("cannot encode {key:?} v{version} response: {message}")]
    Encode {
        /// API.
        key: ApiKey,
        /// Version.
        version: i16,
        /// Encoder message.
        message: String,
    },
}

/// What to send back for one request.
pub enum Reply {
    /// A complete frame (length prefix included).
    Frame(Bytes),
    /// A complete frame in parts that reference record data in memory or on disk (see
    /// `crate::vectored`).
    Parts(Vec<crate::vectored::Part>),
    /// Nothing (Produce with acks=0).
    None,
    /// Nothing, and close the connection (a failed Produce with acks=0, as Kafka does).
    Close,
}

/// Encodes header + body into one length-prefixed frame.
pub fn encode_frame<R: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    header_version: i16,
    body: &R,
) -> Result<Bytes, RequestError> {
    let frame = FrameShape {
        key,
        version,
        correlation_id,
        header_version,
    };
    let total = frame.size_after_prefix(body)?;
    let mut buf = BytesMut::with_capacity(4 + total);
    frame.write(&mut buf, body, total)?;
    Ok(buf.freeze())
}

/// What a response frame's header says: the encoding shared by the copying encoder above and
/// the one that references record data (`crate::vectored`).
pub struct FrameShape {
    /// API.
    pub key: ApiKey,
    /// Body version.
    pub version: i16,
    /// Echoed from the request.
    pub correlation_id: i32,
    /// Response header version.
    pub header_version: i16,
}

impl FrameShape {
    /// An encoding failure (a bug, logged loudly by the connection).
    pub fn error(&self, e: &dyn std::fmt::Display) -> RequestError {
        RequestError::Encode {
            key: self.key,
            version: self.version,
            message: e.to_string(),
        }
    }

    fn header(&self) -> ResponseHeader {
        ResponseHeader::default().with_correlation_id(self.correlation_id)
    }

    /// Bytes after the length prefix: header plus body.
    pub fn size_after_prefix<R: Encodable>(&self, body: &R) -> Result<usize, RequestError> {
        let header_bytes = self
            .header()
            .compute_size(self.header_version)
            .map_err(|e| self.error(&e))?;
        let body_bytes = body
            .compute_size(self.version)
            .map_err(|e| self.error(&e))?;
        Ok(header_bytes + body_bytes)
    }

    /// Writes the length prefix (`total`, from [`FrameShape::size_after_prefix`]), the header
    /// and the body into `buf`.
    pub fn write<B: ByteBufMut, R: Encodable>(
        &self,
        buf: &mut B,
        body: &R,
        total: usize,
    ) -> Result<(), RequestError> {
        buf.put_i32(total as i32);
        self.header()
            .encode(buf, self.header_version)
            .map_err(|e| self.error(&e))?;
        body.encode(buf, self.version).map_err(|e| self.error(&e))
    }
}

fn decode<T: Decodable>(key: ApiKey, version: i16, body: &mut Bytes) -> Result<T, RequestError> {
    T::decode(body, version).map_err(|e| RequestError::Malformed {
        key,
        version,
        message: e.to_string(),
    })
}

/// The answer of a Produce already handed to its partitions' cores (see [`start_produce`]).
pub type PendingReply = Pin<Box<dyn Future<Output = Result<Reply, RequestError>>>>;

/// Decodes a Produce whose header was already parsed and hands its records to the cores that
/// own their partitions. Returns once they are handed over; the future it returns waits for
/// the appends and encodes the answer. A Produce started after this returns is appended after
/// this one wherever they share a partition, so a connection may start the next before this
/// one is answered (answering them in order).
pub async fn start_produce(
    ctx: &Rc<CoreContext>,
    header: &RequestHeader,
    mut body: Bytes,
) -> Result<PendingReply, RequestError> {
    let key = ApiKey::Produce;
    let version = header.request_api_version;
    check_version(key, header)?;
    let header_version = key.response_header_version(version);
    let cid = header.correlation_id;
    let request: ProduceRequest = decode(key, version, &mut body)?;
    let issued = produce::issue(ctx, header, request).await;
    Ok(Box::pin(async move {
        Ok(match issued.finish().await {
            produce::Produced::Response(response) => {
                Reply::Frame(encode_frame(key, version, cid, header_version, &response)?)
            }
            produce::Produced::Silent => Reply::None,
            produce::Produced::SilentFailure => Reply::Close,
        })
    }))
}

/// Whether this broker serves `key` at the header's version.
fn check_version(key: ApiKey, header: &RequestHeader) -> Result<(), RequestError> {
    let version = header.request_api_version;
    match supported_range(key) {
        Some((min, max)) if (min..=max).contains(&version) => Ok(()),
        Some(_) => Err(RequestError::UnsupportedVersion { key, version }),
        None => Err(RequestError::UnknownApi(header.request_api_key)),
    }
}

/// Decodes, handles and encodes one request whose header was already parsed.
pub async fn dispatch(
    ctx: &Rc<CoreContext>,
    key: ApiKey,
    header: &RequestHeader,
    mut body: Bytes,
    peer: std::net::SocketAddr,
) -> Result<Reply, RequestError> {
    let version = header.request_api_version;
    check_version(key, header)?;
    let header_version = key.response_header_version(version);
    let cid = header.correlation_id;
    macro_rules! respond {
        ($req:ty, $module:ident) => {{
            let request: $req = decode(key, version, &mut body)?;
            let response = $module::handle(ctx, header, request).await;
            Reply::Frame(encode_frame(key, version, cid, header_version, &response)?)
        }};
    }
    Ok(match key {
        ApiKey::ApiVersions => respond!(ApiVersionsRequest, api_versions),
        ApiKey::Metadata => respond!(MetadataRequest, metadata),
        ApiKey::Produce => start_produce(ctx, header, body).await?.await?,
        ApiKey::Fetch => {
            let request: FetchRequest = decode(key, version, &mut body)?;
            let (response, files) = fetch::handle(ctx, header, request).await;
            // Record batches go out by reference (memory) or by sendfile (disk), not copied
            // into the frame.
            let shared = fetch::record_slices(&response);
            Reply::Parts(crate::vectored::encode_frame_parts(
                key,
                version,
                cid,
                header_version,
                &response,
                shared,
                files,
            )?)
        }
        ApiKey::ListOffsets => respond!(ListOffsetsRequest, list_offsets),
        ApiKey::CreateTopics => respond!(CreateTopicsRequest, create_topics),
        ApiKey::DeleteTopics => respond!(DeleteTopicsRequest, delete_topics),
        ApiKey::CreatePartitions => respond!(CreatePartitionsRequest, create_partitions),
        ApiKey::DescribeConfigs => respond!(DescribeConfigsRequest, describe_configs),
        ApiKey::IncrementalAlterConfigs => {
            respond!(IncrementalAlterConfigsRequest, incremental_alter_configs)
        }
        ApiKey::DescribeCluster => respond!(DescribeClusterRequest, describe_cluster),
        ApiKey::DeleteRecords => respond!(DeleteRecordsRequest, delete_records),
        ApiKey::FindCoordinator => respond!(FindCoordinatorRequest, find_coordinator),
        ApiKey::JoinGroup => {
            let request: JoinGroupRequest = decode(key, version, &mut body)?;
            let response = join_group::handle(ctx, header, peer, request).await;
            Reply::Frame(encode_frame(key, version, cid, header_version, &response)?)
        }
        ApiKey::SyncGroup => respond!(SyncGroupRequest, sync_group),
        ApiKey::Heartbeat => respond!(HeartbeatRequest, heartbeat),
        ApiKey::LeaveGroup => respond!(LeaveGroupRequest, leave_group),
        ApiKey::OffsetCommit => respond!(OffsetCommitRequest, offset_commit),
        ApiKey::OffsetFetch => respond!(OffsetFetchRequest, offset_fetch),
        ApiKey::ListGroups => respond!(ListGroupsRequest, list_groups),
        ApiKey::DescribeGroups => respond!(DescribeGroupsRequest, describe_groups),
        ApiKey::DeleteGroups => respond!(DeleteGroupsRequest, delete_groups),
        ApiKey::OffsetDelete => respond!(OffsetDeleteRequest, offset_delete),
        ApiKey::InitProducerId => respond!(InitProducerIdRequest, init_producer_id),
        _ => return Err(RequestError::UnknownApi(header.request_api_key)),
    })
}

/// Converts a string to the protocol's string type.
pub fn str_bytes(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_string())
}

/// Topic name newtype from a string.
pub fn topic_name(s: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(str_bytes(s))
}
