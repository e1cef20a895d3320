//! End-to-end tests of the broker over real sockets with a raw kafka-protocol client: each
//! starts a 2-core broker in-process on a free port, so requests cross cores.

mod common;

// As in the `gregor` binary: hostile array lengths must not abort the process.
#[global_allocator]
static ALLOCATOR: gregor_net::alloc::GuardedAlloc = gregor_net::alloc::GuardedAlloc;

use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::records::Compression;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn api_versions_all_versions_and_unknown_version_fallback() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    for version in 0..=3 {
        let r: ApiVersionsResponse =
            c.call(ApiKey::ApiVersions, version, &ApiVersionsRequest::default());
        assert_eq!(r.error_code, 0);
        let keys: Vec<i16> = r.api_keys.iter().map(|k| k.api_key).collect();
        for key in [0, 1, 2, 3, 18, 19, 20, 21, 32, 37, 44, 60] {
            assert!(keys.contains(&key), "v{version} lacks api {key}");
        }
        // Nothing we do not implement (e.g. AddPartitionsToTxn 24, EndTxn 26) is advertised.
        assert!(!keys.contains(&24) && !keys.contains(&26));
        // v3+: no optional tagged fields (librdkafka 2.0.2 mis-parses them).
        assert!(r.supported_features.is_empty() && r.finalized_features_epoch == -1);
    }
    // KIP-511: a version from the future gets a v0 answer with UNSUPPORTED_VERSION.
    let id = c.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let _: (i32, ApiVersionsResponse) = c.recv(ApiKey::ApiVersions, 3);
    let mut raw = Vec::new();
    raw.extend_from_slice(&18i16.to_be_bytes());
    raw.extend_from_slice(&99i16.to_be_bytes());
    raw.extend_from_slice(&(id + 7).to_be_bytes());
    raw.extend_from_slice(&(-1i16).to_be_bytes());
    raw.extend_from_slice(&[0, 0, 0]);
    c.send_raw(&raw);
    let (cid, r): (i32, ApiVersionsResponse) = c.recv(ApiKey::ApiVersions, 0);
    assert_eq!(cid, id + 7);
    assert_eq!(r.error_code, ResponseError::UnsupportedVersion.code());
    let av = r.api_keys.iter().find(|k| k.api_key == 18).unwrap();
    assert_eq!((av.min_version, av.max_version), (0, 3));
    // The connection stays usable.
    let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 2, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
}

/// Connections that carry data are spread evenly over the cores, whichever core's listener
/// the kernel picked, and idle connections beside them (as clients keep their bootstrap
/// connection) do not skew it; a connection moved to another core keeps working.
#[test]
fn data_connections_spread_evenly_over_the_cores() {
    let broker = Broker::start(&[]);
    let handle = broker.handle.as_ref().unwrap();
    let mut admin = broker.client();
    assert_eq!(admin.create_topic("spread", 2).topics[0].error_code, 0);
    let id = topic_id(&admin.metadata(Some(vec!["spread"]), false), "spread");
    let mut idle: Vec<Client> = Vec::new();
    let mut busy: Vec<Client> = Vec::new();
    for i in 0..8 {
        // Like a client: a bootstrap connection that only asks for metadata, then the one
        // that produces.
        let mut bootstrap = broker.client();
        bootstrap.metadata(Some(vec!["spread"]), false);
        idle.push(bootstrap);
        let mut c = broker.client();
        let value = format!("v{i}");
        let b = batch(&[("k", &value, now_ms())], Compression::None);
        assert_eq!(c.produce("spread", (i % 2) as i32, b, 1).0, 0);
        busy.push(c);
        // Placed once the Produce is answered, before the next connection is made.
        let counts = handle.data_connections_per_core();
        assert_eq!(counts.iter().sum::<usize>(), i + 1, "{counts:?}");
        assert!(
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
            "{counts:?} after {} producers",
            i + 1
        );
    }
    assert_eq!(handle.data_connections_per_core(), vec![4, 4]);
    // Every connection, moved or not, goes on working: each produces again and reads back
    // both partitions.
    for (i, c) in busy.iter_mut().enumerate() {
        let value = format!("w{i}");
        let b = batch(&[("k", &value, now_ms())], Compression::None);
        assert_eq!(c.produce("spread", (i % 2) as i32, b, 1).0, 0);
    }
    for c in busy.iter_mut() {
        let mut values: Vec<String> = Vec::new();
        for p in 0..2 {
            let data = c.fetch(13, "spread", id, p, 0, 100, 1);
            assert_eq!(data.error_code, 0);
            values.extend(decode(&data.records).into_iter().map(|r| r.2));
        }
        assert_eq!(values.len(), 16, "{values:?}");
    }
    // Closed connections free their places.
    drop(busy.drain(4..));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while handle.data_connections_per_core().iter().sum::<usize>() != 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            handle.data_connections_per_core()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn create_produce_fetch_round_trip_across_cores() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    let created = c.create_topic("orders", 6);
    assert_eq!(
        created.topics[0].error_code, 0,
        "{:?}",
        created.topics[0].error_message
    );
    assert_eq!(created.topics[0].num_partitions, 6);
    let md = c.metadata(Some(vec!["orders"]), false);
    assert_eq!(md.brokers.len(), 1);
    assert_eq!(md.brokers[0].port, i32::from(broker.addr.port()));
    assert_eq!(md.topics[0].partitions.len(), 6);
    let id = topic_id(&md, "orders");
    assert!(!id.is_nil());

    let ts = now_ms();
    for p in 0..6 {
        for round in 0..2 {
            let key = format!("k{p}");
            let v1 = format!("v{p}-{round}-a");
            let v2 = format!("v{p}-{round}-b");
            let b = batch(&[(&key, &v1, ts), (&key, &v2, ts + 1)], Compression::None);
            let (err, base) = c.produce("orders", p, b, if round == 0 { 1 } else { -1 });
            assert_eq!(err, 0);
            assert_eq!(base, round * 2);
        }
    }
    for p in 0..6 {
        for version in [4, 11, 13, 16] {
            let data = c.fetch(version, "orders", id, p, 0, 100, 1);
            assert_eq!(data.error_code, 0);
            assert_eq!(data.high_watermark, 4);
            if version >= 5 {
                assert_eq!(data.log_start_offset, 0);
            }
            let records = decode(&data.records);
            let values: Vec<&str> = records.iter().map(|r| r.2.as_str()).collect();
            let expected = [
                format!("v{p}-0-a"),
                format!("v{p}-0-b"),
                format!("v{p}-1-a"),
                format!("v{p}-1-b"),
            ];
            assert_eq!(values, expected, "partition {p} fetch v{version}");
            assert_eq!(
                records.iter().map(|r| r.0).collect::<Vec<_>>(),
                vec![0, 1, 2, 3]
            );
            assert_eq!(records[1].3, ts + 1);
        }
        // From the middle and at the end.
        let mid = decode(&c.fetch(12, "orders", id, p, 2, 0, 0).records);
        assert_eq!(mid.first().map(|r| r.0), Some(2));
        let end = c.fetch(12, "orders", id, p, 4, 0, 0);
        assert_eq!(end.error_code, 0);
        assert!(decode(&end.records).is_empty());
        let past = c.fetch(12, "orders", id, p, 5, 0, 0);
        assert_eq!(past.error_code, ResponseError::OffsetOutOfRange.code());
    }
}

