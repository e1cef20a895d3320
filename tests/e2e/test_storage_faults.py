"""Storage faults: with the broker down, truncate, zero or bit-flip the tail of segment, index and
time-index files (and the metadata file) at random points; the broker must start, keep every
intact batch before the damage, say in its log what it dropped, and never panic.

Cheap by design: each broker start checks one damage on each of many small topics (one
partition, small segments, dense index entries so every file kind has content).

"Tail" means what recovery is specified to check (docs/STORAGE.md): after a crash, the whole
last segment; in every other case, from the batch of the last offset-index entry onwards. Bytes
before the last index entry of a sealed (or cleanly closed) segment are trusted without a scan,
as in Kafka, so damage there is not something recovery claims to catch.
"""

import json
import os
import random
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
from clients import (
    consume_assigned,
    create_topic,
    end_offsets_many,
    producer,
    read_to_ends,
    stable_port_broker,
    wait_port_released,
)
from confluent_kafka import Producer
from conftest import gregor_bin

SEGMENT_BYTES = 8192
INDEX_INTERVAL_BYTES = 512
BATCHES_PER_TOPIC = 48
RECORDS_PER_BATCH = 3
TOPICS_PER_ROUND = 40


def parse_segment(path: Path):
    """[(position, end, base_offset, last_offset)] of the well-formed batch headers in a .log,
    stopping at padding (batchLength 0) or a batch that runs past the end."""
    data = path.read_bytes()
    out = []
    pos = 0
    while pos + 61 <= len(data):
        base, length = struct.unpack(">qi", data[pos : pos + 12])
        if length <= 0:
            break
        end = pos + 12 + length
        if end > len(data):
            break
        (last_delta,) = struct.unpack(">i", data[pos + 23 : pos + 27])
        out.append((pos, end, base, base + last_delta))
        pos = end
    return out


def last_index_position(index_path: Path) -> int:
    data = index_path.read_bytes() if index_path.exists() else b""
    if len(data) < 8:
        return 0
    return struct.unpack(">I", data[len(data) - len(data) % 8 - 4 : len(data) - len(data) % 8])[0]


