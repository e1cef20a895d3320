"""One member of the soak test's consumer group, run as its own process (confluent-kafka).

Usage: soak_consumer.py BOOTSTRAP TOPIC GROUP REPORT_PATH

Consumes until SIGTERM and, about once a second, rewrites REPORT_PATH with a JSON object:
records consumed, bytes consumed, records whose value does not carry the expected length,
consume errors, assignment changes (rebalances), and the end-to-end latency p99 (ms) of the
records consumed since the previous report, measured from each record's CreateTime.
Its own process so that the Python work per record does not share the test's GIL."""

import json
import os
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaError

REPORT_INTERVAL_S = 1.0
BATCH = 5000


def main() -> None:
    bootstrap, topic, group, report_path = sys.argv[1:5]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    assignments = []

    def on_assign(consumer, partitions):
        assignments.append(sorted(p.partition for p in partitions))

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "broker.address.family": "v4",
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "fetch.max.bytes": 8 * 1024 * 1024,
            "queued.max.messages.kbytes": 65536,
        }
    )
    c.subscribe([topic], on_assign=on_assign)
    consumed = consumed_bytes = errors = 0
    latencies_ms = []
    next_report = time.monotonic() + REPORT_INTERVAL_S

    def report(final: bool) -> None:
        latencies_ms.sort()
        p99 = latencies_ms[int(len(latencies_ms) * 0.99)] if latencies_ms else None
        latencies_ms.clear()
        body = {
            "consumed": consumed,
            "consumed_bytes": consumed_bytes,
            "errors": errors,
            "assignments": len(assignments),
            "assigned": assignments[-1] if assignments else [],
            "e2e_p99_ms": p99,
            "final": final,
        }
        tmp = report_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(body, f)
        os.replace(tmp, report_path)

    while not stop:
        for msg in c.consume(num_messages=BATCH, timeout=0.2):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    errors += 1
                continue
            consumed += 1
            value = msg.value()
            consumed_bytes += len(value) if value else 0
            # Sample the latency of one record in 16: enough for a p99, cheap in Python.
            if consumed % 16 == 0:
                _, ts_ms = msg.timestamp()
                latencies_ms.append(time.time() * 1000.0 - ts_ms)
        now = time.monotonic()
        if now >= next_report:
            report(False)
            next_report = now + REPORT_INTERVAL_S
    c.close()
    report(True)


if __name__ == "__main__":
    main()