#[test]
fn compressed_batches_are_stored_as_sent() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("z", 1).topics[0].error_code, 0);
    let id = topic_id(&c.metadata(Some(vec!["z"]), false), "z");
    let ts = now_ms();
    let mut offset = 0;
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let b = batch(&[("a", "1", ts), ("b", "2", ts), ("c", "3", ts)], codec);
        let (err, base) = c.produce("z", 0, b, 1);
        assert_eq!((err, base), (0, offset), "{codec:?}");
        offset += 3;
    }
    let records = decode(&c.fetch(12, "z", id, 0, 0, 0, 0).records);
    assert_eq!(records.len(), 12);
    assert_eq!(
        records.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..12).collect::<Vec<_>>()
    );
}

#[test]
fn long_poll_fetch_wakes_on_produce() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("lp", 4).topics[0].error_code, 0);
    let id = topic_id(&c.metadata(Some(vec!["lp"]), false), "lp");
    // Without data the fetch waits for max_wait_ms.
    let start = Instant::now();
    let data = c.fetch(12, "lp", id, 3, 0, 300, 1);
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    assert!(decode(&data.records).is_empty());
    // An empty fetch waits out max_wait_ms too (without spinning).
    let empty = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(300)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1);
    let start = Instant::now();
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &empty);
    assert_eq!(r.error_code, 0);
    assert!(start.elapsed() >= Duration::from_millis(250));
    // A produce on another connection wakes a waiting fetch long before its 10 s deadline,
    // for every partition: they are spread over both cores, so this covers waits on the
    // connection's own core and on the other one.
    let addr = broker.addr;
    for p in 0..4 {
        let producer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut pc = Client::connect(addr);
            pc.produce(
                "lp",
                p,
                batch(&[("k", "late", now_ms())], Compression::None),
                1,
            )
        });
        let start = Instant::now();
        let data = c.fetch(12, "lp", id, p, 0, 10_000, 1);
        let waited = start.elapsed();
        assert_eq!(producer.join().unwrap().0, 0);
        assert_eq!(decode(&data.records)[0].2, "late");
        assert!(
            waited < Duration::from_secs(5),
            "partition {p}: fetch waited {waited:?}"
        );
    }
}

