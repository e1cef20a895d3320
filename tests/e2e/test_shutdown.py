"""Graceful shutdown: SIGTERM while producers and a long-polling consumer are active. The broker
stops accepting, finishes in-flight requests, flushes and writes each log's clean-shutdown
marker, and exits 0 within seconds; after a restart every acknowledged record is there with no
duplicate (no acknowledgement was lost, so no client retry could duplicate anything) and the
start needs no recovery scan."""

import signal
import socket
import threading
import time

import pytest
from clients import (
    create_topic,
    end_offsets,
    forget_broker,
    free_port_outside_ephemeral_range,
    read_partitions,
    stable_port_broker,
)
from confluent_kafka import Consumer, TopicPartition
from test_crash import PARTITIONS, ConfluentWriter, KafkaPythonWriter, check_log, assert_no_in_life_duplicates

EXIT_WITHIN_S = 10.0
CLEAN_MARKER = ".clean_shutdown"


def start_section(log_text: str) -> str:
    """The broker log written since the most recent start."""
    return log_text[log_text.rindex("=== start:") :]


def long_polling_consumer(bootstrap: str, topic: str, stop: threading.Event):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "group.id": "shutdown-reader",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 500,
            "log_level": 0,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    while not stop.is_set():
        c.poll(0.1)
    c.close()


def test_sigterm_under_load_is_clean_and_loses_nothing(broker_factory, topic_name):
    broker = stable_port_broker(broker_factory)
    create_topic(broker.bootstrap, topic_name, partitions=PARTITIONS)
    writers = [
        ConfluentWriter("cf0", broker.bootstrap, topic_name, "all"),
        KafkaPythonWriter("kp0", broker.bootstrap, topic_name, "all"),
    ]
    for w in writers:
        w.start()
    stop_reader = threading.Event()
    reader = threading.Thread(target=long_polling_consumer, args=(broker.bootstrap, topic_name, stop_reader))
    reader.start()
    idle = socket.create_connection(("127.0.0.1", broker.port))  # an idle client must not delay exit
    try:
        time.sleep(1.5)
        acked_before = sum(len(w.acked) for w in writers)
        assert acked_before > 100, "producers did not get going"

        started = time.monotonic()
        broker.proc.send_signal(signal.SIGTERM)
        code = broker.proc.wait(timeout=30)
        took_s = time.monotonic() - started
        assert code == 0, f"exit code {code}"
        assert took_s < EXIT_WITHIN_S, f"shutdown took {took_s:.1f}s"
        text = start_section(broker.log_text())
        assert "signal received" in text and "stopped" in text
        assert "panicked" not in text and "close failed" not in text

        # Every log was closed cleanly: flushed, indexes sealed, marker written last.
        for p in range(PARTITIONS):
            pdir = broker.data_dir / f"{topic_name}-{p}"
            assert (pdir / CLEAN_MARKER).exists(), f"partition {p}: no clean-shutdown marker"

        # The log ends at shutdown, read on a private port no producer knows, then a clean stop
        # again: a copy on both sides of this boundary is an acknowledgement lost at shutdown.
        real_port = broker.port
        broker.port = free_port_outside_ephemeral_range()
        broker.start()
        boundary = end_offsets(broker.bootstrap, topic_name, range(PARTITIONS))
        forget_broker(broker.bootstrap)
        assert broker.stop() == 0
        broker.port = real_port

        # The restarted broker must serve everything acknowledged, and the producers' queued
        # messages go through afterwards.
        broker.start()
        restart_log = start_section(broker.log_text())
        # The next start needs no recovery: nothing to truncate, no index to rebuild.
        assert "truncating invalid tail" not in restart_log, restart_log[-3000:]
        assert "rebuilding" not in restart_log, restart_log[-3000:]
        for w in writers:
            assert w.finish(60) == 0, f"{w.name}: messages not delivered after restart"
        assert all(w.error is None for w in writers), [w.error for w in writers]
        acked = [a for w in writers for a in w.acked]
        assert not [f for w in writers for f in w.failed], "delivery failures"
        log = read_partitions(broker.bootstrap, topic_name, end_offsets(broker.bootstrap, topic_name, range(PARTITIONS)))
        # No crash boundaries: a duplicate would mean an acknowledgement was lost on shutdown.
        dups = []
        duplicates = check_log({w.name: w for w in writers}, log, acked, [], True, dups)
        assert duplicates == len(dups)
        assert sum(len(v) for v in log.values()) == len(acked) + duplicates
        lost_at_shutdown = [d for d in dups if d[2] < boundary[d[0]] <= d[3]]
        # Every acknowledged record is there (checked above); a duplicate across the signal
        # means a batch appended before it never reached its client, which retried it.
        assert not lost_at_shutdown, (
            f"an appended Produce went unanswered at SIGTERM and was retried: {lost_at_shutdown[:3]} "
            f"(shutdown boundary {boundary})"
        )
        assert_no_in_life_duplicates(dups)
    finally:
        idle.close()
        stop_reader.set()
        reader.join(10)
        for w in writers:
            w.stop.set()


def test_sigterm_idle_broker_exits_promptly(broker_factory, topic_name):
    """With nothing in flight, SIGTERM and SIGINT stop the broker at once, markers written."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        broker = broker_factory()
        create_topic(broker.bootstrap, topic_name, partitions=2)
        conns = [socket.create_connection(("127.0.0.1", broker.port)) for _ in range(20)]
        started = time.monotonic()
        assert broker.stop(sig, timeout_s=30) == 0
        assert time.monotonic() - started < 5.0
        for p in range(2):
            assert (broker.data_dir / f"{topic_name}-{p}" / CLEAN_MARKER).exists()
        for c in conns:
            c.close()
