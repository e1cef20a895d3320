"""Thin helpers around the real clients so the tests read as what they check."""

import socket
import struct
import subprocess
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CLIENT_TIMEOUT_S = 30


_admins = {}


def admin(bootstrap: str) -> AdminClient:
    """One AdminClient per broker address, kept alive: librdkafka fails a pending request with
    _DESTROY if its client handle is garbage-collected before the future resolves."""
    if bootstrap not in _admins:
        _admins[bootstrap] = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
    return _admins[bootstrap]


def forget_broker(bootstrap: str) -> None:
    """Drops the cached AdminClient of a broker that is going away, so it stops reconnecting."""
    _admins.pop(bootstrap, None)


def create_topic(bootstrap: str, name: str, partitions: int = 1, config=None) -> None:
    futures = admin(bootstrap).create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        request_timeout=CLIENT_TIMEOUT_S,
    )
    futures[name].result(timeout=CLIENT_TIMEOUT_S)


def producer(bootstrap: str, **conf) -> Producer:
    base = {"bootstrap.servers": bootstrap, "broker.address.family": "v4", "linger.ms": 5}
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Producer(base)


def produce_all(p: Producer, topic: str, messages, partition=None) -> list:
    """Produces (key, value, headers, timestamp_ms) tuples; returns delivery reports in order.
    Fails the test on any delivery error."""
    reports = []
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            reports.append((msg.partition(), msg.offset(), msg.key(), msg.value()))

    for key, value, headers, ts in messages:
        kwargs = {"key": key, "value": value, "on_delivery": on_delivery}
        if headers:
            kwargs["headers"] = headers
        if ts is not None:
            kwargs["timestamp"] = ts
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                p.produce(topic, **kwargs)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    remaining = p.flush(CLIENT_TIMEOUT_S)
    assert remaining == 0, f"{remaining} messages not delivered"
    assert not errors, f"delivery errors: {errors[:5]}"
    return reports


