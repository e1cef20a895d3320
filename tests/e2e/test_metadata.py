"""Metadata and version negotiation with every client."""

import json
import socket
import struct

from clients import admin, api_versions_v0, create_topic, kcat, raw_request, recv_frame


def test_kcat_lists_broker_and_topics(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, partitions=3)
    out = kcat("-b", broker.bootstrap, "-L", "-J")
    assert out.returncode == 0, out.stderr.decode()
    md = json.loads(out.stdout)
    assert [b["name"] for b in md["brokers"]] == [broker.bootstrap]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic_name in topics
    parts = sorted(p["partition"] for p in topics[topic_name]["partitions"])
    assert parts == [0, 1, 2]
    for p in topics[topic_name]["partitions"]:
        assert p["leader"] == md["brokers"][0]["id"]
        assert [r["id"] for r in p["replicas"]] == [p["leader"]]


def test_confluent_and_kafka_python_see_same_metadata(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, partitions=2)
    md = admin(broker.bootstrap).list_topics(timeout=10)
    assert len(md.brokers) == 1
    assert sorted(md.topics[topic_name].partitions) == [0, 1]

    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    try:
        assert c.partitions_for_topic(topic_name) == {0, 1}
        assert topic_name in c.topics()
    finally:
        c.close()


def test_metadata_auto_creates_topic_by_default(broker, topic_name):
    # kcat producing to an unknown topic triggers auto-creation (num.partitions default 1).
    out = kcat("-b", broker.bootstrap, "-P", "-t", topic_name, input_bytes=b"hello\n")
    assert out.returncode == 0, out.stderr.decode()
    md = admin(broker.bootstrap).list_topics(timeout=10)
    assert topic_name in md.topics
    assert len(md.topics[topic_name].partitions) == 1


def test_auto_create_can_be_disabled(broker_factory, topic_name):
    b = broker_factory(env={"GREGOR_AUTO_CREATE_TOPICS_ENABLE": "false"})
    md = admin(b.bootstrap).list_topics(topic=topic_name, timeout=10)
    t = md.topics.get(topic_name)
    assert t is None or t.error is not None, "topic was created although auto-creation is off"


def test_api_versions_lists_only_real_apis(broker):
    resp = api_versions_v0(broker.port)
    assert resp["error"] == 0
    apis = resp["apis"]
    for key in (0, 1, 2, 3, 18, 19, 20):  # Produce Fetch ListOffsets Metadata ApiVersions CreateTopics DeleteTopics
        assert key in apis, f"api {key} missing"
    assert apis[18][1] >= 3
    # Not implemented: transactions (InitProducerId=22 may come later, EndTxn=26, WriteTxnMarkers=27).
    assert 26 not in apis and 27 not in apis


def test_api_versions_unsupported_version_falls_back_to_v0(broker):
    # KIP-511: an ApiVersions request at a version the broker does not know gets a v0 response
    # with UNSUPPORTED_VERSION (35) and the supported ranges, not a closed connection.
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
        s.sendall(raw_request(18, 99, 42))
        frame = recv_frame(s)
    corr, err, n = struct.unpack(">ihi", frame[:10])
    assert corr == 42
    assert err == 35
    keys = {struct.unpack(">h", frame[10 + 6 * i : 12 + 6 * i])[0] for i in range(n)}
    assert 18 in keys and 0 in keys
