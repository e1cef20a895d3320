"""Consumer groups with real clients (confluent-kafka / librdkafka and kafka-python): balanced
assignment, rebalance on close and on a crashed consumer, independent groups, committed offsets
surviving broker restarts and SIGKILL, assignor strategies, static membership, and the
`gregor groups` CLI."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from confluent_kafka.admin import NewTopic

from clients import admin, produce_all, producer
from conftest import gregor_bin

SESSION_MS = 6000
# A short initial rebalance delay keeps every test's first rebalance fast.
GROUP_ENV = {"GREGOR_GROUP_INITIAL_REBALANCE_DELAY_MS": "100"}
T = 30


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    # Keep the AdminClient referenced until the future resolves: a collected client
    # fails its pending futures with _DESTROY.
    client = admin(bootstrap)
    futures = client.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)], request_timeout=T)
    futures[name].result(timeout=T)


@pytest.fixture
def gbroker(broker_factory):
    return broker_factory(env=GROUP_ENV)


def group_name() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def group_consumer(bootstrap: str, group: str, **extra) -> Consumer:
    conf = {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": 500,
    }
    conf.update(extra)
    return Consumer(conf)


def assigned(c) -> set:
    return {(tp.topic, tp.partition) for tp in c.assignment()}


def wait_balanced(consumers, topic: str, partitions: int, timeout_s: float = T, poll=None) -> list:
    """Polls every consumer until each has a non-empty assignment, the assignments are
    disjoint and together cover the topic. Returns the assignments."""
    poll = poll or (lambda c: c.poll(0.05))
    want = {(topic, p) for p in range(partitions)}
    deadline = time.monotonic() + timeout_s
    sets = []
    while time.monotonic() < deadline:
        for c in consumers:
            poll(c)
        sets = [assigned(c) for c in consumers]
        union = set().union(*sets)
        if all(sets) and sum(len(s) for s in sets) == len(union) and union == want:
            return sets
    raise AssertionError(f"group did not converge within {timeout_s}s: {sets}")


def consume_n(c, n: int, timeout_s: float = T) -> list:
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        assert not m.error(), m.error()
        out.append(m)
    assert len(out) >= n, f"got {len(out)} of {n} messages"
    return out


def fill(bootstrap: str, topic: str, n: int, partitions: int) -> None:
    msgs = [(None, f"m{i}".encode(), None, None) for i in range(n)]
    p = producer(bootstrap, acks="all")
    for part in range(partitions):
        produce_all(p, topic, msgs[part::partitions], partition=part)


def close_all(consumers) -> None:
    for c in consumers:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass


def test_three_consumers_share_six_partitions_and_close_moves_partitions_at_once(gbroker, topic_name):
    create_topic(gbroker.bootstrap, topic_name, partitions=6)
    g = group_name()
    cs = [group_consumer(gbroker.bootstrap, g) for _ in range(3)]
    try:
        for c in cs:
            c.subscribe([topic_name])
        sets = wait_balanced(cs, topic_name, 6)
        assert sorted(len(s) for s in sets) == [2, 2, 2]
        leaving = cs.pop()
        start = time.monotonic()
        leaving.close()
        sets = wait_balanced(cs, topic_name, 6)
        elapsed = time.monotonic() - start
        assert sorted(len(s) for s in sets) == [3, 3]
        # A clean close sends LeaveGroup: no waiting for the session timeout.
        assert elapsed < SESSION_MS / 1000, f"rebalance after close took {elapsed:.1f}s"
    finally:
        close_all(cs)


KILLED_CONSUMER = textwrap.dedent(
    """
    import sys
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": sys.argv[1], "broker.address.family": "v4",
                  "group.id": sys.argv[2], "session.timeout.ms": %d,
                  "heartbeat.interval.ms": 500, "enable.auto.commit": False})
    c.subscribe([sys.argv[3]])
    reported = 0
    while True:
        c.poll(0.1)
        n = len(c.assignment())
        if n != reported:
            print("assigned", n, flush=True)
            reported = n
    """
    % SESSION_MS
)


def test_killed_consumer_partitions_move_after_session_timeout(gbroker, topic_name):
    create_topic(gbroker.bootstrap, topic_name, partitions=6)
    g = group_name()
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CONSUMER, gbroker.bootstrap, g, topic_name],
        stdout=subprocess.PIPE,
        text=True,
    )
    survivor = group_consumer(gbroker.bootstrap, g)
    try:
        survivor.subscribe([topic_name])
        deadline = time.monotonic() + T
        while time.monotonic() < deadline and len(assigned(survivor)) != 3:
            survivor.poll(0.1)
        assert len(assigned(survivor)) == 3, assigned(survivor)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_at = time.monotonic()
        sets = wait_balanced([survivor], topic_name, 6, timeout_s=SESSION_MS / 1000 + 15)
        elapsed = time.monotonic() - killed_at
        assert len(sets[0]) == 6
        # No LeaveGroup was sent: only the session timeout can have moved the partitions.
        assert elapsed >= SESSION_MS / 1000 - 1.5, f"moved after {elapsed:.1f}s"
    finally:
        if child.poll() is None:
            child.kill()
        survivor.close()


def test_two_groups_each_receive_every_message(gbroker, topic_name):
    from kafka import KafkaConsumer

    create_topic(gbroker.bootstrap, topic_name, partitions=3)
    fill(gbroker.bootstrap, topic_name, 300, 3)
    a = group_consumer(gbroker.bootstrap, group_name())
    a.subscribe([topic_name])
    got_a = {m.value() for m in consume_n(a, 300)}
    a.close()
    b = KafkaConsumer(
        topic_name,
        bootstrap_servers=gbroker.bootstrap,
        group_id=group_name(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=500,
    )
    got_b = set()
    deadline = time.monotonic() + T
    while len(got_b) < 300 and time.monotonic() < deadline:
        for records in b.poll(timeout_ms=200).values():
            got_b.update(r.value for r in records)
    b.close()
    want = {f"m{i}".encode() for i in range(300)}
    assert got_a == want
    assert got_b == want


def start_after_kill(b, timeout_s: float = 20.0) -> None:
    """Restarts a SIGKILLed broker. The kernel may release the dead process's listening
    socket a moment after it exits (io_uring tears down asynchronously): the new broker then
    fails to bind, while the port still accepts connections for a moment, so `start()` can
    even return with the new process dying. Retry until a new process stays up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            b.start()
            time.sleep(0.5)
            if b.proc.poll() is None:
                return
        except RuntimeError:
            pass
        if time.monotonic() >= deadline:
            raise AssertionError("broker did not restart after SIGKILL")
        time.sleep(0.25)