#[test]
fn topic_admin_errors_are_kafkas() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("t", 2).topics[0].error_code, 0);
    let code = |r: CreateTopicsResponse| r.topics[0].error_code;
    assert_eq!(
        code(c.create_topic("t", 2)),
        ResponseError::TopicAlreadyExists.code()
    );
    assert_eq!(
        code(c.create_topic("bad/name", 1)),
        ResponseError::InvalidTopicException.code()
    );
    assert_eq!(
        code(c.create_topic("zero", 0)),
        ResponseError::InvalidPartitions.code()
    );
    let rf3 = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(topic("rf3"))
            .with_num_partitions(1)
            .with_replication_factor(3),
    ]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &rf3);
    assert_eq!(code(r), ResponseError::InvalidReplicationFactor.code());
    let bad_config = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(topic("cfg"))
            .with_num_partitions(1)
            .with_replication_factor(-1)
            .with_configs(vec![
                create_topics_request::CreatableTopicConfig::default()
                    .with_name("retention.ms".into())
                    .with_value(Some("soon".into())),
            ]),
    ]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &bad_config);
    assert_eq!(code(r), ResponseError::InvalidConfig.code());
    // validate_only creates nothing.
    let dry = CreateTopicsRequest::default()
        .with_validate_only(true)
        .with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(topic("dry"))
                .with_num_partitions(3)
                .with_replication_factor(1),
        ]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &dry);
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(r.topics[0].num_partitions, 3);
    let md = c.metadata(Some(vec!["dry"]), false);
    assert_eq!(
        md.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );

    // Produce errors: unknown topic, bad partition, corrupt batch, bad acks.
    let b = batch(&[("k", "v", now_ms())], Compression::None);
    assert_eq!(
        c.produce("nope", 0, b.clone(), 1).0,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        c.produce("t", 9, b.clone(), 1).0,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let mut corrupt = b.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(
        c.produce("t", 0, corrupt.into(), 1).0,
        ResponseError::CorruptMessage.code()
    );
    assert_eq!(
        c.produce("t", 0, b.clone(), 7).0,
        ResponseError::InvalidRequiredAcks.code()
    );

    // CreatePartitions grows only.
    let grow = |count| {
        CreatePartitionsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(topic("t"))
                    .with_count(count),
            ])
    };
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 3, &grow(2));
    assert_eq!(
        r.results[0].error_code,
        ResponseError::InvalidPartitions.code()
    );
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 3, &grow(5));
    assert_eq!(r.results[0].error_code, 0);
    assert_eq!(c.produce("t", 4, b.clone(), -1), (0, 0));
    assert_eq!(
        c.metadata(Some(vec!["t"]), false).topics[0]
            .partitions
            .len(),
        5
    );

    // DeleteTopics, then the topic is gone and can be created again empty.
    let del = DeleteTopicsRequest::default()
        .with_topic_names(vec![topic("t"), topic("ghost")])
        .with_timeout_ms(5_000);
    let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 5, &del);
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(
        r.responses[1].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        c.produce("t", 0, b.clone(), 1).0,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert!(!broker.dir.path().join("t-0").exists());
    // A stale directory of a deleted topic (crash before its files were removed) must not
    // come back as data of a new topic with the same name.
    let stale = broker.dir.path().join("t-0");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("leftover"), b"old").unwrap();
    assert_eq!(c.create_topic("t", 1).topics[0].error_code, 0);
    assert!(
        !stale.join("leftover").exists(),
        "stale partition directory removed"
    );
    assert_eq!(c.produce("t", 0, b, 1), (0, 0));
}

#[test]
fn configs_describe_and_alter_live() {
    let broker = Broker::start(&[("log.retention.ms", "3600000")]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("cfg", 1).topics[0].error_code, 0);
    let describe = |c: &mut Client| -> Vec<(String, String, i8)> {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name("cfg".into())
                .with_configuration_keys(None),
        ]);
        let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &req);
        assert_eq!(r.results[0].error_code, 0);
        r.results[0]
            .configs
            .iter()
            .map(|e| {
                (
                    e.name.to_string(),
                    e.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    e.config_source,
                )
            })
            .collect()
    };
    let entries = describe(&mut c);
    let retention = entries.iter().find(|e| e.0 == "retention.ms").unwrap();
    assert_eq!((retention.1.as_str(), retention.2), ("3600000", 4));
    let segment = entries.iter().find(|e| e.0 == "segment.bytes").unwrap();
    assert_eq!(
        (segment.1.as_str(), segment.2),
        ("1073741824", 5),
        "built-in default"
    );
    let alter = |name: &str, value: &str| {
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name("cfg".into())
                .with_configs(vec![
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(name.to_string().into())
                        .with_config_operation(0)
                        .with_value(Some(value.to_string().into())),
                ]),
        ])
    };
    let r: IncrementalAlterConfigsResponse = c.call(
        ApiKey::IncrementalAlterConfigs,
        1,
        &alter("retention.ms", "1000"),
    );
    assert_eq!(r.responses[0].error_code, 0);
    let r: IncrementalAlterConfigsResponse = c.call(
        ApiKey::IncrementalAlterConfigs,
        1,
        &alter("retention.ms", "x"),
    );
    assert_eq!(
        r.responses[0].error_code,
        ResponseError::InvalidConfig.code()
    );
    let r: IncrementalAlterConfigsResponse =
        c.call(ApiKey::IncrementalAlterConfigs, 0, &alter("no.such", "1"));
    assert_eq!(
        r.responses[0].error_code,
        ResponseError::InvalidConfig.code()
    );
    let entries = describe(&mut c);
    let retention = entries.iter().find(|e| e.0 == "retention.ms").unwrap();
    assert_eq!((retention.1.as_str(), retention.2), ("1000", 1));

    // Live effect: a batch larger than a lowered max.message.bytes is refused.
    let r: IncrementalAlterConfigsResponse = c.call(
        ApiKey::IncrementalAlterConfigs,
        1,
        &alter("max.message.bytes", "100"),
    );
    assert_eq!(r.responses[0].error_code, 0);
    let big = "x".repeat(500);
    let b = batch(&[("k", &big, now_ms())], Compression::None);
    assert_eq!(
        c.produce("cfg", 0, b, 1).0,
        ResponseError::MessageTooLarge.code()
    );
}