def consume_assigned(bootstrap: str, topic: str, partitions, expected: int, timeout_s: float = CLIENT_TIMEOUT_S):
    """confluent-kafka consumer on explicitly assigned partitions from the beginning, no group."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "group.id": "e2e-assign-only",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        c.assign([TopicPartition(topic, p, 0) for p in partitions])
        out = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise AssertionError(f"consume error: {msg.error()}")
            out.append(msg)
        return out
    finally:
        c.close()


def kcat(*args, input_bytes=None, timeout_s: float = CLIENT_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["kcat", *args], input=input_bytes, capture_output=True, timeout=timeout_s, check=False
    )


def kafka_python_consumer(bootstrap: str, **conf):
    from kafka import KafkaConsumer

    return KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **conf)


# --- raw protocol, for the hostile-input and version-fallback tests -------------------------


def raw_request(api_key: int, api_version: int, correlation_id: int, body: bytes = b"", client_id=b"e2e") -> bytes:
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def recv_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    return recv_exact(sock, size)


def connection_closed(sock: socket.socket, timeout_s: float = 10.0) -> bool:
    """True when the peer closes (EOF or reset) within the timeout."""
    sock.settimeout(timeout_s)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def api_versions_v0(bootstrap_port: int) -> dict:
    """ApiVersions v0 over a raw socket: {api_key: (min, max)} and the error code."""
    with socket.create_connection(("127.0.0.1", bootstrap_port), timeout=10) as s:
        s.sendall(raw_request(18, 0, 7))
        frame = recv_frame(s)
    corr, err, n = struct.unpack(">ihi", frame[:10])
    assert corr == 7
    apis = {}
    off = 10
    for _ in range(n):
        k, lo, hi = struct.unpack(">hhh", frame[off : off + 6])
        apis[k] = (lo, hi)
        off += 6
    return {"error": err, "apis": apis}


__all__ = [
    "KafkaError",
    "TopicPartition",
    "admin",
    "create_topic",
    "producer",
    "produce_all",
    "consume_assigned",
    "kcat",
    "kafka_python_consumer",
    "raw_request",
    "recv_frame",
    "connection_closed",
    "api_versions_v0",
]


# --- crash/fault helpers (reliability suite) -------------------------------------------------

# Errors a partition answers with while the broker is still opening its logs.
RETRY_CODES = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT)


def end_offsets(bootstrap: str, topic: str, partitions, timeout_s: float = CLIENT_TIMEOUT_S) -> dict:
    """{partition: high watermark} of one topic; see `end_offsets_many`."""
    ends = end_offsets_many(bootstrap, [(topic, p) for p in partitions], timeout_s)
    return {p: ends[(topic, p)] for p in partitions}


def end_offsets_many(bootstrap: str, topic_partitions, timeout_s: float = CLIENT_TIMEOUT_S) -> dict:
    """{(topic, partition): high watermark}, asked from one short-lived consumer. Retriable
    errors (a partition still opening right after start-up answers NOT_LEADER) are retried until
    the timeout; a partition that never becomes available fails the test."""
    c = Consumer(
        {"bootstrap.servers": bootstrap, "broker.address.family": "v4", "group.id": "e2e-wm", "log_level": 0}
    )
    try:
        out = {}
        deadline = time.monotonic() + timeout_s
        for topic, p in topic_partitions:
            while True:
                try:
                    _low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
                    out[(topic, p)] = high
                    break
                except KafkaException as e:
                    err = e.args[0]
                    if time.monotonic() > deadline or not (err.retriable() or err.code() in RETRY_CODES):
                        raise AssertionError(f"partition {topic}-{p} not served: {err}") from e
                    time.sleep(0.05)
        return out
    finally:
        c.close()


def read_partitions(bootstrap: str, topic: str, ends: dict, timeout_s: float = 60.0) -> dict:
    """{partition: [(offset, value), ...]} of one topic from offset 0 up to `ends[partition]`."""
    got = read_to_ends(bootstrap, {(topic, p): end for p, end in ends.items()}, timeout_s)
    return {p: got[(topic, p)] for p in ends}


def read_to_ends(bootstrap: str, ends: dict, timeout_s: float = 60.0) -> dict:
    """Reads every record of each (topic, partition) from offset 0 up to `ends[(topic,
    partition)]` (exclusive) with one consumer: {(topic, partition): [(offset, value), ...]}.
    Fails the test on any consume error or if a partition cannot be read to its end in time (a
    log that does not serve its data). Offsets may have gaps (records a recovery dropped)."""
    out = {tp: [] for tp in ends}
    todo = {tp for tp, end in ends.items() if end > 0}
    if not todo:
        return out
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "group.id": "e2e-read-all",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.max.bytes": 8 << 20,
            "log_level": 0,
        }
    )
    try:
        c.assign([TopicPartition(t, p, 0) for t, p in sorted(todo)])
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                got = {tp: (out[tp][-1][0] + 1 if out[tp] else 0) for tp in todo}
                raise AssertionError(f"could not read to {ends}: stopped at {got}")
            for msg in c.consume(num_messages=5000, timeout=0.5):
                if msg.error():
                    raise AssertionError(f"consume error: {msg.error()}")
                tp = (msg.topic(), msg.partition())
                if tp in todo and msg.offset() < ends[tp]:
                    out[tp].append((msg.offset(), msg.value()))
                    if msg.offset() + 1 >= ends[tp]:
                        todo.discard(tp)
        return out
    finally:
        c.close()


def broker_rss_kib(pid: int) -> int:
    """Resident set size of a process from /proc/PID/status, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def free_port_outside_ephemeral_range() -> int:
    """A free port below the kernel's ephemeral range. Tests that restart a broker on the same
    port use it: while the broker is down, clients reconnecting get ephemeral local ports, and
    one of them could take a port picked from that range, making the restart fail with
    EADDRINUSE."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    import random as _random

    for _ in range(1000):
        port = _random.randrange(10000, max(10001, low - 1))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port below the ephemeral range")


def stable_port_broker(broker_factory, **kwargs):
    """A broker (from the conftest factory) listening on a port outside the ephemeral range."""
    b = broker_factory(start=False, **kwargs)
    b.port = free_port_outside_ephemeral_range()
    b.start()
    return b


def wait_port_released(port: int, timeout_s: float = 10.0) -> float:
    """Waits until 127.0.0.1:port can be bound again (as the broker's own bind check does, with
    SO_REUSEADDR); returns the seconds waited. A SIGKILLed broker's listening socket can outlive
    the process briefly: glommio's io_uring holds it through a pending accept until the kernel
    tears the ring down, and a restart in that window fails with EADDRINUSE."""
    started = time.monotonic()
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return time.monotonic() - started
            except OSError:
                if time.monotonic() - started > timeout_s:
                    raise AssertionError(f"port {port} still in use {timeout_s}s after the broker exited")
                time.sleep(0.02)