def first_offsets(msgs) -> dict:
    first = {}
    for m in msgs:
        first.setdefault(m.partition(), m.offset())
    return first


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "sigkill"])
def test_committed_offsets_survive_broker_restart(gbroker, topic_name, crash):
    create_topic(gbroker.bootstrap, topic_name, partitions=3)
    fill(gbroker.bootstrap, topic_name, 600, 3)
    g = group_name()
    c = group_consumer(gbroker.bootstrap, g)
    c.subscribe([topic_name])
    seen = consume_n(c, 250)
    c.commit(asynchronous=False)
    # A partition the consumer has not read yet has no committed offset (-1001): it will be
    # read from the beginning (auto.offset.reset=earliest), i.e. from 0.
    committed = {
        tp.partition: max(tp.offset, 0)
        for tp in c.committed([TopicPartition(topic_name, p) for p in range(3)], timeout=T)
    }
    # Read past the commit without committing: this window may be read again.
    seen += consume_n(c, 50)
    c.close()
    assert sum(committed.values()) >= 250

    if crash:
        gbroker.kill()
        start_after_kill(gbroker)
    else:
        gbroker.restart()

    c = group_consumer(gbroker.bootstrap, g)
    c.subscribe([topic_name])
    remaining = 600 - sum(committed.values())
    resumed = consume_n(c, remaining, timeout_s=45)
    c.close()
    # Resumes exactly at the committed offsets: nothing before them comes back.
    for p, first in first_offsets(resumed).items():
        assert first == committed[p], f"partition {p} resumed at {first}, committed {committed[p]}"
    values = {m.value() for m in seen} | {m.value() for m in resumed}
    assert values == {f"m{i}".encode() for i in range(600)}, "messages lost"


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_assignment_strategies_converge(gbroker, topic_name, strategy):
    create_topic(gbroker.bootstrap, topic_name, partitions=6)
    g = group_name()
    cs = [group_consumer(gbroker.bootstrap, g, **{"partition.assignment.strategy": strategy}) for _ in range(3)]
    try:
        for c in cs[:2]:
            c.subscribe([topic_name])
        wait_balanced(cs[:2], topic_name, 6)
        cs[2].subscribe([topic_name])
        sets = wait_balanced(cs, topic_name, 6)
        assert sorted(len(s) for s in sets) == [2, 2, 2]
        cs.pop(0).close()
        sets = wait_balanced(cs, topic_name, 6)
        assert sorted(len(s) for s in sets) == [3, 3]
    finally:
        close_all(cs)


