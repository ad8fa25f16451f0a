"""adaptloop's application layer: the CLI, settings, the local Kafka launcher and the demo."""

__version__ = "0.1.0"
