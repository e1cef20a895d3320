//! A lean Kafka-protocol client on glommio: connections with pipelining, version negotiation,
//! metadata, admin requests, a batching producer and a fetch consumer. It speaks plain Kafka
//! protocol, so it works against Gregor, Apache Kafka and Redpanda alike.

pub mod admin;
pub mod cluster;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod groups;
mod oneshot;
pub mod partitioner;
pub mod produce_body;
pub mod producer;
pub mod records;
pub mod versions;

pub use admin::{ConfigChange, ConfigEntry};
pub use cluster::{ClientConfig, Cluster, Metadata, TopicInfo};
pub use consumer::{Consumer, ConsumerConfig, StartOffset};
pub use error::{ClientError, Result};
pub use producer::{BatchAck, Producer, ProducerConfig};
pub use records::Compression;

/// Runs `fut` on a fresh single-threaded glommio executor on this thread's behalf and returns
/// its output. The CLI commands use this; the load tools start one executor per core instead.
pub fn block_on<T, F>(fut: impl FnOnce() -> F + Send + 'static) -> std::io::Result<T>
where
    F: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .name("gregor-client")
        .spawn(fut)
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .join()
        .map_err(|_| std::io::Error::other("client executor panicked"))
}

#[cfg(test)]
pub(crate) mod fake_broker;

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::fake_broker::{FakeBroker, FakeConfig};
    use super::*;

    fn fake(partitions: i32, fail: Option<(usize, i16)>) -> FakeBroker {
        FakeBroker::start(FakeConfig {
            topic: "t".into(),
            partitions,
            fail_every_nth_batch: fail,
            ..Default::default()
        })
    }

    #[test]
    fn falls_back_when_broker_rejects_api_versions_v3() {
        let broker = FakeBroker::start(FakeConfig {
            topic: "t".into(),
            partitions: 1,
            api_versions_max: Some(2),
            ..Default::default()
        });
        let addr = broker.addr.clone();
        let md = block_on(move || async move {
            let cluster = Cluster::connect(ClientConfig::new(&addr)).await?;
            let conn = cluster.any().await?;
            assert_eq!(
                conn.versions()
                    .version(kafka_protocol::messages::ApiKey::ApiVersions)?,
                2
            );
            cluster.topic_metadata("t", false).await
        })
        .unwrap()
        .unwrap();
        assert_eq!(md.partitions.len(), 1);
    }

    #[test]
    fn produce_then_consume_round_trip_against_fake_broker() {
        let broker = fake(3, None);
        let addr = broker.addr.clone();
        let (acked, seen) = block_on(move || async move {
            let cluster = Cluster::connect(ClientConfig::new(&addr)).await.unwrap();
            let acked = Rc::new(RefCell::new(0i64));
            let a = acked.clone();
            let cfg = ProducerConfig {
                batch_bytes: 512,
                ..Default::default()
            };
            let on_ack: producer::AckCallback = Rc::new(move |b: &BatchAck<'_>| {
                assert!(b.error.is_none(), "{:?}", b.error);
                *a.borrow_mut() += b.record_count as i64;
            });
            let p = Producer::new(cluster.clone(), "t", cfg, on_ack)
                .await
                .unwrap();
            for i in 0..300u64 {
                let key = format!("k{}", i % 7);
                let value = format!("value-{i}");
                p.send(
                    None,
                    Some(key.as_bytes()),
                    Some(value.as_bytes()),
                    &[("h", Some(b"1"))],
                    1,
                    i,
                )
                .await
                .unwrap();
            }
            p.close().await.unwrap();
            let mut c = Consumer::new(cluster, "t", ConsumerConfig::default());
            c.assign(&[0, 1, 2], StartOffset::Earliest).await.unwrap();
            let mut seen = Vec::new();
            while seen.len() < 300 {
                for f in c.poll().await.unwrap() {
                    for b in &f.batches {
                        for r in b.records() {
                            let r = r.unwrap();
                            let key = r.key.unwrap();
                            // Same key, same partition, as Java's partitioner would place it.
                            assert_eq!(f.partition, partitioner::partition_for_key(key, 3));
                            seen.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
                        }
                    }
                }
            }
            (*acked.borrow(), seen)
        })
        .unwrap();
        assert_eq!(acked, 300);
        assert_eq!(seen.len(), 300);
        let total: i64 = (0..3).map(|p| broker.stored_records(p)).sum();
        assert_eq!(total, 300);
    }

    #[test]
    fn a_full_sticky_batch_moves_the_record_that_overflows_it() {
        // Kafka's sticky partitioner (KIP-480): the record that does not fit starts the next
        // partition's batch. Left in a fresh batch of the old partition, it would wait out
        // linger alone (a minute here, so every batch would be cut by `close`).
        let broker = fake(3, None);
        let addr = broker.addr.clone();
        let (placed, sizes) = block_on(move || async move {
            let cluster = Cluster::connect(ClientConfig::new(&addr)).await.unwrap();
            let sizes = Rc::new(RefCell::new(Vec::new()));
            let s = sizes.clone();
            let cfg = ProducerConfig {
                batch_bytes: 1000,
                linger: std::time::Duration::from_secs(60),
                ..Default::default()
            };
            let on_ack: producer::AckCallback = Rc::new(move |b: &BatchAck<'_>| {
                assert!(b.error.is_none(), "{:?}", b.error);
                s.borrow_mut().push(b.record_count);
            });
            let p = Producer::new(cluster, "t", cfg, on_ack).await.unwrap();
            let mut placed = Vec::new();
            for i in 0..30u64 {
                placed.push(
                    p.send(None, None, Some(&[b'v'; 90]), &[], 0, i)
                        .await
                        .unwrap(),
                );
            }
            p.close().await.unwrap();
            (placed, sizes.borrow().clone())
        })
        .unwrap();
        // About 9 records of 100 bytes fill 1000 bytes with the header: runs of full batches,
        // each on the next partition.
        let first_run = placed.iter().take_while(|&&p| p == placed[0]).count();
        assert!(
            (8..=10).contains(&first_run),
            "first run {first_run}: {placed:?}"
        );
        assert_eq!(placed[first_run], (placed[0] + 1) % 3, "{placed:?}");
        let singles = sizes.iter().filter(|&&n| n == 1).count();
        assert_eq!(singles, 0, "one-record batches left behind: {sizes:?}");
        assert_eq!(sizes.iter().sum::<i32>(), 30);
    }

    #[test]
    fn a_zero_linger_sends_at_once_and_batches_what_arrives_meanwhile() {
        // As Kafka's linger.ms=0: a record is sent as soon as the sender is free, without
        // waiting for its batch to fill or for a flush; records appended while a request is
        // being written go out together in the next one.
        let broker = fake(1, None);
        let addr = broker.addr.clone();
        let (first_acked, sizes) = block_on(move || async move {
            let cluster = Cluster::connect(ClientConfig::new(&addr)).await.unwrap();
            let sizes = Rc::new(RefCell::new(Vec::new()));
            let s = sizes.clone();
            let cfg = ProducerConfig {
                batch_bytes: 1 << 20,
                linger: std::time::Duration::ZERO,
                acks: 1,
                ..Default::default()
            };
            let on_ack: producer::AckCallback = Rc::new(move |b: &BatchAck<'_>| {
                assert!(b.error.is_none(), "{:?}", b.error);
                let written = b.written_at.expect("an acknowledged batch was written");
                assert!(written <= std::time::Instant::now());
                s.borrow_mut().push(b.record_count);
            });
            let p = Producer::new(cluster, "t", cfg, on_ack).await.unwrap();
            p.send(None, None, Some(b"first"), &[], 0, 0).await.unwrap();
            // No flush: the batch must leave on its own, far below batch_bytes.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while sizes.borrow().is_empty() && std::time::Instant::now() < deadline {
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            let first_acked = sizes.borrow().clone();
            for i in 1..=200u64 {
                p.send(None, None, Some(&[b'v'; 100]), &[], 0, i)
                    .await
                    .unwrap();
            }
            p.close().await.unwrap();
            (first_acked, sizes.borrow().clone())
        })
        .unwrap();
        assert_eq!(
            first_acked,
            vec![1],
            "a lone record was not sent on its own"
        );
        assert_eq!(sizes.iter().sum::<i32>(), 201);
        // The 200 records were appended without the sender running in between: the first
        // goes out alone (the sender was idle), the rest gather behind it.
        assert!(sizes.len() <= 4, "one batch per record or so: {sizes:?}");
    }

    #[test]
    fn failed_batches_are_reported_as_errors_not_acks() {
        // Every 3rd batch fails with NOT_LEADER_OR_FOLLOWER.
        let broker = fake(1, Some((3, 6)));
        let addr = broker.addr.clone();
        let (ok, failed, names) = block_on(move || async move {
            let cluster = Cluster::connect(ClientConfig::new(&addr)).await.unwrap();
            let counts = Rc::new(RefCell::new((0i64, 0i64, Vec::new())));
            let c = counts.clone();
            let cfg = ProducerConfig {
                batch_bytes: 200,
                acks: 1,
                ..Default::default()
            };
            let on_ack: producer::AckCallback = Rc::new(move |b: &BatchAck<'_>| {
                let mut c = c.borrow_mut();
                match b.error {
                    None => c.0 += b.record_count as i64,
                    Some(e) => {
                        c.1 += b.record_count as i64;
                        c.2.push(e.to_string());
                    }
                }
            });
            let p = Producer::new(cluster, "t", cfg, on_ack).await.unwrap();
            for i in 0..200u64 {
                p.send(None, None, Some(&[b'x'; 50]), &[], 0, i)
                    .await
                    .unwrap();
            }
            p.close().await.unwrap();
            let c = counts.borrow();
            (c.0, c.1, c.2.clone())
        })
        .unwrap();
        assert_eq!(ok + failed, 200);
        assert!(failed > 0);
        assert_eq!(
            broker.stored_records(0),
            ok,
            "acked count must equal what the broker stored"
        );
        assert!(names[0].contains("NOT_LEADER_OR_FOLLOWER"), "{}", names[0]);
    }

    #[test]
    fn pipelined_responses_are_matched_to_their_requests() {
        use kafka_protocol::messages::{
            MetadataRequest, TopicName, metadata_request::MetadataRequestTopic,
        };
        use kafka_protocol::protocol::StrBytes;
        let broker = fake(1, None);
        let addr = broker.addr.clone();
        let names = block_on(move || async move {
            let cfg = conn::ConnConfig {
                max_in_flight: 3,
                ..Default::default()
            };
            let conn = Rc::new(conn::Connection::connect(&addr, &cfg).await.unwrap());
            // 40 requests from concurrent tasks, at most 3 in flight; each asks for a different
            // topic, so a response handed to the wrong caller shows up as a wrong name.
            let tasks: Vec<_> = (0..40)
                .map(|i| {
                    let conn = conn.clone();
                    glommio::spawn_local(async move {
                        let mut t = MetadataRequestTopic::default();
                        t.name = Some(TopicName(StrBytes::from_string(format!("topic-{i}"))));
                        let mut req = MetadataRequest::default();
                        req.topics = Some(vec![t]);
                        let r = conn.call(&req).await.unwrap();
                        let got = r.topics[0].name.as_ref().unwrap().0.to_string();
                        (format!("topic-{i}"), got)
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await);
            }
            out
        })
        .unwrap();
        assert_eq!(names.len(), 40);
        for (want, got) in names {
            assert_eq!(want, got);
        }
    }

    #[test]
    fn connect_to_closed_port_is_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = block_on(move || async move {
            Cluster::connect(ClientConfig::new(&format!("127.0.0.1:{port}")))
                .await
                .map(|_| ())
        })
        .unwrap();
        assert!(matches!(r, Err(ClientError::Io { .. })), "{r:?}");
    }
}