def test_kafka_python_range_group_converges_and_commits(gbroker, topic_name):
    import threading

    from kafka import KafkaConsumer
    from kafka.coordinator.assignors.range import RangePartitionAssignor

    create_topic(gbroker.bootstrap, topic_name, partitions=6)
    fill(gbroker.bootstrap, topic_name, 60, 6)
    g = group_name()
    got = []
    assignments = {}
    commit_now = threading.Event()
    stop = threading.Event()
    errors = []

    def run(i):
        # One thread per consumer, as applications run them: KafkaConsumer is not
        # thread-safe, and polling several from one thread with tiny timeouts stalls
        # their rebalances.
        try:
            c = KafkaConsumer(
                topic_name,
                bootstrap_servers=gbroker.bootstrap,
                group_id=g,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                session_timeout_ms=SESSION_MS,
                heartbeat_interval_ms=500,
                partition_assignment_strategy=[RangePartitionAssignor],
            )
            committed = False
            while not stop.is_set():
                for records in c.poll(timeout_ms=300).values():
                    got.extend(r.value for r in records)
                assignments[i] = {(tp.topic, tp.partition) for tp in c.assignment()}
                if commit_now.is_set() and not committed:
                    c.commit()
                    committed = True
                    assignments[f"committed-{i}"] = True
            c.close()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    try:
        want = {(topic_name, p) for p in range(6)}
        deadline = time.monotonic() + T
        sets = []
        while time.monotonic() < deadline and not errors:
            sets = [assignments.get(i, set()) for i in range(3)]
            if all(sets) and sum(len(x) for x in sets) == 6 and set().union(*sets) == want and len(got) >= 60:
                break
            time.sleep(0.1)
        assert not errors, errors
        assert sorted(len(x) for x in sets) == [2, 2, 2], sets
        assert sorted(got) == sorted(f"m{i}".encode() for i in range(60))
        commit_now.set()
        deadline = time.monotonic() + T
        while time.monotonic() < deadline and not all(assignments.get(f"committed-{i}") for i in range(3)):
            assert not errors, errors
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=T)
    assert not errors, errors
    # Every partition's offset is committed at its end (10 messages each).
    c = group_consumer(gbroker.bootstrap, g)
    committed = c.committed([TopicPartition(topic_name, p) for p in range(6)], timeout=T)
    c.close()
    assert [tp.offset for tp in committed] == [10] * 6


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_static_member_restart_causes_no_rebalance(gbroker, topic_name, strategy):
    create_topic(gbroker.bootstrap, topic_name, partitions=4)
    g = group_name()
    rebalances = []

    def on_assign(_c, parts):
        rebalances.append(("assign", len(parts)))

    def on_revoke(_c, parts):
        rebalances.append(("revoke", len(parts)))

    steady = group_consumer(gbroker.bootstrap, g, **{"group.instance.id": "steady", "partition.assignment.strategy": strategy})
    steady.subscribe([topic_name], on_assign=on_assign, on_revoke=on_revoke)
    restarting = group_consumer(gbroker.bootstrap, g, **{"group.instance.id": "restarting", "partition.assignment.strategy": strategy})
    restarting.subscribe([topic_name])
    try:
        before = wait_balanced([steady, restarting], topic_name, 4)
        # Let callbacks of the initial rebalance(s) settle.
        settle = time.monotonic() + 2
        while time.monotonic() < settle:
            steady.poll(0.05)
            restarting.poll(0.05)
        events_before = list(rebalances)
        # A static member does not send LeaveGroup on close; it comes back within the
        # session timeout with the same group.instance.id.
        restarting.close()
        restarting = group_consumer(gbroker.bootstrap, g, **{"group.instance.id": "restarting", "partition.assignment.strategy": strategy})
        restarting.subscribe([topic_name])
        deadline = time.monotonic() + T
        while time.monotonic() < deadline and not assigned(restarting):
            restarting.poll(0.05)
            steady.poll(0.05)
        assert assigned(restarting) == before[1], "the restarted member gets its old partitions"
        quiet = time.monotonic() + 3
        while time.monotonic() < quiet:
            steady.poll(0.05)
            restarting.poll(0.05)
        assert rebalances == events_before, f"the steady member saw a rebalance: {rebalances[len(events_before):]}"
        assert assigned(steady) == before[0]
    finally:
        close_all([steady, restarting])


