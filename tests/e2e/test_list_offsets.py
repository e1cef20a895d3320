"""ListOffsets: earliest, latest, by timestamp, with two clients; DeleteRecords moves the start."""

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import OffsetSpec

from clients import admin, create_topic, produce_all, producer

T = 30


def test_offsets_by_timestamp_earliest_latest(broker, topic_name):
    create_topic(broker.bootstrap, topic_name)
    base = 1_700_000_000_000
    # Separate batches (linger 0, flush each) so timestamps fall in distinct batches.
    p = producer(broker.bootstrap, acks="all", **{"linger.ms": 0})
    for i in range(10):
        produce_all(p, topic_name, [(None, b"m%d" % i, None, base + i * 1000)])

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lo", "broker.address.family": "v4"})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=T)
        assert (lo, hi) == (0, 10)
        res = c.offsets_for_times([TopicPartition(topic_name, 0, base + 4500)], timeout=T)
        assert res[0].offset == 5
        res = c.offsets_for_times([TopicPartition(topic_name, 0, base)], timeout=T)
        assert res[0].offset == 0
        res = c.offsets_for_times([TopicPartition(topic_name, 0, base + 60_000)], timeout=T)
        assert res[0].offset == -1  # no such record: end
    finally:
        c.close()

    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    try:
        tp = KTP(topic_name, 0)
        r = kc.offsets_for_times({tp: base + 7000})[tp]
        assert (r.offset, r.timestamp) == (7, base + 7000)
        assert kc.beginning_offsets([tp])[tp] == 0
        assert kc.end_offsets([tp])[tp] == 10
    finally:
        kc.close()

    a = admin(broker.bootstrap)
    tp = TopicPartition(topic_name, 0)
    r = a.list_offsets({tp: OffsetSpec.max_timestamp()}).get(tp) if hasattr(a, "list_offsets") else None
    if r is not None:
        info = r.result(timeout=T)
        assert info.offset == 9 and info.timestamp == base + 9000


def test_delete_records_advances_log_start(broker, topic_name):
    create_topic(broker.bootstrap, topic_name)
    produce_all(producer(broker.bootstrap, acks="all"), topic_name, [(None, b"%d" % i, None, None) for i in range(100)])
    a = admin(broker.bootstrap)
    tp = TopicPartition(topic_name, 0, 40)
    res = a.delete_records([tp])[tp].result(timeout=T)
    assert res.low_watermark == 40
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "dr", "broker.address.family": "v4"})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=T)
        assert lo >= 0 and lo <= 40 and hi == 100
        # Kafka semantics: the low watermark is exactly the requested offset.
        assert lo == 40
    finally:
        c.close()
