"""Produce/consume round trips with real clients: keys, values, headers, timestamps, acks,
codecs, ordering, large messages, restarts."""

import json
import re
import time

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, TopicPartition

from clients import consume_assigned, create_topic, kafka_python_consumer, kcat, produce_all, producer

T = 30


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_round_trip_keys_values_headers_timestamps(broker, topic_name, acks):
    create_topic(broker.bootstrap, topic_name, partitions=1)
    base_ts = 1_600_000_000_000
    msgs = [
        (f"k{i}".encode(), f"value-{i}".encode() * (i % 7 + 1), [("h", f"{i}".encode()), ("x", b"\x00\xff")], base_ts + i)
        for i in range(200)
    ]
    msgs.append((None, b"no key", None, base_ts + 500))
    msgs.append((b"tombstone", None, None, base_ts + 501))
    p = producer(broker.bootstrap, acks=acks)
    produce_all(p, topic_name, msgs)

    got = consume_assigned(broker.bootstrap, topic_name, [0], len(msgs))
    assert len(got) == len(msgs)
    for i, (m, (key, value, headers, ts)) in enumerate(zip(got, msgs)):
        assert m.offset() == i
        assert m.key() == key
        assert m.value() == value
        assert (m.headers() or None) == (headers or None)
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, ts)


def test_delivery_reports_carry_offsets(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, partitions=1)
    reports = produce_all(producer(broker.bootstrap, acks="all"), topic_name, [(None, b"%d" % i, None, None) for i in range(50)])
    assert [off for (_, off, _, _) in reports] == list(range(50))