def gregor(*args, timeout_s: float = T) -> str:
    r = subprocess.run([gregor_bin(), *args], capture_output=True, text=True, timeout=timeout_s)
    assert r.returncode == 0, f"gregor {' '.join(args)} failed: {r.stderr}"
    return r.stdout


def partition_rows(out: str) -> dict:
    """Parses the TOPIC/PARTITION table of `gregor groups describe` or `reset-offsets`."""
    rows = {}
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.split()[:2] == ["TOPIC", "PARTITION"])
    header = lines[start].split()
    for line in lines[start + 1 :]:
        cols = line.split()
        if len(cols) < 4 or not cols[1].isdigit():
            break
        rows[(cols[0], int(cols[1]))] = dict(zip(header, cols))
    return rows


def test_cli_describe_reports_lag_and_reset_offsets(gbroker, topic_name):
    create_topic(gbroker.bootstrap, topic_name, partitions=2)
    fill(gbroker.bootstrap, topic_name, 40, 2)  # 20 per partition
    g = group_name()
    c = group_consumer(gbroker.bootstrap, g, **{"client.id": "lag-checker"})
    c.subscribe([topic_name])
    consume_n(c, 40)
    c.commit(offsets=[TopicPartition(topic_name, 0, 20), TopicPartition(topic_name, 1, 12)], asynchronous=False)
    live = gregor("groups", "describe", g, "--bootstrap", gbroker.bootstrap)
    assert "STATE Stable" in live and "lag-checker" in live
    c.close()
    produce_all(producer(gbroker.bootstrap), topic_name, [(None, b"more", None, None)] * 5, partition=0)

    out = gregor("groups", "describe", g, "--bootstrap", gbroker.bootstrap)
    assert "STATE Empty" in out
    rows = partition_rows(out)
    assert rows[(topic_name, 0)]["CURRENT-OFFSET"] == "20"
    assert rows[(topic_name, 0)]["LOG-END-OFFSET"] == "25"
    assert rows[(topic_name, 0)]["LAG"] == "5"
    assert rows[(topic_name, 1)]["LAG"] == "8"

    listing = gregor("groups", "list", "--bootstrap", gbroker.bootstrap)
    assert any(l.split()[:2] == [g, "Empty"] for l in listing.splitlines())
    assert g not in gregor("groups", "list", "--state", "Stable", "--bootstrap", gbroker.bootstrap)

    dry = gregor("groups", "reset-offsets", g, "--topic", topic_name, "--to-earliest", "--bootstrap", gbroker.bootstrap)
    assert "dry run" in dry
    assert partition_rows(dry)[(topic_name, 1)]["NEW-OFFSET"] == "0"
    assert partition_rows(gregor("groups", "describe", g, "--bootstrap", gbroker.bootstrap))[(topic_name, 1)]["CURRENT-OFFSET"] == "12"
    gregor("groups", "reset-offsets", g, "--topic", f"{topic_name}:1", "--to-offset", "3", "--execute", "--bootstrap", gbroker.bootstrap)
    rows = partition_rows(gregor("groups", "describe", g, "--bootstrap", gbroker.bootstrap))
    assert rows[(topic_name, 1)]["CURRENT-OFFSET"] == "3"
    assert rows[(topic_name, 0)]["CURRENT-OFFSET"] == "20"

    gregor("groups", "delete", g, "--bootstrap", gbroker.bootstrap)
    assert g not in gregor("groups", "list", "--bootstrap", gbroker.bootstrap)


