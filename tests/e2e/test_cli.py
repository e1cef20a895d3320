"""The gregor command's client side against the real broker, cross-checked with kcat."""

import json
import subprocess

import pytest

from clients import create_topic, kcat
from conftest import gregor_bin

T = 60


def gregor(*args, input_bytes=None, timeout_s=T):
    return subprocess.run([gregor_bin(), *args], input=input_bytes, capture_output=True, timeout=timeout_s)


def test_topics_commands(broker, topic_name):
    b = ("--bootstrap", broker.bootstrap)
    r = gregor("topics", "create", topic_name, "--partitions", "3", "--config", "retention.ms=60000", *b)
    assert r.returncode == 0, r.stderr.decode()
    r = gregor("topics", "create", topic_name, "--partitions", "3", *b)
    assert r.returncode != 0 and b"TOPIC_ALREADY_EXISTS" in r.stdout + r.stderr
    r = gregor("topics", "list", *b)
    assert r.returncode == 0 and topic_name in r.stdout.decode().split()
    r = gregor("topics", "alter", topic_name, "--partitions", "5", *b)
    assert r.returncode == 0, r.stderr.decode()
    r = gregor("topics", "describe", topic_name, *b)
    out = r.stdout.decode()
    assert r.returncode == 0 and "retention.ms" in out and "60000" in out
    md = json.loads(kcat("-b", broker.bootstrap, "-L", "-J", "-t", topic_name).stdout)
    assert len(md["topics"][0]["partitions"]) == 5
    r = gregor("topics", "delete", topic_name, *b)
    assert r.returncode == 0, r.stderr.decode()
    r = gregor("topics", "delete", topic_name, *b)
    assert r.returncode != 0 and b"UNKNOWN_TOPIC_OR_PARTITION" in r.stdout + r.stderr


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_gregor_produce_kcat_consume(broker, topic_name, codec):
    create_topic(broker.bootstrap, topic_name, partitions=2)
    lines = b"".join(b"k%d=value %d\n" % (i, i) for i in range(200))
    r = gregor(
        "produce", "--bootstrap", broker.bootstrap, "--topic", topic_name, "--key-separator", "=",
        "--header", "src=cli", "--compression", codec, input_bytes=lines,
    )
    assert r.returncode == 0, r.stderr.decode()
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic_name, "-o", "beginning", "-e", "-J")
    assert out.returncode == 0, out.stderr.decode()
    recs = [json.loads(x) for x in out.stdout.decode().splitlines() if x.strip()]
    assert sorted((r["key"], r["payload"]) for r in recs) == sorted((f"k{i}", f"value {i}") for i in range(200))
    assert all(r["headers"] == ["src", "cli"] for r in recs)
    # Same key, same partition, in order.
    for part in (0, 1):
        seq = [int(r["payload"].split()[1]) for r in recs if r["partition"] == part]
        assert seq == sorted(seq)


def test_kcat_produce_gregor_consume(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, partitions=1)
    lines = b"".join(b"key%d:v%d\n" % (i, i) for i in range(100))
    assert kcat("-b", broker.bootstrap, "-P", "-t", topic_name, "-K", ":", input_bytes=lines).returncode == 0
    r = gregor(
        "consume", "--bootstrap", broker.bootstrap, "--topic", topic_name, "--from-beginning",
        "--count", "100", "--print-key", "--print-offset", "--separator", "|",
    )
    assert r.returncode == 0, r.stderr.decode()
    rows = r.stdout.decode().splitlines()
    assert rows == [f"0:{i}|key{i}|v{i}" for i in range(100)]


def test_bench_e2e_verify_passes_against_gregor(broker, topic_name):
    r = gregor(
        "bench", "e2e", "--bootstrap", broker.bootstrap, "--topic", topic_name, "--partitions", "3",
        "--messages", "20000", "--size", "200", "--rate", "5000", "--verify", "--json", "--no-progress",
        timeout_s=120,
    )
    assert r.returncode == 0, (r.stdout + r.stderr).decode()[-3000:]
    report = json.loads(r.stdout)
    assert report["records"] == 20000
    assert report["errors"] == 0
    assert 0 <= report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]


def test_bench_produce_counts_records(broker, topic_name):
    r = gregor(
        "bench", "produce", "--bootstrap", broker.bootstrap, "--topic", topic_name, "--partitions", "2",
        "--messages", "50000", "--size", "100", "--acks", "1", "--json", "--no-progress", timeout_s=120,
    )
    assert r.returncode == 0, (r.stdout + r.stderr).decode()[-3000:]
    report = json.loads(r.stdout)
    assert report["records"] == 50000 and report["errors"] == 0 and report["records_per_sec"] > 0
    # The request's share of each record's latency cannot exceed the whole.
    total_ms, request_ms = report["latency_ms"], report["request_latency_ms"]
    assert 0 < request_ms["p50"] <= total_ms["max"] and request_ms["max"] <= total_ms["max"] + 0.01
    # The broker holds exactly what the tool says it sent.
    total = 0
    md = json.loads(kcat("-b", broker.bootstrap, "-L", "-J", "-t", topic_name).stdout)
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "count", "broker.address.family": "v4"})
    try:
        for p in md["topics"][0]["partitions"]:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic_name, p["partition"]), timeout=30)
            total += hi - lo
    finally:
        c.close()
    assert total == 50000
