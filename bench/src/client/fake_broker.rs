//! A minimal in-process Kafka-protocol responder for unit tests of the client and of the load
//! tools' accounting (ApiVersions, Metadata, Produce, Fetch, ListOffsets; one node, one topic).
//! It can be told to fail some Produce batches, so tests can check that errors are reported
//! and not counted as sent. Real end-to-end checks run against the gregor binary instead.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader,
    api_versions_response::ApiVersion,
    fetch_response::{FetchableTopicResponse, PartitionData},
    list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse},
    metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic},
    produce_response::{PartitionProduceResponse, TopicProduceResponse},
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::versions::IMPLEMENTED;

/// What the fake broker does.
#[derive(Debug, Clone, Default)]
pub struct FakeConfig {
    /// The only topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: i32,
    /// Answer every n-th produced batch (1-based count over all partitions) with this error.
    pub fail_every_nth_batch: Option<(usize, i16)>,
    /// Answer every n-th Fetch (1-based) with this error for every partition, and no data.
    pub fail_every_nth_fetch: Option<(usize, i16)>,
    /// Cut each partition's Fetch data at `partition_max_bytes`, mid-batch, as Kafka does
    /// (but always past the first batch, so a consumer can progress).
    pub cut_fetch_mid_batch: bool,
    /// Highest ApiVersions version understood (older brokers); higher requests get
    /// UNSUPPORTED_VERSION in a v0 body, as KIP-511 specifies.
    pub api_versions_max: Option<i16>,
    /// Answer each Metadata request only after this long (slow client setup).
    pub metadata_delay_ms: u64,
}

#[derive(Default)]
struct State {
    logs: Vec<Vec<(i64, Bytes)>>,
    batches_seen: usize,
    fetches_seen: usize,
}

/// A running fake broker; stops when the test process ends.
pub struct FakeBroker {
    /// `127.0.0.1:port`.
    pub addr: String,
    state: Arc<Mutex<State>>,
}

impl FakeBroker {
    /// Starts listening on a free port.
    pub fn start(cfg: FakeConfig) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(Mutex::new(State {
            logs: vec![Vec::new(); cfg.partitions as usize],
            batches_seen: 0,
            fetches_seen: 0,
        }));
        let (st, a) = (state.clone(), addr.clone());
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let (st, cfg, a) = (st.clone(), cfg.clone(), a.clone());
                std::thread::spawn(move || serve(s, &cfg, &st, &a));
            }
        });
        FakeBroker { addr, state }
    }

    /// Fetch requests received so far.
    pub fn fetches_seen(&self) -> usize {
        self.state.lock().unwrap().fetches_seen
    }

    /// Records stored in a partition (sum over batches).
    pub fn stored_records(&self, partition: i32) -> i64 {
        let st = self.state.lock().unwrap();
        st.logs[partition as usize]
            .iter()
            .map(|(_, b)| batch_count(b) as i64)
            .sum()
    }
}

fn batch_count(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[57], b[58], b[59], b[60]])
}