def test_reset_offsets_refused_while_group_is_active(gbroker, topic_name):
    create_topic(gbroker.bootstrap, topic_name, partitions=1)
    g = group_name()
    c = group_consumer(gbroker.bootstrap, g)
    c.subscribe([topic_name])
    try:
        wait_balanced([c], topic_name, 1)
        r = subprocess.run(
            [gregor_bin(), "groups", "reset-offsets", g, "--topic", topic_name, "--to-latest", "--execute", "--bootstrap", gbroker.bootstrap],
            capture_output=True,
            text=True,
            timeout=T,
        )
        assert r.returncode != 0
        assert "empty" in r.stderr
        d = subprocess.run(
            [gregor_bin(), "groups", "delete", g, "--bootstrap", gbroker.bootstrap], capture_output=True, text=True, timeout=T
        )
        assert d.returncode != 0 and "NON_EMPTY_GROUP" in d.stderr
    finally:
        c.close()


def test_offsets_topic_is_internal_compacted_and_replayed(broker_factory, topic_name):
    env = dict(GROUP_ENV, GREGOR_OFFSETS_TOPIC_NUM_PARTITIONS="2", GREGOR_OFFSETS_TOPIC_COMPACTION_RECORDS="20")
    b = broker_factory(env=env)
    create_topic(b.bootstrap, topic_name, partitions=1)
    g = group_name()
    c = group_consumer(b.bootstrap, g)
    c.subscribe([topic_name])
    try:
        wait_balanced([c], topic_name, 1)
        # 60 commits, each a record in __consumer_offsets: compaction must kick in.
        for i in range(1, 61):
            c.commit(offsets=[TopicPartition(topic_name, 0, i)], asynchronous=False)
        deadline = time.monotonic() + T
        lows = []
        while time.monotonic() < deadline:
            lows = [c.get_watermark_offsets(TopicPartition("__consumer_offsets", p), timeout=T)[0] for p in range(2)]
            if max(lows) > 0:
                break
            time.sleep(0.2)
        assert max(lows) > 0, f"__consumer_offsets was never trimmed: low watermarks {lows}"
    finally:
        c.close()
    # Internal: hidden from a plain topic listing, shown with --internal, with 2 partitions.
    assert "__consumer_offsets" not in gregor("topics", "list", "--bootstrap", b.bootstrap)
    assert "__consumer_offsets" in gregor("topics", "list", "--internal", "--bootstrap", b.bootstrap)
    described = gregor("topics", "describe", "__consumer_offsets", "--bootstrap", b.bootstrap)
    assert "PartitionCount: 2" in described
    # Deleting or repartitioning it would move every group's offsets: refused.
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewPartitions

    a = admin(b.bootstrap)
    for fut in (
        a.delete_topics(["__consumer_offsets"], request_timeout=T)["__consumer_offsets"],
        a.create_partitions([NewPartitions("__consumer_offsets", 4)], request_timeout=T)["__consumer_offsets"],
    ):
        with pytest.raises(KafkaException) as refused:
            fut.result(timeout=T)
        assert refused.value.args[0].code() == KafkaError.INVALID_REQUEST
    assert "PartitionCount: 2" in gregor("topics", "describe", "__consumer_offsets", "--bootstrap", b.bootstrap)
    b.kill()
    start_after_kill(b)
    c = group_consumer(b.bootstrap, g)
    try:
        got = c.committed([TopicPartition(topic_name, 0)], timeout=T)
        assert got[0].offset == 60, "the snapshot plus the records after it replay to the last commit"
    finally:
        c.close()


