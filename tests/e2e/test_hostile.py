"""Bad input gets a closed connection and a log line; other clients carry on; nothing is lost."""

import os
import socket
import struct

from clients import (
    api_versions_v0,
    connection_closed,
    consume_assigned,
    create_topic,
    produce_all,
    producer,
    raw_request,
    recv_frame,
)


def test_garbage_client_is_disconnected_while_another_keeps_working(broker, topic_name):
    create_topic(broker.bootstrap, topic_name)
    p = producer(broker.bootstrap, acks="all")
    produce_all(p, topic_name, [(None, b"before", None, None)])

    for garbage in (
        struct.pack(">i", 12) + os.urandom(12),  # random header: unknown api key / bad lengths
        struct.pack(">i", 8) + struct.pack(">hhi", 0, 9, 1),  # Produce v9 header cut short
        raw_request(3, 12, 5, body=os.urandom(40)),  # Metadata with a random body
        struct.pack(">i", -5),  # negative frame size
    ):
        with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
            s.sendall(garbage)
            assert connection_closed(s), f"connection stayed open after {garbage[:16]!r}"

    produce_all(p, topic_name, [(None, b"after", None, None)])
    got = consume_assigned(broker.bootstrap, topic_name, [0], 2)
    assert [m.value() for m in got] == [b"before", b"after"]
    assert broker.proc.poll() is None, "broker died"
    assert "panic" not in broker.log_text().lower()


def test_oversized_frame_refused_before_allocation(broker):
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        s.sendall(struct.pack(">i", 2_000_000_000) + b"\x00" * 64)
        assert connection_closed(s)
    assert api_versions_v0(broker.port)["error"] == 0
    assert broker.proc.poll() is None


def test_corrupt_batch_gets_corrupt_message(broker, topic_name):
    """A Produce whose record batch fails its CRC gets CORRUPT_MESSAGE (2) and nothing is stored."""
    create_topic(broker.bootstrap, topic_name)
    batch = build_v2_batch([b"payload"])
    bad = bytearray(batch)
    bad[-1] ^= 0xFF  # flip a byte of the record: the CRC no longer matches
    err = raw_produce(broker.port, topic_name, bytes(bad))
    assert err == 2
    assert raw_produce(broker.port, topic_name, batch) == 0
    got = consume_assigned(broker.bootstrap, topic_name, [0], 1)
    assert got[0].value() == b"payload" and got[0].offset() == 0


# --- hand-built protocol pieces for the corrupt-batch test -----------------------------------


def varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def build_v2_batch(values) -> bytes:
    records = b""
    for i, v in enumerate(values):
        body = b"\x00" + varint(0) + varint(i) + varint(-1) + varint(len(v)) + v + varint(0)
        records += varint(len(body)) + body
    ts = 1_700_000_000_000
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, ts, ts, -1, -1, -1, len(values)) + records
    crc = crc32c(after_crc)
    # partitionLeaderEpoch, magic, crc
    mid = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(mid)) + mid


def raw_produce(port: int, topic: str, batch: bytes) -> int:
    """Produce v3 (non-flexible) with acks=-1; returns the partition error code."""
    t = topic.encode()
    body = struct.pack(">hhi", -1, -1, 30000)  # transactional_id null, acks, timeout
    body += struct.pack(">i", 1) + struct.pack(">h", len(t)) + t
    body += struct.pack(">i", 1) + struct.pack(">i", 0) + struct.pack(">i", len(batch)) + batch
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw_request(0, 3, 9, body))
        frame = recv_frame(s)
    corr, ntopics = struct.unpack(">ii", frame[:8])
    assert corr == 9 and ntopics == 1
    (tlen,) = struct.unpack(">h", frame[8:10])
    off = 10 + tlen
    (nparts,) = struct.unpack(">i", frame[off : off + 4])
    assert nparts == 1
    part, err = struct.unpack(">ih", frame[off + 4 : off + 10])
    assert part == 0
    return err
