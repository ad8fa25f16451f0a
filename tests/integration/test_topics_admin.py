"""Deleting a run's topics: only those of its prefix, from the API and from the command line."""

from __future__ import annotations

import uuid

import pytest
from typer.testing import CliRunner

from adaptloop.cli import app
from adaptloop.schemas.topics import ALL_TOPICS
from adaptloop.streams import delete_topics, ensure_topics, wait_for_broker


def _names(bootstrap: str, prefix: str) -> set[str]:
    return {
        name
        for name in wait_for_broker(bootstrap).list_topics(timeout=30).topics
        if name.startswith(prefix)
    }


def test_delete_topics_deletes_those_of_the_prefix_and_no_other(kafka_bootstrap):
    gone, kept = f"del{uuid.uuid4().hex[:8]}.", f"del{uuid.uuid4().hex[:8]}."
    for prefix in (gone, kept):
        ensure_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    deleted = delete_topics(kafka_bootstrap, gone)
    assert sorted(deleted) == sorted(topic.full_name(gone) for topic in ALL_TOPICS)
    assert not _names(kafka_bootstrap, gone)
    assert _names(kafka_bootstrap, kept) == {topic.full_name(kept) for topic in ALL_TOPICS}
    assert delete_topics(kafka_bootstrap, gone) == []  # nothing left: not an error
    with pytest.raises(ValueError, match="prefix is required"):
        delete_topics(kafka_bootstrap, "")


def test_the_command_asks_before_deleting(kafka_bootstrap, monkeypatch):
    monkeypatch.setenv("ADAPTLOOP_BOOTSTRAP", kafka_bootstrap)
    prefix = f"del{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    runner = CliRunner()
    refused = runner.invoke(app, ["topics", "delete", "--prefix", prefix], input="n\n")
    assert refused.exit_code == 1 and len(_names(kafka_bootstrap, prefix)) == len(ALL_TOPICS)
    done = runner.invoke(app, ["topics", "delete", "--prefix", prefix, "--yes"])
    assert done.exit_code == 0, done.output
    assert f"deleted {len(ALL_TOPICS)} topic(s)" in done.output
    assert not _names(kafka_bootstrap, prefix)
    empty = runner.invoke(app, ["topics", "delete", "--prefix", "", "--yes"])
    assert empty.exit_code != 0 and not _names(kafka_bootstrap, prefix)


def test_compacted_topics_roll_segments_hourly_so_compaction_runs(kafka_bootstrap):
    """Kafka compacts closed segments only: with its default (7 days or 1 GB a segment) a reader of
    the latest value per key would read up to a week of history."""
    from confluent_kafka.admin import ConfigResource

    prefix = f"cfg{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    admin = wait_for_broker(kafka_bootstrap)
    resources = [
        ConfigResource(ConfigResource.Type.TOPIC, topic.full_name(prefix)) for topic in ALL_TOPICS
    ]
    configs = {
        resource.name: future.result()
        for resource, future in admin.describe_configs(resources).items()
    }
    compacted = {topic.full_name(prefix) for topic in ALL_TOPICS if topic.compacted}
    assert compacted and all(configs[name]["segment.ms"].value == "3600000" for name in compacted)
    assert all(
        configs[name]["segment.ms"].value == str(7 * 24 * 3600 * 1000)
        for name in configs
        if name not in compacted
    )
    delete_topics(kafka_bootstrap, prefix)


def test_a_compacted_topic_made_before_the_hourly_segments_gets_a_warning_with_the_fix(
    kafka_bootstrap, caplog
):
    from confluent_kafka.admin import NewTopic

    from adaptloop.schemas.topics import MODEL_UPDATES

    prefix = f"old{uuid.uuid4().hex[:8]}."
    admin = wait_for_broker(kafka_bootstrap)
    name = MODEL_UPDATES.full_name(prefix)
    admin.create_topics(
        [
            NewTopic(
                name, num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"}
            )
        ]
    )[name].result()
    ensure_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    warned = [record.getMessage() for record in caplog.records if name in record.getMessage()]
    assert len(warned) == 1 and "every 168 h" in warned[0] and "segment.ms=3600000" in warned[0]
    delete_topics(kafka_bootstrap, prefix)
