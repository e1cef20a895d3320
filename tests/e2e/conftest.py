"""Fixtures for the end-to-end suite: a real `gregor broker` process on a free port with a temp
data dir, driven by real third-party clients (kcat, confluent-kafka, kafka-python)."""

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from clients import forget_broker, wait_port_released

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def gregor_bin() -> str:
    explicit = os.environ.get("GREGOR_BIN")
    if explicit:
        return explicit
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("debug", "release"):
        candidate = target / profile / "gregor"
        if candidate.exists():
            return str(candidate)
    raise RuntimeError("gregor binary not found: run `cargo build -p gregor-tools` first or set GREGOR_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"broker did not listen on {port} within {timeout_s}s")


class Broker:
    """One broker process. `restart()` keeps the data dir and port; `kill()` is SIGKILL."""

    def __init__(self, data_dir: Path, log_path: Path, extra_args=None, env=None):
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.extra_args = list(extra_args or [])
        self.env = dict(os.environ, **(env or {}))
        self.proc = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        # A killed broker's listener can outlive it by a few ms (see wait_port_released).
        wait_port_released(self.port)
        args = [gregor_bin(), "broker", "--data-dir", str(self.data_dir), "--listen", self.bootstrap]
        args += self.extra_args
        log = open(self.log_path, "ab")
        log.write(f"\n=== start: {' '.join(args)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        wait_for_port(self.port, self.proc)

    def stop(self, sig=signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"broker did not exit within {timeout_s}s of {sig!r}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def broker_factory(tmp_path, request):
    brokers = []

    def make(extra_args=None, env=None, start=True) -> Broker:
        n = len(brokers)
        b = Broker(tmp_path / f"data{n}", tmp_path / f"broker{n}.log", extra_args, env)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in brokers:
        forget_broker(b.bootstrap)
        b.kill()
        if getattr(request.node, "rep_call_failed", False):
            print(f"--- broker log {b.log_path} ---\n{b.log_text()[-20000:]}")


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call":
        item.rep_call_failed = rep.failed
    return rep


@pytest.fixture
def topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def pytest_addoption(parser):
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="reliability suite: 10x the crash rounds and fault cases (not for CI)",
    )
    parser.addoption(
        "--soak-minutes",
        type=float,
        default=0,
        help="run the soak test for this many minutes (default: its 60 s short form)",
    )
    parser.addoption("--soak-report", default=None, help="write the soak's per-window table (Markdown) here")


@pytest.fixture
def long_runs(request) -> int:
    """Multiplier for crash rounds and fault cases: 1 normally, 10 with --long."""
    return 10 if request.config.getoption("--long") else 1


def pytest_collection_modifyitems(config, items):
    """The long soak outlasts pytest.ini's 300 s timeout: give it its length plus 15 minutes
    (measuring the maximum, start-up, draining the group)."""
    soak_minutes = config.getoption("--soak-minutes")
    if soak_minutes > 0:
        for item in items:
            if "soak" in item.nodeid:
                item.add_marker(pytest.mark.timeout(int(soak_minutes * 60) + 900))