#[test]
fn list_offsets_and_delete_records() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("lo", 1).topics[0].error_code, 0);
    for (i, ts) in [1_000i64, 2_000, 3_000].into_iter().enumerate() {
        let v = format!("v{i}");
        assert_eq!(
            c.produce("lo", 0, batch(&[("k", &v, ts)], Compression::None), 1)
                .0,
            0
        );
    }
    let query = |c: &mut Client, ts: i64| -> (i16, i64, i64) {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic("lo"))
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(ts),
                    ]),
            ]);
        let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.offset, p.timestamp)
    };
    assert_eq!(query(&mut c, -2), (0, 0, -1));
    assert_eq!(query(&mut c, -1), (0, 3, -1));
    assert_eq!(query(&mut c, 1_500), (0, 1, 2_000));
    assert_eq!(query(&mut c, 3_000), (0, 2, 3_000));
    assert_eq!(query(&mut c, 9_999).1, -1);
    assert_eq!(query(&mut c, -3), (0, 2, 3_000));

    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![
            delete_records_request::DeleteRecordsTopic::default()
                .with_name(topic("lo"))
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(2),
                ]),
        ]);
    let r: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, 2, &req);
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 2));
    assert_eq!(query(&mut c, -2), (0, 2, -1));
    let id = topic_id(&c.metadata(Some(vec!["lo"]), false), "lo");
    assert_eq!(
        c.fetch(12, "lo", id, 0, 0, 0, 0).error_code,
        ResponseError::OffsetOutOfRange.code()
    );
}

#[test]
fn metadata_auto_creates_and_acks_zero_has_no_response() {
    let broker = Broker::start(&[("num.partitions", "3")]);
    let mut c = broker.client();
    let md = c.metadata(Some(vec!["auto"]), true);
    assert_eq!(md.topics[0].error_code, 0);
    assert_eq!(md.topics[0].partitions.len(), 3);
    let md = c.metadata(Some(vec!["not-auto"]), false);
    assert_eq!(
        md.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let all = c.metadata(None, false);
    assert_eq!(all.topics.len(), 1);

    // acks=0: no response; the next response on the connection is for the next request.
    let req = produce_request(
        "auto",
        1,
        batch(&[("k", "v", now_ms())], Compression::None),
        0,
    );
    c.send(ApiKey::Produce, 9, &req);
    let md = c.metadata(Some(vec!["auto"]), false);
    assert_eq!(md.topics.len(), 1);
    let id = topic_id(&md, "auto");
    assert_eq!(
        decode(&c.fetch(16, "auto", id, 1, 0, 1_000, 1).records).len(),
        1
    );
    // A failed acks=0 produce closes the connection (Kafka's way to make the client notice).
    let req = produce_request(
        "auto",
        7,
        batch(&[("k", "v", now_ms())], Compression::None),
        0,
    );
    c.send(ApiKey::Produce, 9, &req);
    assert!(c.is_closed());

    let disabled = Broker::start(&[("auto.create.topics.enable", "false")]);
    let mut c = disabled.client();
    let md = c.metadata(Some(vec!["auto"]), true);
    assert_eq!(
        md.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
}

#[test]
fn hostile_frames_close_only_that_connection() {
    let broker = Broker::start(&[("socket.request.max.bytes", "1048576")]);
    let mut good = broker.client();
    assert_eq!(good.create_topic("h", 1).topics[0].error_code, 0);

    // Garbage: an unknown API key.
    let mut bad = broker.client();
    bad.send_raw(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 1, 2, 3]);
    assert!(bad.is_closed());
    // A known API with a body that does not decode (truncated arrays).
    let mut bad = broker.client();
    let mut raw = vec![0, 3, 0, 9, 0, 0, 0, 5, 0, 1, b'x'];
    raw.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    bad.send_raw(&raw);
    assert!(bad.is_closed());
    // An oversize frame is refused from its length prefix alone (no body is ever sent).
    let mut big = broker.client();
    use std::io::Write;
    big.stream
        .write_all(&(512 * 1024 * 1024i32).to_be_bytes())
        .unwrap();
    assert!(big.is_closed());
    let mut negative = broker.client();
    negative.stream.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(negative.is_closed());

    // Huge declared array lengths (non-flexible i32 and flexible varint) in a tiny frame:
    // kafka-protocol reserves capacity for them before reading; the process must survive.
    let mut hostile: Vec<Vec<u8>> = Vec::new();
    let mut m8 = vec![0, 3, 0, 8, 0, 0, 0, 9, 0xff, 0xff];
    m8.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
    hostile.push(m8);
    hostile.push(vec![
        0, 3, 0, 12, 0, 0, 0, 9, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f,
    ]);
    let mut p9 = vec![
        0, 0, 0, 9, 0, 0, 0, 9, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0x03, 0xe8,
    ];
    p9.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]);
    hostile.push(p9);
    for raw in hostile {
        let mut bad = broker.client();
        bad.send_raw(&raw);
        assert!(bad.is_closed());
    }

    // The well-behaved client never noticed.
    let b = batch(&[("k", "v", now_ms())], Compression::None);
    assert_eq!(good.produce("h", 0, b, -1), (0, 0));
    let r: ApiVersionsResponse = good.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
}

