//! A raw Kafka-protocol client over `std::net::TcpStream` (kafka-protocol codecs, our own
//! framing) and an in-process broker fixture, for the broker's integration tests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use gregor_net::{ConfigBuilder, ServerHandle};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// A broker running in this process on a free port with a temporary data directory.
pub struct Broker {
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Broker {
    pub fn start(settings: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, settings)
    }

    pub fn start_in(dir: tempfile::TempDir, settings: &[(&str, &str)]) -> Broker {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("GREGOR_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let mut b = ConfigBuilder::new();
        b.set("listen", "127.0.0.1:0", "test").unwrap();
        b.set("data.dir", dir.path().to_str().unwrap(), "test")
            .unwrap();
        b.set("cores", "2", "test").unwrap();
        for (k, v) in settings {
            b.set(k, v, "test").unwrap();
        }
        let handle = gregor_net::start(b.build().unwrap()).unwrap();
        let addr = handle.local_addr();
        Broker {
            handle: Some(handle),
            addr,
            dir,
        }
    }

    /// Clean shutdown; returns the data directory for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        if let Some(h) = self.handle.take() {
            h.shutdown().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown();
        }
    }
}

pub struct Client {
    pub stream: TcpStream,
    next_id: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client { stream, next_id: 1 }
    }

    /// Sends one request; returns its correlation id.
    pub fn send<R: Encodable>(&mut self, key: ApiKey, version: i16, request: &R) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("gregor-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        self.send_raw(&body);
        id
    }

    /// Sends a body with a correct length prefix.
    pub fn send_raw(&mut self, body: &[u8]) {
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).unwrap();
    }

    /// Reads one response frame (without the length prefix); `None` if the broker closed.
    pub fn recv_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        if self.stream.read_exact(&mut len).is_err() {
            return None;
        }
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    pub fn recv<R: Decodable>(&mut self, key: ApiKey, version: i16) -> (i32, R) {
        let mut frame = self.recv_frame().expect("connection closed");
        let header =
            ResponseHeader::decode(&mut frame, key.response_header_version(version)).unwrap();
        let response = R::decode(&mut frame, version).unwrap();
        assert!(frame.is_empty(), "{} trailing bytes", frame.len());
        (header.correlation_id, response)
    }

    pub fn call<Q: Encodable, R: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Q,
    ) -> R {
        let id = self.send(key, version, request);
        let (got, response) = self.recv(key, version);
        assert_eq!(got, id, "correlation id");
        response
    }

    /// True if the broker closed the connection (read returns EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.stream.read(&mut buf), Ok(0) | Err(_))
    }

    pub fn create_topic(&mut self, name: &str, partitions: i32) -> CreateTopicsResponse {
        let request = CreateTopicsRequest::default()
            .with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(topic(name))
                    .with_num_partitions(partitions)
                    .with_replication_factor(1),
            ])
            .with_timeout_ms(10_000);
        self.call(ApiKey::CreateTopics, 7, &request)
    }

    /// Produces `records` as one batch to one partition; returns (error code, base offset).
    pub fn produce(
        &mut self,
        topic_name: &str,
        partition: i32,
        batch: Bytes,
        acks: i16,
    ) -> (i16, i64) {
        let request = produce_request(topic_name, partition, batch, acks);
        let response: ProduceResponse = self.call(ApiKey::Produce, 9, &request);
        let p = &response.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    /// Sessionless fetch of one partition at Fetch v`version` (names below v13, ids from v13).
    // A test helper mirroring the request's fields; a struct would only add noise here.
    #[allow(clippy::too_many_arguments)]
    pub fn fetch(
        &mut self,
        version: i16,
        topic_name: &str,
        topic_id: uuid::Uuid,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        min_bytes: i32,
    ) -> fetch_response::PartitionData {
        let mut t = fetch_request::FetchTopic::default().with_partitions(vec![
            fetch_request::FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20),
        ]);
        if version >= 13 {
            t = t.with_topic_id(topic_id);
        } else {
            t = t.with_topic(topic(topic_name));
        }
        let mut request = FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(min_bytes)
            .with_max_bytes(50 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![t]);
        if version < 15 {
            request = request.with_replica_id(BrokerId(-1));
        }
        let response: FetchResponse = self.call(ApiKey::Fetch, version, &request);
        assert_eq!(response.error_code, 0);
        assert_eq!(response.session_id, 0);
        response.responses[0].partitions[0].clone()
    }

    pub fn metadata(&mut self, topics: Option<Vec<&str>>, auto_create: bool) -> MetadataResponse {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|t| {
                t.into_iter()
                    .map(|n| {
                        metadata_request::MetadataRequestTopic::default().with_name(Some(topic(n)))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(auto_create);
        self.call(ApiKey::Metadata, 12, &request)
    }
}

/// A Fetch request (v4 to v12 form: topic by name) for `partitions` of `topic_name`, each as
/// `(partition, fetch offset)` with 1 MiB per partition.
pub fn fetch_request(
    topic_name: &str,
    partitions: &[(i32, i64)],
    max_wait_ms: i32,
    min_bytes: i32,
    max_bytes: i32,
) -> FetchRequest {
    let partitions = partitions
        .iter()
        .map(|&(partition, offset)| {
            fetch_request::FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_session_epoch(-1)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(topic(topic_name))
                .with_partitions(partitions),
        ])
}

pub fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub fn produce_request(
    topic_name: &str,
    partition: i32,
    batch: Bytes,
    acks: i16,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(topic(topic_name))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch)),
                ]),
        ])
}

/// One v2 batch of (key, value) records with the given timestamps.
pub fn batch(records: &[(&str, &str, i64)], compression: Compression) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v, ts))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: *ts,
            key: Some(Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

/// Decodes fetched records into (offset, key, value, timestamp).
pub fn decode(records: &Option<Bytes>) -> Vec<(i64, String, String, i64)> {
    let mut bytes = records.clone().unwrap_or_default();
    let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap();
    sets.into_iter()
        .flat_map(|s| s.records)
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.key.unwrap_or_default().to_vec()).unwrap(),
                String::from_utf8(r.value.unwrap_or_default().to_vec()).unwrap(),
                r.timestamp,
            )
        })
        .collect()
}

pub fn topic_id(metadata: &MetadataResponse, name: &str) -> uuid::Uuid {
    metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(name))
        .map(|t| t.topic_id)
        .unwrap()
}