def test_log_append_time(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, config={"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    produce_all(producer(broker.bootstrap), topic_name, [(None, b"a", None, 1000), (None, b"b", None, 2000)])
    after = int(time.time() * 1000)
    got = consume_assigned(broker.bootstrap, topic_name, [0], 2)
    for m in got:
        kind, ts = m.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME
        assert before - 1000 <= ts <= after + 1000


def test_log_append_time_large_batches_keep_valid_crcs(broker_factory, topic_name):
    """Large appends are written in two parts (into blocks allocated ahead), each from its own
    buffer, and a batch may straddle the two; under LogAppendTime the broker rewrites each
    batch's timestamp and so its CRC, across the cut. Served from the tail cache (the parts as
    two pieces) with fetch limits that cut through them, kafka-python (which checks every
    batch's CRC) reads every record back with its append time; confluent-kafka too."""
    import hashlib

    broker = broker_factory(extra_args=["--set", "tail.cache.bytes.per.core=268435456"])
    create_topic(broker.bootstrap, topic_name, partitions=1, config={"message.timestamp.type": "LogAppendTime"})
    messages = [(b"%d" % i, hashlib.sha256(b"%d" % i).digest() * 100, None, 1000 + i) for i in range(3000)]
    before = int(time.time() * 1000)
    produce_all(producer(broker.bootstrap, linger_ms=20, batch_size=262144), topic_name, messages, partition=0)
    after = int(time.time() * 1000)

    from kafka import TopicPartition as KafkaPythonTopicPartition

    c = kafka_python_consumer(broker.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=15000,
                              check_crcs=True, max_partition_fetch_bytes=50_000)
    c.assign([KafkaPythonTopicPartition(topic_name, 0)])
    c.seek_to_beginning()
    seen = []
    for msg in c:
        assert msg.timestamp_type == 1, f"offset {msg.offset}: not LogAppendTime"
        assert before - 1000 <= msg.timestamp <= after + 1000
        seen.append((msg.offset, msg.key, msg.value))
        if len(seen) == len(messages):
            break
    c.close()
    assert seen == [(i, k, v) for i, (k, v, _, _) in enumerate(messages)]

    got = consume_assigned(broker.bootstrap, topic_name, [0], len(messages))
    assert [(m.offset(), m.value()) for m in got] == [(i, v) for i, (_, v, _, _) in enumerate(messages)]
    assert all(m.timestamp()[0] == TIMESTAMP_LOG_APPEND_TIME for m in got)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_codecs_read_by_every_client(broker, topic_name, codec):
    create_topic(broker.bootstrap, topic_name, partitions=1)
    msgs = [(b"k%d" % i, (b"compressible %d " % i) * 20, [("codec", codec.encode())], None) for i in range(300)]
    produce_all(producer(broker.bootstrap, acks="all", **{"compression.type": codec, "linger.ms": 50}), topic_name, msgs)

    got = consume_assigned(broker.bootstrap, topic_name, [0], len(msgs))
    assert [m.value() for m in got] == [v for (_, v, _, _) in msgs]

    out = kcat("-b", broker.bootstrap, "-C", "-t", topic_name, "-p", "0", "-o", "beginning", "-e", "-J")
    assert out.returncode == 0, out.stderr.decode()
    lines = [json.loads(x) for x in out.stdout.decode().splitlines() if x.strip()]
    assert [x["payload"] for x in lines] == [v.decode() for (_, v, _, _) in msgs]
    assert [x["offset"] for x in lines] == list(range(len(msgs)))

    c = kafka_python_consumer(broker.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=10000)
    try:
        from kafka import TopicPartition as KTP

        c.assign([KTP(topic_name, 0)])
        c.seek_to_beginning()
        vals = []
        for rec in c:
            vals.append(rec.value)
            if len(vals) == len(msgs):
                break
        assert vals == [v for (_, v, _, _) in msgs]
    finally:
        c.close()


def test_kcat_produce_kafka_python_consume(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, partitions=1)
    lines = b"".join(b"key%d:line %d\n" % (i, i) for i in range(100))
    out = kcat("-b", broker.bootstrap, "-P", "-t", topic_name, "-K", ":", "-p", "0", input_bytes=lines)
    assert out.returncode == 0, out.stderr.decode()
    c = kafka_python_consumer(broker.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=10000)
    try:
        from kafka import TopicPartition as KTP

        c.assign([KTP(topic_name, 0)])
        recs = []
        for rec in c:
            recs.append(rec)
            if len(recs) == 100:
                break
    finally:
        c.close()
    assert [(r.key, r.value, r.offset) for r in recs] == [(b"key%d" % i, b"line %d" % i, i) for i in range(100)]


def test_kafka_python_producer_round_trip(broker, topic_name):
    from kafka import KafkaProducer

    create_topic(broker.bootstrap, topic_name, partitions=3)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    futures = [p.send(topic_name, key=b"k%d" % (i % 5), value=b"v%d" % i, headers=[("n", b"%d" % i)]) for i in range(300)]
    metas = [f.get(timeout=T) for f in futures]
    p.close()
    by_partition = {}
    for i, m in enumerate(metas):
        by_partition.setdefault(m.partition, []).append((m.offset, i))
    for part, items in by_partition.items():
        assert [o for (o, _) in items] == list(range(len(items))), f"offsets on partition {part} not dense"
    got = consume_assigned(broker.bootstrap, topic_name, [0, 1, 2], 300)
    assert sorted(int(m.value()[1:]) for m in got) == list(range(300))
    assert all(m.headers() == [("n", m.value()[1:])] for m in got)


def test_per_partition_order_of_10000_keyed_messages(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, partitions=4)
    keys = [b"key-%d" % k for k in range(16)]
    msgs = [(keys[i % 16], b"%d" % i, None, None) for i in range(10_000)]
    reports = produce_all(producer(broker.bootstrap, acks="1", **{"linger.ms": 20}), topic_name, msgs)
    part_of_key = {}
    for part, _, key, _ in reports:
        assert part_of_key.setdefault(key, part) == part, "same key landed on two partitions"
    got = consume_assigned(broker.bootstrap, topic_name, [0, 1, 2, 3], 10_000, timeout_s=60)
    assert len(got) == 10_000
    seq_by_key = {}
    for m in got:
        assert m.partition() == part_of_key[m.key()]
        seq_by_key.setdefault(m.key(), []).append(int(m.value()))
    for key, seq in seq_by_key.items():
        assert seq == sorted(seq), f"key {key} out of order"
        assert len(seq) == 10_000 // 16


def test_pipelined_produce_requests_keep_order_across_clients(broker_factory, topic_name):
    """librdkafka sends its Produce requests back to back (up to max.in.flight); the broker
    writes several at once and must still append them in request order and answer in order:
    every delivery report's offset matches, and every client reads each partition in send
    order. The broker's log shows that requests did overlap, so the test covers pipelining."""
    import re

    broker = broker_factory(extra_args=["--log-level", "info,gregor_net::connection=debug"])
    create_topic(broker.bootstrap, topic_name, partitions=2)
    count = 20_000
    msgs = [(None, b"%06d" % i + b"." * 200, None, None) for i in range(count)]
    p = producer(
        broker.bootstrap,
        acks="1",
        **{"linger.ms": 0, "batch.num.messages": 20, "max.in.flight.requests.per.connection": 5},
    )
    reports = []
    for part in (0, 1):
        reports += produce_all(p, topic_name, [m for i, m in enumerate(msgs) if i % 2 == part], partition=part)
    offset_of = {(part, int(value[:6])): offset for part, offset, _, value in reports}
    for part in (0, 1):
        sent = [i for i in range(count) if i % 2 == part]
        assert [offset_of[(part, i)] for i in sent] == list(range(len(sent))), f"partition {part}"
    del p  # its connection closes, and the broker logs how many requests it had in flight

    got = consume_assigned(broker.bootstrap, topic_name, [0, 1], count, timeout_s=60)
    assert len(got) == count
    for m in got:
        assert m.offset() == offset_of[(m.partition(), int(m.value()[:6]))]
    c = kafka_python_consumer(broker.bootstrap)
    from kafka import TopicPartition as KTopicPartition

    c.assign([KTopicPartition(topic_name, 0), KTopicPartition(topic_name, 1)])
    c.seek_to_beginning()
    seen = {0: [], 1: []}
    deadline = time.monotonic() + 60
    while sum(len(v) for v in seen.values()) < count and time.monotonic() < deadline:
        for tp, records in c.poll(timeout_ms=500).items():
            seen[tp.partition] += [(r.offset, int(r.value[:6])) for r in records]
    c.close()
    for part in (0, 1):
        sent = [i for i in range(count) if i % 2 == part]
        assert seen[part] == list(enumerate(sent)), f"kafka-python, partition {part}"

    deadline = time.monotonic() + 10
    overlaps = []
    while time.monotonic() < deadline:
        overlaps = [int(n) for n in re.findall(r"produce_in_flight_max=(\d+)", broker.log_text())]
        if max(overlaps, default=0) > 1:
            break
        time.sleep(0.2)
    assert max(overlaps, default=0) > 1, f"no Produce requests overlapped: {overlaps}"


def test_900kb_message(broker, topic_name):
    create_topic(broker.bootstrap, topic_name)
    big = bytes(range(256)) * (900_000 // 256)
    produce_all(producer(broker.bootstrap, acks="all", **{"message.max.bytes": 2_000_000}), topic_name, [(b"big", big, None, None)])
    got = consume_assigned(broker.bootstrap, topic_name, [0], 1)
    assert got[0].value() == big
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic_name, "-o", "beginning", "-e", "-f", "%S\n")
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().split() == [str(len(big))]


def test_message_too_large_is_refused_with_kafka_error(broker, topic_name):
    from confluent_kafka import KafkaError

    create_topic(broker.bootstrap, topic_name)  # max.message.bytes default 1048588
    p = producer(broker.bootstrap, acks="all", **{"message.max.bytes": 5_000_000})
    errs = []
    p.produce(topic_name, value=b"z" * 2_000_000, on_delivery=lambda e, m: errs.append(e))
    p.flush(T)
    assert errs and errs[0] is not None and errs[0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    # The partition is unharmed and keeps working.
    produce_all(p, topic_name, [(None, b"small", None, None)])
    got = consume_assigned(broker.bootstrap, topic_name, [0], 1)
    assert got[0].value() == b"small" and got[0].offset() == 0


def test_restart_reads_everything_back(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, partitions=3, config={"segment.bytes": "65536"})
    msgs = [(b"k%d" % i, b"v%d-" % i * 30, None, None) for i in range(3000)]
    # Batches stay under segment.bytes: a larger one is refused (RECORD_LIST_TOO_LARGE), as in Kafka.
    produce_all(producer(broker.bootstrap, acks="all", **{"batch.size": 16384}), topic_name, msgs)
    broker.restart()
    got = consume_assigned(broker.bootstrap, topic_name, [0, 1, 2], 3000)
    assert sorted(m.value() for m in got) == sorted(v for (_, v, _, _) in msgs)
    # Kafka's layout: one directory per partition, segments named by 20-digit base offset.
    for p in range(3):
        d = broker.data_dir / f"{topic_name}-{p}"
        assert (d / "00000000000000000000.log").exists()
        assert (d / "00000000000000000000.index").exists()
    logs = sorted(x.name for x in broker.data_dir.glob(f"{topic_name}-*/*.log"))
    assert len(logs) > 3, "segment.bytes=65536 should have rolled segments"
    # Appends continue at the right offsets after the restart.
    reports = produce_all(producer(broker.bootstrap, acks="all"), topic_name, [(None, b"after", None, None)], partition=0)
    before = sum(1 for m in got if m.partition() == 0)
    assert reports[0][1] == before


def test_long_poll_fetch_returns_when_data_arrives(broker, topic_name):
    create_topic(broker.bootstrap, topic_name)
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "lp",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5000,
            "broker.address.family": "v4",
        }
    )
    try:
        c.assign([TopicPartition(topic_name, 0, 0)])
        assert c.poll(1.0) is None
        p = producer(broker.bootstrap, acks="1", **{"linger.ms": 0})
        sent = time.monotonic()
        produce_all(p, topic_name, [(None, b"wake", None, None)])
        msg = None
        while msg is None and time.monotonic() - sent < 10:
            msg = c.poll(0.2)
        assert msg is not None and msg.value() == b"wake"
        # A long poll that wakes on append answers well before fetch.wait.max.ms.
        assert time.monotonic() - sent < 4.0
    finally:
        c.close()


def produce_mixed_sizes(broker, topic_name, count, **producer_conf) -> dict:
    """Produces `count` records of 10 B to 5 KB (content derived from the index) to the topic's
    2 partitions; returns {partition: [(offset, value)]} from the delivery reports."""
    import hashlib
    import random

    rng = random.Random(7)
    p = producer(broker.bootstrap, **producer_conf)
    messages = []
    for i in range(count):
        size = rng.choice([10, 300, 1000, 5000])
        value = hashlib.sha256(str(i).encode()).digest() * (size // 32 + 1)
        messages.append((str(i).encode(), value[:size], None, None))
    reports = produce_all(p, topic_name, messages)
    by_partition = {0: [], 1: []}
    for partition, offset, _, value in reports:
        by_partition[partition].append((offset, value))
    assert sum(len(v) for v in by_partition.values()) == len(messages)
    return by_partition


def assert_every_client_reads_back(broker, topic_name, by_partition, kafka_python_fetch_bytes=1048576):
    """confluent-kafka, kafka-python and kcat each read every record exactly, in order."""
    from clients import read_partitions

    ends = {q: len(v) for q, v in by_partition.items()}
    got = read_partitions(broker.bootstrap, topic_name, ends)
    for q in ends:
        assert got[q] == sorted(by_partition[q]), f"confluent-kafka, partition {q}"

    c = kafka_python_consumer(broker.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=15000,
                              max_partition_fetch_bytes=kafka_python_fetch_bytes)
    from kafka import TopicPartition as KafkaPythonTopicPartition

    c.assign([KafkaPythonTopicPartition(topic_name, q) for q in ends])
    c.seek_to_beginning()
    seen = {q: [] for q in ends}
    for msg in c:
        seen[msg.partition].append((msg.offset, msg.value))
        if all(len(seen[q]) >= ends[q] for q in ends):
            break
    c.close()
    for q in ends:
        assert seen[q] == sorted(by_partition[q]), f"kafka-python, partition {q}"

    out = kcat("-b", broker.bootstrap, "-C", "-t", topic_name, "-p", "1", "-o", "beginning", "-e", "-f", "%o %S\n",
               timeout_s=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().split("\n")[:-1]
    assert [tuple(map(int, line.split())) for line in lines] == [(o, len(v)) for o, v in sorted(by_partition[1])]


@pytest.mark.parametrize("cold_reads", ["direct", "sendfile"])
def test_cold_reads_from_sealed_segments_serve_every_client(broker_factory, topic_name, cold_reads):
    """With the tail cache off and small segments, fetches are served from segment files:
    read with O_DIRECT into memory, with reads ahead of the next fetch (`direct`, the
    default), or by sendfile (file ranges cut at index entries). confluent-kafka,
    kafka-python and kcat each read back every record exactly, in order, across many segment
    boundaries."""
    broker = broker_factory(
        extra_args=["--set", "tail.cache.bytes.per.core=0", "--set", f"fetch.cold.reads={cold_reads}"]
    )
    create_topic(broker.bootstrap, topic_name, partitions=2, config={"segment.bytes": str(256 * 1024)})
    by_partition = produce_mixed_sizes(broker, topic_name, 12_000, linger_ms=2, batch_size=65536)
    seg_files = list((broker.data_dir / f"{topic_name}-0").glob("*.log"))
    assert len(seg_files) > 10, f"expected many segments, got {len(seg_files)}"
    assert_every_client_reads_back(broker, topic_name, by_partition)


@pytest.mark.parametrize("cold_reads", ["direct", "sendfile"])
def test_consumer_reading_from_disk_while_producers_write(broker_factory, topic_name, cold_reads):
    """With the tail cache off, a consumer that follows producers reads every batch from the
    segment files while appends still extend them (direct reads, paced while producers write,
    racing the rewrites of each segment's partly filled last block; or sendfile, and O_DIRECT
    reads near the write position). confluent-kafka reads every record exactly once, in
    order, as the delivery reports say."""
    import threading

    from confluent_kafka import Consumer

    broker = broker_factory(
        extra_args=["--set", "tail.cache.bytes.per.core=0", "--set", f"fetch.cold.reads={cold_reads}"]
    )
    create_topic(broker.bootstrap, topic_name, partitions=2, config={"segment.bytes": str(1 << 20)})
    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "broker.address.family": "v4",
            "group.id": "e2e-follow",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    c.assign([TopicPartition(topic_name, q, 0) for q in (0, 1)])
    produced = {0: [], 1: []}

    def produce():
        # 15 rounds of 1,000 records, so that the consumer reads while appends go on.
        for _ in range(15):
            for q, rows in produce_mixed_sizes(broker, topic_name, 1000, linger_ms=1, batch_size=16384).items():
                produced[q].extend(rows)
            time.sleep(0.05)

    writer = threading.Thread(target=produce)
    writer.start()
    seen = {0: [], 1: []}
    read_while_writing = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            writing = writer.is_alive()
            msg = c.poll(0.2)
            if msg is not None:
                assert not msg.error(), msg.error()
                seen[msg.partition()].append((msg.offset(), msg.value()))
                read_while_writing += writing
            elif not writing and sum(map(len, seen.values())) >= 15_000:
                break
    finally:
        c.close()
        writer.join()
    assert len(list((broker.data_dir / f"{topic_name}-0").glob("*.log"))) > 3
    assert read_while_writing > 5_000, f"only {read_while_writing} records read while producers wrote"
    for q in (0, 1):
        assert seen[q] == sorted(produced[q]), f"partition {q}"


def test_tail_reads_from_the_cache_serve_every_client(broker_factory, topic_name):
    """Everything still in the tail cache: a fetch gets the appended buffers themselves, one
    piece per append (each lent to the connection's core without a copy). Every client reads
    every record exactly, in order, also with fetch limits that cut through the pieces, and
    again after the pieces were released by the connections of both cores."""
    broker = broker_factory(extra_args=["--set", "tail.cache.bytes.per.core=268435456"])
    create_topic(broker.bootstrap, topic_name, partitions=2)
    # Big batches: their O_DIRECT write buffers are cached as they are, not copied out.
    by_partition = produce_mixed_sizes(broker, topic_name, 12_000, linger_ms=20, batch_size=262144)
    assert_every_client_reads_back(broker, topic_name, by_partition, kafka_python_fetch_bytes=50_000)
    assert_every_client_reads_back(broker, topic_name, by_partition)


def test_tail_cache_past_what_io_uring_registers(broker_factory, topic_name):
    """A tail cache set past what io_uring registers as one buffer (1 GiB per core, where the
    cache lives): the registered memory stops at that limit and the cache is cut to fit, with
    a warning naming both sizes. Before, the region asked for (cache plus 64 MiB) was refused
    by io_uring as a whole, glommio logged "registering buffers ... Bad address", and every
    write buffer was faulted in page by page on first use (latencies of a second while the
    cache filled). Every client still reads every record."""
    broker = broker_factory(extra_args=["--set", f"tail.cache.bytes.per.core={2 << 30}"])
    log = broker.log_text()
    assert "registering buffers" not in log, log[-2000:]
    assert re.search(r"the cache holds \d+ MiB per core, not the 2048 MiB set", log), log[-2000:]
    create_topic(broker.bootstrap, topic_name, partitions=2)
    by_partition = produce_mixed_sizes(broker, topic_name, 6_000, linger_ms=20, batch_size=262144)
    assert_every_client_reads_back(broker, topic_name, by_partition)
    assert "registering buffers" not in broker.log_text()


def file_identity(path) -> tuple:
    """(inode, generation) of a file: stays the same across renames, differs for a new file."""
    import fcntl
    import struct

    fs_ioc_getversion = 0x80087601
    with open(path, "rb") as f:
        generation = struct.unpack("l", fcntl.ioctl(f.fileno(), fs_ioc_getversion, b"\0" * 8))[0]
    return (path.stat().st_ino, generation)


@pytest.mark.parametrize("cold_reads", ["direct", "sendfile"])
def test_retention_reuses_segment_files_without_serving_old_data(broker_factory, topic_name, cold_reads):
    """Retention on small segments with no delete delay: the files of removed segments come
    back as new segments (the same inodes), and kcat reads every retained record exactly, with
    the tail cache off (so from reused files, read ahead with O_DIRECT or sent by sendfile),
    before and after a crash. A reused file's old batches past the new data must never reach
    a client."""
    import hashlib

    broker = broker_factory(
        extra_args=[
            "--set", "tail.cache.bytes.per.core=0",
            "--set", "log.retention.check.interval.ms=200",
            "--set", f"fetch.cold.reads={cold_reads}",
        ]
    )
    create_topic(
        broker.bootstrap,
        topic_name,
        partitions=1,
        config={"segment.bytes": str(2 << 20), "retention.bytes": str(6 << 20), "file.delete.delay.ms": "0"},
    )

    def value(i: int) -> bytes:
        return (hashlib.sha256(str(i).encode()).hexdigest() * 64)[: 1000 + i % 1000].encode()

    pdir = broker.data_dir / f"{topic_name}-0"
    inodes = {}
    p = producer(broker.bootstrap, linger_ms=5, batch_size=262144)
    produced = 0
    for _ in range(30):
        reports = produce_all(p, topic_name, [(None, value(produced + j), None, None) for j in range(1000)], partition=0)
        assert [r[1] for r in reports] == list(range(produced, produced + 1000))
        produced += 1000
        for f in pdir.glob("*.log"):
            if f.name not in inodes:
                inodes[f.name] = file_identity(f)
        time.sleep(0.25)
    # ext4 hands a freed inode number out again, but with a new generation: the pair names a file.
    assert len(set(inodes.values())) + 5 <= len(inodes), f"segment files were not reused: {inodes}"

    def read_all():
        out = kcat("-b", broker.bootstrap, "-C", "-t", topic_name, "-p", "0", "-o", "beginning", "-e",
                   "-f", "%o %s\n", timeout_s=60)
        assert out.returncode == 0, out.stderr
        rows = [line.split(b" ", 1) for line in out.stdout.split(b"\n")[:-1]]
        offsets = [int(o) for o, _ in rows]
        assert offsets and offsets[-1] == produced - 1, f"read up to {offsets[-1:]} of {produced}"
        assert offsets == list(range(offsets[0], produced)), "gaps or repeats"
        assert offsets[0] > 0, "retention removed nothing"
        bad = [o for o, v in zip(offsets, (v for _, v in rows)) if v != value(o)]
        assert not bad, f"{len(bad)} records differ, first at offset {bad[0]}"
        return offsets[0]

    start = read_all()
    broker.kill()
    broker.start()
    assert read_all() >= start