#[test]
fn restart_keeps_topics_configs_and_data() {
    for backend in ["dma", "std"] {
        let broker = Broker::start(&[("storage.backend", backend)]);
        let mut c = broker.client();
        assert_eq!(c.create_topic("keep", 3).topics[0].error_code, 0);
        let id = topic_id(&c.metadata(Some(vec!["keep"]), false), "keep");
        for p in 0..3 {
            for i in 0..5 {
                let v = format!("{p}-{i}");
                let b = batch(&[("k", &v, now_ms())], Compression::None);
                assert_eq!(c.produce("keep", p, b, 1), (0, i));
            }
        }
        drop(c);
        let dir = broker.stop();
        for p in 0..3 {
            assert!(
                dir.path()
                    .join(format!("keep-{p}"))
                    .join(".clean_shutdown")
                    .exists()
            );
        }
        let broker = Broker::start_in(dir, &[("storage.backend", backend)]);
        let mut c = broker.client();
        let md = c.metadata(Some(vec!["keep"]), false);
        assert_eq!(topic_id(&md, "keep"), id, "topic id survives restart");
        for p in 0..3 {
            let records = decode(&c.fetch(13, "keep", id, p, 0, 0, 0).records);
            let values: Vec<String> = records.into_iter().map(|r| r.2).collect();
            let expected: Vec<String> = (0..5).map(|i| format!("{p}-{i}")).collect();
            assert_eq!(values, expected, "{backend} partition {p}");
        }
        let b = batch(&[("k", "after", now_ms())], Compression::None);
        assert_eq!(c.produce("keep", 0, b, -1), (0, 5));
    }
}

#[test]
fn init_producer_id_serves_idempotent_producers_only() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    let mut ids = Vec::new();
    for version in [0, 2, 4] {
        let r: InitProducerIdResponse = c.call(
            ApiKey::InitProducerId,
            version,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
        );
        assert_eq!(r.error_code, 0);
        assert!(r.producer_id.0 >= 0);
        assert_eq!(r.producer_epoch, 0);
        ids.push(r.producer_id.0);
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "ids are unique: {ids:?}");
    // Epoch bump (v3+) keeps the id.
    let r: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(ProducerId(ids[0]))
            .with_producer_epoch(0),
    );
    assert_eq!(
        (r.error_code, r.producer_id.0, r.producer_epoch),
        (0, ids[0], 1)
    );
    let r: InitProducerIdResponse = c.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default().with_transactional_id(Some(TransactionalId("tx".into()))),
    );
    assert_eq!(
        r.error_code,
        ResponseError::TransactionalIdAuthorizationFailed.code()
    );
}

#[test]
fn multi_partition_fetch_keeps_request_order_and_max_bytes() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("mp", 6).topics[0].error_code, 0);
    for p in 0..6 {
        let v = format!("p{p}");
        let b = batch(&[("k", &v, now_ms())], Compression::None);
        assert_eq!(c.produce("mp", p, b, 1), (0, 0));
    }
    let fetch = |c: &mut Client, order: &[i32], max_bytes: i32| -> FetchResponse {
        let partitions: Vec<(i32, i64)> = order.iter().map(|&p| (p, 0)).collect();
        let request = fetch_request("mp", &partitions, 0, 0, max_bytes);
        c.call(ApiKey::Fetch, 11, &request)
    };
    let order = [5, 0, 3, 1, 4, 2];
    let r = fetch(&mut c, &order, 50 << 20);
    let parts = &r.responses[0].partitions;
    assert_eq!(
        parts.iter().map(|p| p.partition_index).collect::<Vec<_>>(),
        order
    );
    for p in parts {
        assert_eq!(p.high_watermark, 1);
        assert_eq!(decode(&p.records)[0].2, format!("p{}", p.partition_index));
    }
    // max_bytes 1: only the first partition's batch (KIP-74), the rest empty but with offsets.
    let r = fetch(&mut c, &order, 1);
    let parts = &r.responses[0].partitions;
    let with_data: Vec<i32> = parts
        .iter()
        .filter(|p| !decode(&p.records).is_empty())
        .map(|p| p.partition_index)
        .collect();
    assert_eq!(with_data, vec![5]);
    assert!(
        parts
            .iter()
            .all(|p| p.high_watermark == 1 && p.error_code == 0)
    );
}

#[test]
fn shutdown_answers_in_flight_request_despite_pipelined_ones() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("sd", 1).topics[0].error_code, 0);
    // A long-polling fetch is in flight when the shutdown starts...
    let fetch = fetch_request("sd", &[(0, 0)], 10_000, 1, 1 << 20);
    let in_flight = c.send(ApiKey::Fetch, 12, &fetch);
    // ...and the client has already pipelined the next request, which will not be answered.
    c.send(ApiKey::Metadata, 12, &MetadataRequest::default());
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let _dir = broker.stop();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // The in-flight answer arrives intact, then the connection ends. (On loopback a small
    // answer survives even an RST close; this checks the drain's order and promptness, the
    // FIN-then-discard close itself is exercised by tests/e2e/test_shutdown.py under load.)
    let (cid, response): (i32, FetchResponse) = c.recv(ApiKey::Fetch, 12);
    assert_eq!(cid, in_flight);
    assert_eq!(response.responses[0].partitions[0].error_code, 0);
    assert!(c.is_closed());
}