def damage(path: Path, mode: str, at: int, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    at = min(at, len(data))
    if mode == "truncate":
        del data[at:]
    elif mode == "zero":
        data[at:] = bytes(len(data) - at)
    elif mode == "flip":
        if at >= len(data):
            return "no-op"
        data[at] ^= 1 << rng.randrange(8)
    elif mode == "garbage":
        n = min(rng.randrange(1, 64), len(data) - at)
        data[at : at + n] = rng.randbytes(n)
    path.write_bytes(bytes(data))
    return f"{mode}@{at}"


def produce_topics(bootstrap: str, topics):
    """BATCHES_PER_TOPIC batches of RECORDS_PER_BATCH records into every topic; one flush per
    round of batches so each topic gets its own batch each time. Returns {topic: {offset: value}}."""
    written = {t: {} for t in topics}
    p = producer(bootstrap, acks="all", linger_ms=50, batch_num_messages=RECORDS_PER_BATCH)
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            written[msg.topic()][msg.offset()] = msg.value()

    for b in range(BATCHES_PER_TOPIC):
        for t in topics:
            for r in range(RECORDS_PER_BATCH):
                p.produce(t, value=f"{t}:{b}:{r}:".encode() + bytes(80), partition=0, on_delivery=on_delivery)
        p.poll(0)
        assert p.flush(30) == 0
    assert not errors, errors[:3]
    return written


class Case:
    """One damage applied to one topic's partition directory, and what must survive it."""

    def __init__(self, topic: str, pdir: Path, written: dict, rng: random.Random, clean: bool, kind: str):
        self.topic = topic
        self.written = written
        logs = sorted(pdir.glob("*.log"))
        assert len(logs) >= 2, f"{topic}: expected several segments, got {logs}"
        seg = rng.randrange(len(logs))
        self.segment = logs[seg]
        is_last = seg == len(logs) - 1
        mode = rng.choice(["truncate", "zero", "flip", "garbage"])
        batches = parse_segment(self.segment)
        self.required = set(written)
        if kind == "log":
            tail_start = 0 if (is_last and not clean) else last_index_position(self.segment.with_suffix(".index"))
            size = self.segment.stat().st_size
            at = rng.randrange(tail_start, max(tail_start + 1, size))
            self.what = damage(self.segment, mode, at, rng)
            # Batches that end at or before the damage are intact and must survive; the rest of
            # this segment may be cut. Other segments are untouched and must survive too.
            damaged = {o for (pos, end, base, last) in batches if end > at for o in range(base, last + 1)}
            self.required -= damaged
        else:
            path = self.segment.with_suffix(kind)
            size = path.stat().st_size if path.exists() else 0
            at = rng.randrange(0, max(1, size))
            self.what = damage(path, mode, at, rng) if path.exists() else "missing"
        self.description = f"{topic}: {kind} of segment {self.segment.name} ({'last' if is_last else 'sealed'}) {self.what}"

    def check(self, read: list, broker_log: str):
        got = dict(read)
        wrong = [(o, v, self.written.get(o)) for o, v in read if self.written.get(o) != v]
        assert not wrong, f"{self.description}: records changed or invented: {wrong[:3]}"
        lost = sorted(self.required - set(got))
        assert not lost, f"{self.description}: intact records lost: {lost[:10]} (of {len(lost)})"
        dropped = set(self.written) - set(got)
        self.dropped = len(dropped)
        if dropped:
            assert self.segment.name in broker_log, (
                f"{self.description}: dropped offsets {sorted(dropped)[:5]}... without a log line naming the segment"
            )


def seeded_rng(what: str) -> random.Random:
    """The damage is drawn at random: the seed is printed (pytest shows it beside a failure),
    and GREGOR_FAULT_SEED=<seed> draws the same damage choices again."""
    seed = int(os.environ.get("GREGOR_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"{what}: seed {seed} (replay with GREGOR_FAULT_SEED={seed})")
    return random.Random(seed)


def run_round(broker_factory, rng: random.Random, clean: bool, kinds, topics_per_round: int):
    broker = stable_port_broker(broker_factory, extra_args=["--set", "auto.create.topics.enable=false"])
    topics = [f"faults-{i}-{rng.randrange(1 << 30):x}" for i in range(topics_per_round)]
    for t in topics:
        create_topic(
            broker.bootstrap,
            t,
            partitions=1,
            config={"segment.bytes": str(SEGMENT_BYTES), "index.interval.bytes": str(INDEX_INTERVAL_BYTES)},
        )
    written = produce_topics(broker.bootstrap, topics)
    if clean:
        assert broker.stop() == 0
    else:
        broker.kill()
    cases = [
        Case(t, broker.data_dir / f"{t}-0", written[t], rng, clean, rng.choice(kinds)) for t in topics
    ]
    broker.start()
    ends = end_offsets_many(broker.bootstrap, [(t, 0) for t in topics])
    read = read_to_ends(broker.bootstrap, ends, timeout_s=60)
    text = broker.log_text()
    for case in cases:
        case.check(read[(case.topic, 0)], text)
    assert broker.proc.poll() is None, "broker died"
    assert "panicked" not in text
    # The repaired logs take new writes at their (possibly shortened) end.
    p = producer(broker.bootstrap, acks="all")
    for case in cases[:5]:
        p.produce(case.topic, value=b"after-repair", partition=0)
    assert p.flush(30) == 0
    print(f"{len(cases)} cases ({'clean' if clean else 'crash'}, {kinds}): "
          f"{sum(1 for c in cases if c.dropped)} dropped records, e.g. {cases[0].description}")
    # The damage must have bitten: across the round some cases lose data (log damage) or
    # none may (index damage), which a no-op damage routine would not show.
    if kinds == ["log"]:
        assert sum(1 for c in cases if c.dropped) >= len(cases) // 4
    return [c.description for c in cases]


@pytest.mark.parametrize("clean", [False, True], ids=["after-crash", "after-clean-shutdown"])
def test_damaged_segment_tails(broker_factory, clean, long_runs):
    rng = seeded_rng("segment tails")
    for _ in range(long_runs):
        run_round(broker_factory, rng, clean, ["log"], TOPICS_PER_ROUND)


@pytest.mark.parametrize("clean", [False, True], ids=["after-crash", "after-clean-shutdown"])
def test_damaged_indexes(broker_factory, clean, long_runs):
    """Indexes are hints: any damage to them may cost a rebuild, never a record."""
    rng = seeded_rng("indexes")
    for _ in range(long_runs):
        run_round(broker_factory, rng, clean, [".index", ".timeindex"], TOPICS_PER_ROUND)


# --- the metadata file ---------------------------------------------------------------------


def metadata_broker(broker_factory):
    broker = stable_port_broker(broker_factory)
    create_topic(broker.bootstrap, "meta-a", partitions=2)
    create_topic(broker.bootstrap, "meta-b", partitions=1, config={"retention.ms": "123456789"})
    p = producer(broker.bootstrap, acks="all")
    p.produce("meta-a", value=b"kept", partition=1)
    assert p.flush(30) == 0
    assert broker.stop() == 0
    return broker


def start_outcome(broker, timeout_s: float = 15.0):
    """Starts the broker binary on the damaged data dir: ('exited', code, output) if it exits,
    ('running', None, output) once it listens."""
    wait_port_released(broker.port)
    args = [gregor_bin(), "broker", "--data-dir", str(broker.data_dir), "--listen", broker.bootstrap]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return "exited", proc.returncode, proc.stdout.read().decode(errors="replace")
        try:
            with socket.create_connection(("127.0.0.1", broker.port), timeout=0.2):
                proc.send_signal(signal.SIGTERM)
                out, _ = proc.communicate(timeout=15)
                return "running", proc.returncode, out.decode(errors="replace")
        except OSError:
            time.sleep(0.02)
    proc.kill()
    out, _ = proc.communicate()
    raise AssertionError(f"broker neither started nor exited within {timeout_s}s:\n{out.decode(errors='replace')[-3000:]}")


def same_json(a: bytes, b: bytes) -> bool:
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False


def test_damaged_metadata_file_never_panics(broker_factory, long_runs):
    """A damaged metadata file makes the broker exit non-zero with a message naming the file
    (as Kafka refuses to start on a corrupt meta.properties), unless the damage left the content
    unchanged (whitespace); it never panics, hangs, or starts on changed metadata."""
    broker = metadata_broker(broker_factory)
    path = broker.data_dir / "__gregor_metadata.json"
    original = path.read_bytes()
    rng = seeded_rng("metadata file")
    outcomes = {"refused": 0, "started": 0}
    for i in range(60 * long_runs):
        mode = ["truncate", "zero", "flip", "garbage"][i % 4]
        path.write_bytes(original)
        what = damage(path, mode, rng.randrange(len(original)), rng)
        damaged_bytes = path.read_bytes()
        state, code, out = start_outcome(broker)
        assert "panicked" not in out, f"{what}: panic:\n{out[-3000:]}"
        if state == "exited":
            assert code != 0, f"{what}: exited 0 without serving"
            assert "__gregor_metadata.json" in out and "corrupt" in out, f"{what}: unclear error:\n{out[-2000:]}"
            outcomes["refused"] += 1
        else:
            assert code == 0, f"{what}: started, then SIGTERM exit code {code}:\n{out[-2000:]}"
            # Only a damage that changes nothing the file means (whitespace) may be accepted;
            # the broker rewrote the file on shutdown, so compare what was damaged.
            assert same_json(damaged_bytes, original), f"{what}: started on changed metadata"
            outcomes["started"] += 1
    for empty in (b"", b"{}", b"null", b"[]"):
        path.write_bytes(empty)
        state, code, out = start_outcome(broker)
        assert "panicked" not in out
        assert state == "exited" and code != 0 or state == "running", (empty, state, code)
    path.write_bytes(original)
    broker.start()
    got = consume_assigned(broker.bootstrap, "meta-a", [1], 1)
    assert [m.value() for m in got] == [b"kept"]
    assert outcomes["refused"] > 0
    print(outcomes)


def test_metadata_change_that_still_parses_is_refused(broker_factory):
    """The metadata file carries a checksum: a flip that leaves valid JSON and a valid topic
    name must stop the broker rather than silently rename a topic (orphaning its data)."""
    broker = metadata_broker(broker_factory)
    path = broker.data_dir / "__gregor_metadata.json"
    raw = path.read_bytes()
    i = raw.index(b'"meta-b"') + len(b'"meta-')
    damaged = bytearray(raw)
    damaged[i] ^= 0x01  # 'b' -> 'c': still valid JSON, still a valid topic name
    path.write_bytes(bytes(damaged))
    assert json.loads(bytes(damaged))["topics"].get("meta-c") is not None
    state, code, out = start_outcome(broker)
    assert state == "exited" and code != 0, "broker started on a silently changed topic list"
    assert "checksum" in out and "panicked" not in out, out[-2000:]
