"""Topic administration through confluent-kafka's and kafka-python's admin clients."""

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic

from clients import admin, create_topic

T = 30


def create_error(bootstrap, topic: NewTopic, validate_only=False):
    fut = admin(bootstrap).create_topics([topic], validate_only=validate_only, request_timeout=T)[topic.topic]
    try:
        fut.result(timeout=T)
        return None
    except KafkaException as e:
        return e.args[0].code()


def test_create_describe_delete(broker, topic_name):
    a = admin(broker.bootstrap)
    create_topic(broker.bootstrap, topic_name, partitions=4, config={"retention.ms": "3600000"})
    md = a.list_topics(timeout=T)
    assert sorted(md.topics[topic_name].partitions) == [0, 1, 2, 3]

    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    configs = a.describe_configs([res])[res].result(timeout=T)
    assert configs["retention.ms"].value == "3600000"
    assert not configs["retention.ms"].is_default
    assert configs["cleanup.policy"].value == "delete"
    assert configs["segment.bytes"].is_default

    a.delete_topics([topic_name], request_timeout=T)[topic_name].result(timeout=T)
    md = a.list_topics(timeout=T)
    assert topic_name not in md.topics


def test_create_errors(broker, topic_name):
    b = broker.bootstrap
    create_topic(b, topic_name)
    assert create_error(b, NewTopic(topic_name, 1, 1)) == KafkaError.TOPIC_ALREADY_EXISTS
    assert create_error(b, NewTopic("bad/name", 1, 1)) == KafkaError.TOPIC_EXCEPTION
    assert create_error(b, NewTopic("x" * 250, 1, 1)) == KafkaError.TOPIC_EXCEPTION
    assert create_error(b, NewTopic(topic_name + "-z", 0, 1)) == KafkaError.INVALID_PARTITIONS
    assert create_error(b, NewTopic(topic_name + "-r", 1, 3)) == KafkaError.INVALID_REPLICATION_FACTOR
    assert (
        create_error(b, NewTopic(topic_name + "-c", 1, 1, config={"retention.ms": "soon"}))
        == KafkaError.INVALID_CONFIG
    )
    assert (
        create_error(b, NewTopic(topic_name + "-u", 1, 1, config={"no.such.config": "1"}))
        == KafkaError.INVALID_CONFIG
    )
    # segment.bytes is a 32-bit INT in Kafka: 8 GiB is refused, not clamped.
    assert (
        create_error(b, NewTopic(topic_name + "-i", 1, 1, config={"segment.bytes": str(8 << 30)}))
        == KafkaError.INVALID_CONFIG
    )
    md = admin(b).list_topics(timeout=T)
    for suffix in ("-z", "-r", "-c", "-u", "-i"):
        assert topic_name + suffix not in md.topics


def test_validate_only_creates_nothing(broker, topic_name):
    assert create_error(broker.bootstrap, NewTopic(topic_name, 3, 1), validate_only=True) is None
    md = admin(broker.bootstrap).list_topics(timeout=T)
    assert topic_name not in md.topics


def test_delete_unknown_topic(broker, topic_name):
    fut = admin(broker.bootstrap).delete_topics([topic_name], request_timeout=T)[topic_name]
    with pytest.raises(KafkaException) as e:
        fut.result(timeout=T)
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_create_partitions_increase_only(broker, topic_name):
    a = admin(broker.bootstrap)
    create_topic(broker.bootstrap, topic_name, partitions=2)
    a.create_partitions([NewPartitions(topic_name, 5)], request_timeout=T)[topic_name].result(timeout=T)
    assert sorted(a.list_topics(timeout=T).topics[topic_name].partitions) == [0, 1, 2, 3, 4]
    fut = a.create_partitions([NewPartitions(topic_name, 3)], request_timeout=T)[topic_name]
    with pytest.raises(KafkaException) as e:
        fut.result(timeout=T)
    assert e.value.args[0].code() == KafkaError.INVALID_PARTITIONS


def test_incremental_alter_configs_live(broker, topic_name):
    a = admin(broker.bootstrap)
    create_topic(broker.bootstrap, topic_name)
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic_name,
        incremental_configs=[
            ConfigEntry("retention.ms", "120000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("max.message.bytes", "2000", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    a.incremental_alter_configs([res])[res].result(timeout=T)
    desc = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    configs = a.describe_configs([desc])[desc].result(timeout=T)
    assert configs["retention.ms"].value == "120000"
    assert configs["max.message.bytes"].value == "2000"

    # The new max.message.bytes takes effect at once: a 5 KB record is refused.
    from clients import producer

    p = producer(broker.bootstrap, acks="all", **{"message.max.bytes": 100000})
    errors = []
    p.produce(topic_name, value=b"x" * 5000, on_delivery=lambda err, msg: errors.append(err))
    p.flush(T)
    assert errors and errors[0] is not None
    assert errors[0].code() in (KafkaError.MSG_SIZE_TOO_LARGE,)

    # Deleting the override restores the default.
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic_name,
        incremental_configs=[ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)],
    )
    a.incremental_alter_configs([res])[res].result(timeout=T)
    configs = a.describe_configs([desc])[desc].result(timeout=T)
    assert configs["retention.ms"].is_default
    assert configs["retention.ms"].value == "604800000"


def test_topics_and_configs_survive_restart(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, partitions=3, config={"retention.bytes": "1048576"})
    broker.restart()
    a = admin(broker.bootstrap)
    assert sorted(a.list_topics(timeout=T).topics[topic_name].partitions) == [0, 1, 2]
    desc = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    assert a.describe_configs([desc])[desc].result(timeout=T)["retention.bytes"].value == "1048576"


def test_kafka_python_admin(broker, topic_name):
    from kafka.admin import KafkaAdminClient
    from kafka.admin import NewTopic as KPNewTopic

    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        a.create_topics([KPNewTopic(topic_name, 2, 1)])
        assert topic_name in a.list_topics()
        a.delete_topics([topic_name])
        assert topic_name not in a.list_topics()
    finally:
        a.close()