/// Sends `requests` Produce requests (and now and then a Metadata request) back to back on one
/// connection without reading, as a client with many requests in flight does, and checks the
/// broker's answers: in request order, each partition's records appended in request order
/// (base offsets exactly as counted here), acks=0 unanswered, a bad partition failing alone.
fn pipelined_produces_keep_request_order(settings: &[(&str, &str)]) {
    const PARTITIONS: i32 = 4;
    const RECORDS_PER_BATCH: i64 = 3;
    let broker = Broker::start(settings);
    let mut c = broker.client();
    assert_eq!(c.create_topic("pipe", PARTITIONS).topics[0].error_code, 0);
    // A first Produce places the connection (see balance.rs); pipelining starts after it.
    let first = batch(&[("first", "v", now_ms())], Compression::None);
    assert_eq!(c.produce("pipe", 0, first, 1), (0, 0));
    let mut next_offset = [1i64, 0, 0, 0];

    enum Expect {
        Produce(Vec<(i32, i16, i64)>),
        Metadata,
    }
    let mut expected: Vec<(i32, Expect)> = Vec::new();
    let mut sent_keys: Vec<Vec<String>> = vec![vec!["first".into()], vec![], vec![], vec![]];
    for i in 0..300i32 {
        if i % 37 == 36 {
            let all_topics = MetadataRequest::default().with_topics(None);
            let cid = c.send(ApiKey::Metadata, 12, &all_topics);
            expected.push((cid, Expect::Metadata));
        }
        let acks = [1i16, 1, -1, 0][i as usize % 4];
        let mut partitions = vec![i % PARTITIONS];
        if i % 5 == 0 {
            partitions.push((i + 1) % PARTITIONS);
        }
        if i % 40 == 9 {
            partitions.push(9); // no such partition
        }
        let mut data = Vec::new();
        let mut answers = Vec::new();
        for &p in &partitions {
            let keys: Vec<String> = (0..RECORDS_PER_BATCH).map(|r| format!("{i}.{r}")).collect();
            let records: Vec<(&str, &str, i64)> =
                keys.iter().map(|k| (k.as_str(), "v", now_ms())).collect();
            data.push(
                produce_request::PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(batch(&records, Compression::None))),
            );
            if p < PARTITIONS {
                let offset = next_offset[p as usize];
                next_offset[p as usize] += RECORDS_PER_BATCH;
                sent_keys[p as usize].extend(keys);
                answers.push((p, 0, offset));
            } else {
                answers.push((p, ResponseError::UnknownTopicOrPartition.code(), -1));
            }
        }
        let request = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(topic("pipe"))
                    .with_partition_data(data),
            ]);
        let cid = c.send(ApiKey::Produce, 9, &request);
        // acks=0 gets no answer; one with a bad partition would close the connection.
        if acks != 0 {
            expected.push((cid, Expect::Produce(answers)));
        } else {
            assert!(!partitions.contains(&9));
        }
    }
    for (cid, expect) in expected {
        match expect {
            Expect::Metadata => {
                let (got, md): (i32, MetadataResponse) = c.recv(ApiKey::Metadata, 12);
                assert_eq!(got, cid, "answers in request order");
                assert_eq!(md.topics[0].partitions.len(), PARTITIONS as usize);
            }
            Expect::Produce(answers) => {
                let (got, response): (i32, ProduceResponse) = c.recv(ApiKey::Produce, 9);
                assert_eq!(got, cid, "answers in request order");
                let seen: Vec<(i32, i16, i64)> = response.responses[0]
                    .partition_responses
                    .iter()
                    .map(|p| (p.index, p.error_code, p.base_offset))
                    .collect();
                assert_eq!(seen, answers, "request {cid}");
            }
        }
    }
    let md = c.metadata(Some(vec!["pipe"]), false);
    let id = topic_id(&md, "pipe");
    for p in 0..PARTITIONS {
        let fetched = c.fetch(16, "pipe", id, p, 0, 1_000, 1);
        let keys: Vec<String> = decode(&fetched.records)
            .into_iter()
            .map(|(_, k, _, _)| k)
            .collect();
        assert_eq!(keys, sent_keys[p as usize], "partition {p}");
        assert_eq!(fetched.high_watermark, next_offset[p as usize]);
    }
}

#[test]
fn pipelined_produces_are_appended_and_answered_in_request_order() {
    pipelined_produces_keep_request_order(&[]);
}

#[test]
fn a_full_produce_pipeline_waits_for_its_oldest_answer() {
    pipelined_produces_keep_request_order(&[("produce.pipeline.depth", "2")]);
}

#[test]
fn produce_pipeline_depth_one_handles_requests_one_at_a_time() {
    pipelined_produces_keep_request_order(&[("produce.pipeline.depth", "1")]);
}

