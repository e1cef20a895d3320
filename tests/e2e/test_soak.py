"""Soak: half the maximum produce throughput for a long time, with a consumer group reading, and
the broker's RSS and produce p99 must stay flat.

Short form (CI): 60 s in 10 s windows. Long form: `pytest e2e/test_soak.py --soak-minutes 30`
(60 s windows); `--soak-report FILE` also writes the per-window table as Markdown (the 30-minute
results in docs/RELIABILITY.md come from it).

Steps: two confluent-kafka consumers (own processes, tests/e2e/soak_consumer.py) join one
group; `gregor bench produce` runs flat out for a while to find this setup's maximum (with the
consumers reading, as they will during the soak); then it runs open loop at half of that, one
bench run per window. Retention is on, so segments roll and are deleted throughout and the
disk stays bounded. In the long form the topic's file.delete.delay.ms is 1 s, so deletions run
from the first window on, including while the maximum is measured. The short form postpones
them past its end: on a volume mounted with online discard (this one), freeing segments at the
write rate stalls appends for seconds (docs/RELIABILITY.md), which a 10 s window cannot absorb.

What a broken broker gets wrong here: memory that grows with the records or segments handled
(caches, indexes, per-request leaks), latency that creeps up as the log grows or ages, a
consumer group that rebalances because heartbeats starve under load, and records lost or
duplicated on the way to the group. Limits are loose (shared 2-core machine): they catch
growth and drift, not a slow run."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clients import broker_rss_kib, create_topic
from conftest import gregor_bin

PARTITIONS = 4
RECORD_BYTES = 1024
RETENTION_BYTES = 256 * 1024 * 1024
SEGMENT_BYTES = 64 * 1024 * 1024
CONSUMERS = 2
# Long form: delete retired segments after 1 s; short form: after the run.
LONG_FILE_DELETE_DELAY_MS = 1000
SHORT_FILE_DELETE_DELAY_MS = 600_000
HERE = Path(__file__).resolve().parent


def pytest_soak_minutes(request) -> float:
    return float(request.config.getoption("--soak-minutes") or 0)


class Consumers:
    """The group's members, each its own process writing a JSON report about once a second."""

    def __init__(self, bootstrap: str, topic: str, group: str, tmp_path: Path):
        self.reports = [tmp_path / f"consumer{i}.json" for i in range(CONSUMERS)]
        self.procs = [
            subprocess.Popen(
                [sys.executable, str(HERE / "soak_consumer.py"), bootstrap, topic, group, str(path)],
                stdout=subprocess.DEVNULL,
                stderr=open(tmp_path / f"consumer{i}.log", "wb"),
            )
            for i, path in enumerate(self.reports)
        ]

    def read(self) -> list:
        out = []
        for path in self.reports:
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                out.append(None)
        return out

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def wait_assigned(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reports = self.read()
            assigned = [p for r in reports if r for p in r["assigned"]]
            if sorted(assigned) == list(range(PARTITIONS)):
                return
            assert self.alive(), "a consumer process exited"
            time.sleep(0.2)
        raise AssertionError(f"the group did not assign all partitions: {self.read()}")

    def consumed(self) -> int:
        return sum(r["consumed"] for r in self.read() if r)

    def stop(self) -> list:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        return self.read()


class RssSampler(threading.Thread):
    """The broker's RSS once a second; `take_max()` returns and resets the window's maximum."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.window_max_kib = 0
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_flag.wait(1.0):
            try:
                rss = broker_rss_kib(self.pid)
            except (OSError, AssertionError):
                return
            with self.lock:
                self.window_max_kib = max(self.window_max_kib, rss)

    def take_max(self) -> int:
        with self.lock:
            value, self.window_max_kib = self.window_max_kib, broker_rss_kib(self.pid)
        return max(value, broker_rss_kib(self.pid))


def bench_produce(bootstrap: str, topic: str, duration_s: float, rate=None) -> dict:
    args = [
        gregor_bin(),
        "bench",
        "produce",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--size",
        str(RECORD_BYTES),
        "--duration-secs",
        str(duration_s),
        "--json",
        "--no-progress",
    ]
    if rate is not None:
        args += ["--rate", str(int(rate))]
    out = subprocess.run(args, capture_output=True, timeout=duration_s + 120)
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-4000:]
    return json.loads(out.stdout)


def markdown(rows: list, max_rate: float, rate: float, window_s: float) -> str:
    lines = [
        f"Maximum (flat out, consumers reading): {max_rate:,.0f} rec/s of {RECORD_BYTES} B; "
        f"soak rate {rate:,.0f} rec/s; {window_s:.0f} s windows.",
        "",
        "| window | produced rec/s | produce p99 ms | produce p99.9 ms | group e2e p99 ms | group lag rec | broker RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        e2e = "-" if r["e2e_p99_ms"] is None else f"{r['e2e_p99_ms']:.1f}"
        lines.append(
            f"| {r['window']} | {r['rate']:,.0f} | {r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {e2e} | "
            f"{r['lag']:,} | {r['rss_kib'] / 1024:.0f} |"
        )
    return "\n".join(lines) + "\n"


def test_soak_half_max_throughput_with_a_group(broker_factory, topic_name, tmp_path, request):
    soak_minutes = pytest_soak_minutes(request)
    total_s = soak_minutes * 60 if soak_minutes > 0 else 60.0
    window_s = 60.0 if soak_minutes > 0 else 10.0
    windows = max(3, int(total_s // window_s))
    delete_delay_ms = LONG_FILE_DELETE_DELAY_MS if soak_minutes > 0 else SHORT_FILE_DELETE_DELAY_MS

    broker = broker_factory(extra_args=["--set", "log.retention.check.interval.ms=2000"])

    def remove_data():
        # Gigabytes of (retired) segments: not left in the temp dir after the test.
        broker.kill()
        shutil.rmtree(broker.data_dir, ignore_errors=True)

    request.addfinalizer(remove_data)
    create_topic(
        broker.bootstrap,
        topic_name,
        partitions=PARTITIONS,
        config={
            "retention.bytes": str(RETENTION_BYTES),
            "segment.bytes": str(SEGMENT_BYTES),
            "file.delete.delay.ms": str(delete_delay_ms),
        },
    )
    consumers = Consumers(broker.bootstrap, topic_name, "soak-group", tmp_path)
    rss = RssSampler(broker.proc.pid)
    rss.start()
    try:
        consumers.wait_assigned()
        flat_out = bench_produce(broker.bootstrap, topic_name, 10.0)
        assert flat_out["errors"] == 0, flat_out
        produced = flat_out["records"]
        max_rate = flat_out["records_per_sec"]
        rate = max_rate / 2
        rss.take_max()

        rows = []
        for window in range(1, windows + 1):
            run = bench_produce(broker.bootstrap, topic_name, window_s, rate=rate)
            produced += run["records"]
            group = [r for r in consumers.read() if r]
            e2e = [r["e2e_p99_ms"] for r in group if r["e2e_p99_ms"] is not None]
            rows.append(
                {
                    "window": window,
                    "rate": run["records_per_sec"],
                    "errors": run["errors"],
                    "p99_ms": run["latency_ms"]["p99"],
                    "p999_ms": run["latency_ms"]["p999"],
                    "e2e_p99_ms": max(e2e) if e2e else None,
                    "lag": produced - sum(r["consumed"] for r in group),
                    "rss_kib": rss.take_max(),
                }
            )
            assert consumers.alive(), "a consumer process exited"

        # Every record reaches the group exactly once (no rebalance, so no redelivery).
        deadline = time.monotonic() + 120
        while consumers.consumed() < produced and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        rss.stop_flag.set()
        final = consumers.stop()

    table = markdown(rows, max_rate, rate, window_s)
    print("\n" + table)
    report_path = request.config.getoption("--soak-report")
    if report_path:
        Path(report_path).write_text(table)

    assert all(r is not None for r in final), final
    assert sum(r["consumed"] for r in final) == produced, (final, produced)
    assert all(r["errors"] == 0 for r in final), final
    assert all(r["assignments"] == 1 for r in final), f"the group rebalanced under load: {final}"
    assert all(r["errors"] == 0 for r in rows), rows
    # The broker keeps up with half its maximum in every window (open loop: a broker falling
    # behind shows as a lower achieved rate).
    slow = [r for r in rows if r["rate"] < 0.8 * rate]
    assert not slow, f"windows below 80% of the target rate {rate:.0f}: {slow}"

    third = max(1, len(rows) // 3)
    first, last = rows[:third], rows[-third:]
    # RSS: the first window has filled the caches; after it, no growth beyond noise.
    rss_first = max(r["rss_kib"] for r in first)
    rss_last = max(r["rss_kib"] for r in last)
    assert rss_last <= rss_first * 1.25 + 32 * 1024, f"broker RSS grew: {table}"
    # p99: the end of the soak is not much slower than its start.
    p99_first = statistics.median(r["p99_ms"] for r in first)
    p99_last = statistics.median(r["p99_ms"] for r in last)
    assert p99_last <= 3 * p99_first + 10, f"produce p99 drifted up: {table}"
    # Retention kept the disk bounded while gigabytes went through: live segments within
    # retention, and retired ones (`*.deleted`, kept file.delete.delay.ms) within what some
    # seconds of writing retire.
    files = [f for f in broker.data_dir.rglob("*") if f.is_file()]
    live_bytes = sum(f.stat().st_size for f in files if not f.name.endswith(".deleted"))
    retired_bytes = sum(f.stat().st_size for f in files if f.name.endswith(".deleted"))
    live_bound = PARTITIONS * (RETENTION_BYTES + 2 * SEGMENT_BYTES) + 64 * 1024 * 1024
    retired_bound = 15 * rate * RECORD_BYTES + PARTITIONS * 2 * SEGMENT_BYTES
    assert live_bytes <= live_bound, f"{live_bytes} B of live segments after {produced * RECORD_BYTES} B written"
    if delete_delay_ms == LONG_FILE_DELETE_DELAY_MS:
        assert retired_bytes <= retired_bound, f"{retired_bytes} B of retired segments still on disk"