fn serve(mut s: TcpStream, cfg: &FakeConfig, st: &Mutex<State>, addr: &str) {
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        if s.read_exact(&mut buf).is_err() {
            return;
        }
        let mut buf = Bytes::from(buf);
        let key = ApiKey::try_from(i16::from_be_bytes([buf[0], buf[1]])).unwrap();
        let version = i16::from_be_bytes([buf[2], buf[3]]);
        let header = RequestHeader::decode(&mut buf, key.request_header_version(version)).unwrap();
        let mut out = BytesMut::new();
        let mut rh = ResponseHeader::default();
        rh.correlation_id = header.correlation_id;
        rh.encode(&mut out, key.response_header_version(version))
            .unwrap();
        match key {
            ApiKey::ApiVersions => {
                let av_max = cfg.api_versions_max.unwrap_or(3);
                let mut r = ApiVersionsResponse::default();
                r.api_keys = IMPLEMENTED
                    .iter()
                    .map(|(k, lo, hi)| {
                        let mut v = ApiVersion::default();
                        v.api_key = *k as i16;
                        v.min_version = *lo;
                        v.max_version = if *k == ApiKey::ApiVersions {
                            av_max
                        } else {
                            *hi
                        };
                        v
                    })
                    .collect();
                if version > av_max {
                    r.error_code = 35;
                    r.encode(&mut out, 0).unwrap();
                } else {
                    r.encode(&mut out, version).unwrap();
                }
            }
            ApiKey::Metadata => {
                std::thread::sleep(std::time::Duration::from_millis(cfg.metadata_delay_ms));
                let req = MetadataRequest::decode(&mut buf, version).unwrap();
                let mut r = MetadataResponse::default();
                let (host, port) = addr.rsplit_once(':').unwrap();
                let mut b = MetadataResponseBroker::default();
                b.node_id = BrokerId(0);
                b.host = StrBytes::from_string(host.to_string());
                b.port = port.parse().unwrap();
                r.brokers = vec![b];
                r.controller_id = BrokerId(0);
                for t in req.topics.unwrap_or_default() {
                    let name = t.name.unwrap_or_default();
                    let mut mt = MetadataResponseTopic::default();
                    if name.0.as_str() == cfg.topic {
                        mt.partitions = (0..cfg.partitions)
                            .map(|i| {
                                let mut p = MetadataResponsePartition::default();
                                p.partition_index = i;
                                p.leader_id = BrokerId(0);
                                p.replica_nodes = vec![BrokerId(0)];
                                p.isr_nodes = vec![BrokerId(0)];
                                p
                            })
                            .collect();
                    } else {
                        mt.error_code = 3;
                    }
                    mt.name = Some(name);
                    r.topics.push(mt);
                }
                r.encode(&mut out, version).unwrap();
            }
            ApiKey::Produce => {
                let req = ProduceRequest::decode(&mut buf, version).unwrap();
                let mut r = ProduceResponse::default();
                let mut state = st.lock().unwrap();
                for t in req.topic_data {
                    let mut tr = TopicProduceResponse::default();
                    tr.name = t.name.clone();
                    for p in t.partition_data {
                        state.batches_seen += 1;
                        let mut pr = PartitionProduceResponse::default();
                        pr.index = p.index;
                        let fail = cfg
                            .fail_every_nth_batch
                            .filter(|(n, _)| state.batches_seen.is_multiple_of(*n))
                            .map(|(_, code)| code);
                        match fail {
                            Some(code) => {
                                pr.error_code = code;
                                pr.base_offset = -1;
                            }
                            None => {
                                let log = &mut state.logs[p.index as usize];
                                let next = log
                                    .last()
                                    .map(|(o, b)| o + batch_count(b) as i64)
                                    .unwrap_or(0);
                                let mut data = BytesMut::from(&p.records.unwrap()[..]);
                                data[0..8].copy_from_slice(&next.to_be_bytes());
                                log.push((next, data.freeze()));
                                pr.base_offset = next;
                            }
                        }
                        tr.partition_responses.push(pr);
                    }
                    r.responses.push(tr);
                }
                if req.acks == 0 {
                    continue;
                }
                r.encode(&mut out, version).unwrap();
            }
            ApiKey::Fetch => {
                let req = FetchRequest::decode(&mut buf, version).unwrap();
                let mut r = FetchResponse::default();
                let mut state = st.lock().unwrap();
                state.fetches_seen += 1;
                let fail = cfg
                    .fail_every_nth_fetch
                    .filter(|(n, _)| state.fetches_seen.is_multiple_of(*n))
                    .map(|(_, code)| code);
                let mut any = false;
                for t in req.topics {
                    let mut tr = FetchableTopicResponse::default();
                    tr.topic = t.topic.clone();
                    for p in t.partitions {
                        let log = &state.logs[p.partition as usize];
                        let mut pd = PartitionData::default();
                        pd.partition_index = p.partition;
                        pd.high_watermark = log
                            .last()
                            .map(|(o, b)| o + batch_count(b) as i64)
                            .unwrap_or(0);
                        if let Some(code) = fail {
                            pd.error_code = code;
                            tr.partitions.push(pd);
                            continue;
                        }
                        let mut data = BytesMut::new();
                        let mut first_len = None;
                        for (o, b) in log {
                            if o + batch_count(b) as i64 > p.fetch_offset
                                && data.len() < p.partition_max_bytes as usize
                            {
                                first_len.get_or_insert(b.len());
                                data.extend_from_slice(b);
                            }
                        }
                        if cfg.cut_fetch_mid_batch {
                            let keep = (p.partition_max_bytes as usize).max(first_len.unwrap_or(0));
                            data.truncate(keep);
                        }
                        any |= !data.is_empty();
                        pd.records = Some(data.freeze());
                        tr.partitions.push(pd);
                    }
                    r.responses.push(tr);
                }
                drop(state);
                if !any {
                    std::thread::sleep(std::time::Duration::from_millis(
                        req.max_wait_ms.clamp(0, 50) as u64,
                    ));
                }
                r.encode(&mut out, version).unwrap();
            }
            ApiKey::ListOffsets => {
                let req = ListOffsetsRequest::decode(&mut buf, version).unwrap();
                let mut r = ListOffsetsResponse::default();
                let state = st.lock().unwrap();
                for t in req.topics {
                    let mut tr = ListOffsetsTopicResponse::default();
                    tr.name = t.name.clone();
                    for p in t.partitions {
                        let log = &state.logs[p.partition_index as usize];
                        let mut pr = ListOffsetsPartitionResponse::default();
                        pr.partition_index = p.partition_index;
                        pr.offset = if p.timestamp == -2 {
                            0
                        } else {
                            log.last()
                                .map(|(o, b)| o + batch_count(b) as i64)
                                .unwrap_or(0)
                        };
                        tr.partitions.push(pr);
                    }
                    r.topics.push(tr);
                }
                r.encode(&mut out, version).unwrap();
            }
            _ => return,
        }
        let _ = buf.remaining();
        let mut frame = Vec::with_capacity(out.len() + 4);
        frame.extend_from_slice(&(out.len() as i32).to_be_bytes());
        frame.extend_from_slice(&out);
        if s.write_all(&frame).is_err() {
            return;
        }
    }
}