#[test]
fn answered_fetches_leave_no_waits_behind_on_other_cores() {
    // A fetch of partitions on both cores waits on both; when one core's data answers it,
    // the other core's wait must end too, not linger until max_wait_ms (20 s here): a
    // client fetching in a loop would pile one up per fetch. Data on the connection's own
    // core is what leaves the other core waiting; every round is checked, and the rounds
    // put data on both cores, so whichever core the connection is on, some round does.
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("waits", 4).topics[0].error_code, 0);
    let owners: Vec<usize> = (0..4)
        .map(|p| gregor_net::cores::partition_owner("waits", p, 2))
        .collect();
    assert!(
        owners.contains(&0) && owners.contains(&1),
        "partitions on one core only: {owners:?}"
    );
    let mut offsets = [0i64; 4];
    let addr = broker.addr;
    for round in 0..8 {
        let p = round % 4;
        let producer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let mut pc = Client::connect(addr);
            pc.produce(
                "waits",
                p as i32,
                batch(&[("k", "v", now_ms())], Compression::None),
                1,
            )
        });
        let partitions: Vec<(i32, i64)> = (0..4).map(|q| (q, offsets[q as usize])).collect();
        let request = fetch_request("waits", &partitions, 20_000, 1, 1 << 20);
        let start = Instant::now();
        let r: FetchResponse = c.call(ApiKey::Fetch, 12, &request);
        assert!(start.elapsed() < Duration::from_secs(10), "round {round}");
        assert_eq!(producer.join().unwrap().0, 0);
        let got = &r.responses[0].partitions[p];
        assert_eq!(decode(&got.records).len(), 1, "round {round}");
        offsets[p] += 1;
        // The data is where it was produced and nowhere else (whichever core woke the fetch
        // and whichever read the rest).
        for (q, part) in r.responses[0].partitions.iter().enumerate() {
            assert_eq!(part.partition_index, q as i32, "round {round}");
            assert_eq!(
                part.high_watermark, offsets[q],
                "round {round}, partition {q}"
            );
            if q != p {
                assert!(
                    decode(&part.records).is_empty(),
                    "round {round}, partition {q}"
                );
            }
        }
        // The losing wait ends once its fetch is answered; allow the cores a moment.
        let handle = broker.handle.as_ref().unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while handle.peer_requests_in_progress() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            handle.peer_requests_in_progress(),
            0,
            "round {round} (data on core {}): a wait still held on another core",
            owners[p]
        );
    }
}

/// DeleteRecords on every partition of `topic_name` (0..partitions) before `offset`.
fn delete_records_before(c: &mut Client, topic_name: &str, partitions: i32, offset: i64) {
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![
            delete_records_request::DeleteRecordsTopic::default()
                .with_name(topic(topic_name))
                .with_partitions(
                    (0..partitions)
                        .map(|p| {
                            delete_records_request::DeleteRecordsPartition::default()
                                .with_partition_index(p)
                                .with_offset(offset)
                        })
                        .collect(),
                ),
        ]);
    let r: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, 2, &req);
    for p in &r.topics[0].partitions {
        assert_eq!((p.error_code, p.low_watermark), (0, offset));
    }
}

/// A fetch of every partition of `topic_name` at `offsets`, answered at once (max_wait 0):
/// per partition (error, high watermark, log start, offsets of the records returned).
fn fetch_now(c: &mut Client, topic_name: &str, offsets: &[i64]) -> Vec<(i16, i64, i64, Vec<i64>)> {
    let partitions: Vec<(i32, i64)> = offsets
        .iter()
        .enumerate()
        .map(|(p, &o)| (p as i32, o))
        .collect();
    let request = fetch_request(topic_name, &partitions, 0, 1, 1 << 20);
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &request);
    assert_eq!(r.error_code, 0);
    r.responses[0]
        .partitions
        .iter()
        .enumerate()
        .map(|(p, part)| {
            assert_eq!(part.partition_index, p as i32);
            let records = decode(&part.records).into_iter().map(|r| r.0).collect();
            (
                part.error_code,
                part.high_watermark,
                part.log_start_offset,
                records,
            )
        })
        .collect()
}

