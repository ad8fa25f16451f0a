"""A round trip through a real broker: every event type out through the SDK and back, bad records dead-lettered."""

from __future__ import annotations

import time
import uuid

from rich.console import Console
from rich.table import Table

from adaptloop.localkafka import LocalKafka
from adaptloop.samples import MALFORMED_RECORDS, SAMPLERS, sample_events
from adaptloop.settings import Settings
from schemas.topics import ALL_TOPICS, DEAD_LETTERS, OUTCOMES, topic_for
from streams import DeadLetters, EventConsumer, EventProducer, ensure_topics


def run_smoke(settings: Settings, events: int, console: Console) -> dict[str, int]:
    """Send ``events`` of each type plus one bad record per kind, read them back; return counts per topic."""
    if settings.bootstrap is None:
        status = LocalKafka.from_settings(settings).up()
        console.print(f"local Kafka at [bold]{status.bootstrap}[/] ({'already running' if status.already_running else 'started'})")
    bootstrap = settings.bootstrap_address
    prefix = f"{settings.topic_prefix}smoke-{uuid.uuid4().hex[:8]}."
    ensure_topics(bootstrap, prefix=prefix, partitions=settings.partitions)
    started = time.perf_counter()
    expected: dict[str, int] = {}
    with EventProducer(bootstrap, topic_prefix=prefix) as producer:
        for event_type in SAMPLERS:
            for event in sample_events(event_type, events):
                producer.send(event)
            expected[topic_for(event_type).name] = events
        for value in MALFORMED_RECORDS.values():
            producer.send_bytes(OUTCOMES.full_name(prefix), b"bad", value)
    expected[DEAD_LETTERS.name] += len(MALFORMED_RECORDS)
    seen = dict.fromkeys(expected, 0)
    dead = DeadLetters(EventProducer(bootstrap, topic_prefix=prefix), consumer="smoke")
    with EventConsumer(bootstrap, f"smoke-{uuid.uuid4().hex}", ALL_TOPICS, dead_letters=dead, prefix=prefix) as consumer:
        deadline = time.monotonic() + 60
        while seen[DEAD_LETTERS.name] < expected[DEAD_LETTERS.name] or any(
            seen[name] < count for name, count in expected.items()
        ):
            if time.monotonic() > deadline:
                break
            for record in consumer.poll(5000, 0.5):
                seen[record.topic.name] += 1
            consumer.commit()
    table = Table("topic", "sent", "read back", title=f"round trip through {bootstrap} in {time.perf_counter() - started:.1f}s")
    for name, count in expected.items():
        table.add_row(name, str(count), str(seen[name]), style=None if seen[name] == count else "red")
    console.print(table)
    return seen
