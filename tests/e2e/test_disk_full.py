"""Disk full: the data directory sits on a size-capped tmpfs the test mounts itself. Producers
write until the broker answers KAFKA_STORAGE_ERROR; nothing already acknowledged is damaged; the
broker stays up; once space is freed (a filler file the test wrote first is deleted) writes are
accepted again, and everything survives a restart.

Segment preallocation is off by default, so the log grows block by block and the filesystem
fills exactly where the log's next write lands; the filler file makes the freed space something
the test controls."""

import os
import subprocess
import time

import pytest
from clients import (
    create_topic,
    end_offsets,
    free_port_outside_ephemeral_range,
    producer,
    read_partitions,
)
from confluent_kafka import KafkaError, KafkaException

FS_BYTES = 8 << 20
FILLER_BYTES = 2 << 20
VALUE_BYTES = 16 << 10
KAFKA_STORAGE_ERROR = 56


@pytest.fixture
def small_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a size-capped tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def produce_one(p, topic: str, value: bytes):
    """Produces one record and waits for its delivery report: (offset, None) or (None, error)."""
    result = {}

    def on_delivery(err, msg):
        result["err"] = err
        result["offset"] = msg.offset() if err is None else None

    p.produce(topic, value=value, partition=0, on_delivery=on_delivery)
    p.flush(30)
    assert "err" in result, "no delivery report"
    return result["offset"], result["err"]


def test_disk_full_gives_storage_error_and_recovers(broker_factory, small_fs, topic_name):
    data_dir = small_fs / "data"
    filler = small_fs / "filler"
    filler.write_bytes(os.urandom(FILLER_BYTES))
    broker = broker_factory(start=False)
    broker.data_dir = data_dir
    broker.port = free_port_outside_ephemeral_range()
    broker.start()
    try:
        create_topic(broker.bootstrap, topic_name)
        # No client retries: the test wants the broker's answer, not librdkafka's patience.
        p = producer(broker.bootstrap, acks="all", retries=0, message_timeout_ms=20000, linger_ms=0)
        acked = {}
        errors = []
        for seq in range(2 * FS_BYTES // VALUE_BYTES):
            value = f"{seq:06d}:".encode() + os.urandom(VALUE_BYTES)
            offset, err = produce_one(p, topic_name, value)
            if err is not None:
                errors.append(err)
                if len(errors) >= 3:
                    break
                continue
            acked[offset] = value
        assert errors, "the filesystem never filled up"
        codes = {e.code() for e in errors}
        assert codes == {KAFKA_STORAGE_ERROR}, f"expected KAFKA_STORAGE_ERROR (56), got {errors}"
        assert len(acked) > (FS_BYTES - FILLER_BYTES) // VALUE_BYTES // 2, f"only {len(acked)} records fit"
        assert broker.proc.poll() is None, "broker died on a full disk"

        # Metadata changes on a full disk fail cleanly too.
        try:
            create_topic(broker.bootstrap, topic_name + "-x")
        except KafkaException:
            pass
        assert broker.proc.poll() is None, "broker died creating a topic on a full disk"

        def check_acked():
            end = end_offsets(broker.bootstrap, topic_name, [0])[0]
            got = dict(read_partitions(broker.bootstrap, topic_name, {0: end})[0])
            damaged = [o for o, v in acked.items() if got.get(o) != v]
            assert not damaged, f"acknowledged records damaged or lost: {damaged[:10]}"
            # Failed writes left nothing behind: offsets stay dense.
            assert sorted(got) == list(range(end))
            return end

        check_acked()

        filler.unlink()
        deadline = time.monotonic() + 30
        while True:
            offset, err = produce_one(p, topic_name, b"after-free")
            if err is None:
                acked[offset] = b"after-free"
                break
            assert err.code() == KAFKA_STORAGE_ERROR and time.monotonic() < deadline, err
            time.sleep(0.2)
        for i in range(20):
            offset, err = produce_one(p, topic_name, f"more-{i}".encode())
            assert err is None, err
            acked[offset] = f"more-{i}".encode()
        check_acked()

        assert broker.stop() == 0
        broker.start()
        end = check_acked()
        assert end == max(acked) + 1
    finally:
        broker.kill()