#[test]
fn caught_up_partitions_of_other_cores_are_answered_without_asking_them() {
    // A fetch at the end of partitions owned by another core used to ask that core to read
    // them, a round trip per fetch. Their owners publish their offsets; the fetching core
    // answers caught-up partitions itself, with the same offsets the owner would give, and
    // still sees every append and log-start move at once.
    let broker = Broker::start(&[]);
    let handle = broker.handle.as_ref().unwrap();
    let mut c = broker.client();
    assert_eq!(c.create_topic("tail", 4).topics[0].error_code, 0);
    let owners: Vec<usize> = (0..4)
        .map(|p| gregor_net::cores::partition_owner("tail", p, 2))
        .collect();
    assert!(owners.contains(&0) && owners.contains(&1), "{owners:?}");
    for p in 0..4 {
        for i in 0..3 {
            let b = batch(&[("k", "v", now_ms())], Compression::None);
            assert_eq!(c.produce("tail", p, b, 1), (0, i));
        }
    }
    delete_records_before(&mut c, "tail", 4, 1);
    let caught_up = vec![(0, 3, 1, vec![]); 4];
    // The first fetch learns the other core's offsets from its answers.
    assert_eq!(fetch_now(&mut c, "tail", &[3; 4]), caught_up);
    let served = handle.peer_requests_served();
    for _ in 0..20 {
        assert_eq!(fetch_now(&mut c, "tail", &[3; 4]), caught_up);
    }
    // Nothing else runs between the cores here; allow a stray request, not one per fetch.
    let asked = handle.peer_requests_served() - served;
    assert!(
        asked <= 2,
        "{asked} requests to the other core for 20 caught-up fetches"
    );

    // Every append is seen by the next fetch, on whichever core.
    let mut offsets = [3i64; 4];
    for p in 0..4 {
        let b = batch(&[("k", "new", now_ms())], Compression::None);
        assert_eq!(c.produce("tail", p as i32, b, 1), (0, 3));
        let got = fetch_now(&mut c, "tail", &offsets);
        for (q, (code, hw, start, records)) in got.into_iter().enumerate() {
            let end = if q <= p { 4 } else { 3 };
            assert_eq!(
                (code, hw, start),
                (0, end, 1),
                "partition {q} after producing to {p}"
            );
            let expected: Vec<i64> = if q == p { vec![3] } else { vec![] };
            assert_eq!(records, expected, "partition {q} after producing to {p}");
        }
        offsets[p] = 4;
    }
    // So is a new log start.
    delete_records_before(&mut c, "tail", 4, 2);
    assert_eq!(
        fetch_now(&mut c, "tail", &[4; 4]),
        vec![(0, 4, 2, vec![]); 4]
    );
    // And below it the owner answers, as before.
    let below = fetch_now(&mut c, "tail", &[1; 4]);
    assert!(
        below
            .iter()
            .all(|r| r.0 == ResponseError::OffsetOutOfRange.code()),
        "{below:?}"
    );
}

#[test]
fn a_topic_created_again_is_not_answered_from_the_old_ones_offsets() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    let produce_each = |c: &mut Client, count: i64| {
        for p in 0..4 {
            for i in 0..count {
                let b = batch(&[("k", "v", now_ms())], Compression::None);
                assert_eq!(c.produce("again", p, b, 1), (0, i));
            }
        }
    };
    assert_eq!(c.create_topic("again", 4).topics[0].error_code, 0);
    produce_each(&mut c, 3);
    assert_eq!(
        fetch_now(&mut c, "again", &[3; 4]),
        vec![(0, 3, 0, vec![]); 4]
    );
    let del = DeleteTopicsRequest::default()
        .with_topic_names(vec![topic("again")])
        .with_timeout_ms(5_000);
    let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 5, &del);
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(c.create_topic("again", 4).topics[0].error_code, 0);
    produce_each(&mut c, 5);
    // Offset 3 was the old topic's end; the new one has records there.
    assert_eq!(
        fetch_now(&mut c, "again", &[3; 4]),
        vec![(0, 5, 0, vec![3, 4]); 4]
    );
}

#[test]
fn a_long_poll_gathers_min_bytes_from_partitions_on_both_cores() {
    // min_bytes more than one batch: the first core's data wakes the fetch but does not
    // answer it; it waits on until the other core's data adds up, and returns both.
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    assert_eq!(c.create_topic("gather", 4).topics[0].error_code, 0);
    let owners: Vec<usize> = (0..4)
        .map(|p| gregor_net::cores::partition_owner("gather", p, 2))
        .collect();
    let first = owners.iter().position(|&o| o == 0).unwrap() as i32;
    let second = owners.iter().position(|&o| o == 1).unwrap() as i32;
    let one_batch = batch(&[("k", "v", now_ms())], Compression::None).len() as i32;
    let addr = broker.addr;
    for (early, late) in [(first, second), (second, first)] {
        let start = Instant::now();
        let producer = std::thread::spawn(move || {
            let mut pc = Client::connect(addr);
            // When each produce was sent: the data cannot be fetched before.
            let mut sent_at = Vec::new();
            for p in [early, late] {
                std::thread::sleep(Duration::from_millis(300));
                let b = batch(&[("k", "v", now_ms())], Compression::None);
                sent_at.push(start.elapsed());
                let (code, _) = pc.produce("gather", p, b, 1);
                assert_eq!(code, 0);
            }
            sent_at
        });
        let offsets = fetch_offsets_now(&mut c, "gather");
        let partitions: Vec<(i32, i64)> = (0..4).map(|p| (p, offsets[p as usize])).collect();
        let request = fetch_request("gather", &partitions, 10_000, one_batch * 3 / 2, 1 << 20);
        let r: FetchResponse = c.call(ApiKey::Fetch, 12, &request);
        let answered = start.elapsed();
        let sent_at = producer.join().unwrap();
        assert!(
            answered >= sent_at[1] && answered < Duration::from_secs(8),
            "answered at {answered:?}, produces sent at {sent_at:?}"
        );
        for (q, part) in r.responses[0].partitions.iter().enumerate() {
            let got = decode(&part.records).len();
            let expected = usize::from(q as i32 == early || q as i32 == late);
            assert_eq!(got, expected, "partition {q} (early {early}, late {late})");
        }
    }
}

/// The log end offset of each of the 4 partitions of `topic_name`.
fn fetch_offsets_now(c: &mut Client, topic_name: &str) -> Vec<i64> {
    fetch_now(c, topic_name, &[0; 4])
        .into_iter()
        .map(|(code, hw, _, _)| {
            assert_eq!(code, 0);
            hw
        })
        .collect()
}