def test_admin_apis_of_both_clients(gbroker, topic_name):
    """Group admin as the clients' admin APIs drive it: OffsetCommit as an admin
    (generation -1), OffsetFetch for several groups at once (v8), ListGroups with a state
    filter, DescribeGroups, OffsetDelete, batched LeaveGroup by group.instance.id, and
    DeleteGroups."""
    from confluent_kafka import ConsumerGroupState
    from kafka import KafkaAdminClient
    from kafka.admin import MemberToRemove
    from kafka.structs import OffsetAndMetadata
    from kafka.structs import TopicPartition as KTP

    b = gbroker.bootstrap
    create_topic(b, topic_name, partitions=2)
    ga, gb, gs = group_name(), group_name(), group_name()
    ka = KafkaAdminClient(bootstrap_servers=b)
    try:
        ka.alter_group_offsets(
            ga, {KTP(topic_name, 0): OffsetAndMetadata(5, "meta", -1), KTP(topic_name, 1): OffsetAndMetadata(7, "", -1)}
        )
        ka.alter_group_offsets(gb, {KTP(topic_name, 0): OffsetAndMetadata(1, "", -1)})
        both = ka.list_group_offsets({ga: None, gb: None})
        assert both[ga][KTP(topic_name, 0)].offset == 5 and both[ga][KTP(topic_name, 0)].metadata == "meta"
        assert both[ga][KTP(topic_name, 1)].offset == 7
        assert both[gb][KTP(topic_name, 0)].offset == 1
        assert ka.delete_group_offsets(ga, [KTP(topic_name, 1)])[KTP(topic_name, 1)].__name__ == "NoError"
        assert KTP(topic_name, 1) not in ka.list_group_offsets({ga: None})[ga]

        # A live static member: listed as Stable, described with its instance id, removed by
        # a batched LeaveGroup naming only its group.instance.id.
        c = group_consumer(b, gs, **{"group.instance.id": "inst-1", "client.id": "admin-test"})
        c.subscribe([topic_name])
        try:
            wait_balanced([c], topic_name, 2)
            confluent = admin(b)
            stable = confluent.list_consumer_groups(states={ConsumerGroupState.STABLE}, request_timeout=T).result()
            assert [g.group_id for g in stable.valid] == [gs]
            empty = confluent.list_consumer_groups(states={ConsumerGroupState.EMPTY}, request_timeout=T).result()
            assert {g.group_id for g in empty.valid} == {ga, gb}
            desc = confluent.describe_consumer_groups([gs], request_timeout=T)[gs].result()
            assert desc.state == ConsumerGroupState.STABLE
            assert [m.group_instance_id for m in desc.members] == ["inst-1"]
            assert desc.members[0].client_id == "admin-test"
            assert {tp.partition for tp in desc.members[0].assignment.topic_partitions} == {0, 1}
            removed = ka.remove_group_members(gs, [MemberToRemove(group_instance_id="inst-1")])
            assert [e.__name__ for e in removed.values()] == ["NoError"]
            assert ka.describe_groups([gs])[gs]["members"] == []
        finally:
            c.close()
        deleted = ka.delete_groups([ga, gb, "never-existed"])
        assert deleted == {ga: "OK", gb: "OK", "never-existed": "GroupIdNotFoundError"}
        assert {g["group_id"] for g in ka.list_groups()} <= {gs}
    finally:
        ka.close()


def test_offsets_follow_topic_lifecycle(gbroker, topic_name):
    """Commits to partitions that do not exist are refused; a deleted topic's committed
    offsets go away, as on Kafka."""
    from kafka import KafkaAdminClient
    from kafka.structs import OffsetAndMetadata
    from kafka.structs import TopicPartition as KTP

    b = gbroker.bootstrap
    create_topic(b, topic_name, partitions=1)
    g = group_name()
    ka = KafkaAdminClient(bootstrap_servers=b)
    try:
        res = ka.alter_group_offsets(
            g,
            {
                KTP(topic_name, 0): OffsetAndMetadata(4, "", -1),
                KTP(topic_name, 9): OffsetAndMetadata(4, "", -1),
                KTP("no-such-topic", 0): OffsetAndMetadata(4, "", -1),
            },
        )
        assert res[KTP(topic_name, 0)].__name__ == "NoError"
        assert res[KTP(topic_name, 9)].__name__ == "UnknownTopicOrPartitionError"
        assert res[KTP("no-such-topic", 0)].__name__ == "UnknownTopicOrPartitionError"
        assert set(ka.list_group_offsets({g: None})[g]) == {KTP(topic_name, 0)}
        client = admin(b)
        client.delete_topics([topic_name], request_timeout=T)[topic_name].result(timeout=T)
        deadline = time.monotonic() + 20
        left = None
        while time.monotonic() < deadline:
            left = ka.list_group_offsets({g: None})[g]
            if not left:
                break
            time.sleep(0.5)
        assert not left, f"offsets of a deleted topic remain: {left}"
    finally:
        ka.close()
