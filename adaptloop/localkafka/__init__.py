"""The local Kafka broker: Maven Central jars, KRaft, managed by ``adaptloop kafka
up|down|status``."""

from adaptloop.localkafka.launcher import BrokerStatus, LocalKafka

__all__ = ["BrokerStatus", "LocalKafka"]
