"""Kafka plumbing: topic catalog, producer, consumer runtime with retry/DLQ."""
