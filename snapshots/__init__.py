"""The Kafka-free audit layer: the Parquet archive of every topic, DuckDB snapshots, audits,
lineage, replay.

Imports schemas and learners, never Kafka: ``streams`` feeds it records.
"""
