"""The topic catalog (``esquadrao/topics.yaml``) as typed objects.

One file declares every topic, its key, partitions and retention, and every consumer
group with its retry chain and dead-letter topic. The local stack, the tests and the
Kubernetes manifests all read it through this module, so names never drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(value: str | int) -> int:
    """Parse ``500ms``, ``5s``, ``1m``, ``2h``, ``7d`` (or a bare number of ms)."""
    if isinstance(value, int):
        return value
    match = _DURATION.match(value.strip())
    if match is None:
        raise ValueError(f"invalid duration {value!r}: use e.g. 500ms, 5s, 1m, 2h, 7d")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: name, partitioning and retention."""

    name: str
    partitions: int
    replication_factor: int
    retention_ms: int
    key: str = ""
    schema: str = ""
    description: str = ""


@dataclass(frozen=True)
class ConsumerGroupSpec:
    """A consumer group, the topics it reads and its retry chain.

    Retry topics are per group (not per source topic) so that one group's retries are
    never redelivered to another group; the source topic travels in a header.
    """

    name: str
    topics: tuple[str, ...]
    retry_delays_ms: tuple[int, ...]

    @property
    def retry_topics(self) -> tuple[str, ...]:
        return tuple(f"{self.name}.retry.{n}" for n in range(1, len(self.retry_delays_ms) + 1))

    @property
    def dlq_topic(self) -> str:
        return f"{self.name}.dlq"


@dataclass(frozen=True)
class Catalog:
    """Every topic and consumer group of the suite."""

    topics: tuple[TopicSpec, ...]
    consumer_groups: tuple[ConsumerGroupSpec, ...] = field(default_factory=tuple)
    default_partitions: int = 6
    default_replication_factor: int = 3
    default_retention_ms: int = 7 * 86_400_000
    dlq_retention_ms: int = 30 * 86_400_000

    def topic(self, name: str) -> TopicSpec:
        for spec in self.topics:
            if spec.name == name:
                return spec
        raise KeyError(f"topic {name!r} is not in the catalog")

    def group(self, name: str) -> ConsumerGroupSpec:
        for spec in self.consumer_groups:
            if spec.name == name:
                return spec
        raise KeyError(f"consumer group {name!r} is not in the catalog")

    def all_topics(self) -> list[TopicSpec]:
        """Domain topics plus every group's retry and dead-letter topics."""
        specs = list(self.topics)
        for group in self.consumer_groups:
            partitions = max(self.topic(t).partitions for t in group.topics)
            for retry in group.retry_topics:
                specs.append(
                    TopicSpec(
                        name=retry,
                        partitions=partitions,
                        replication_factor=self.default_replication_factor,
                        retention_ms=self.default_retention_ms,
                        description=f"retries of consumer group {group.name}",
                    )
                )
            specs.append(
                TopicSpec(
                    name=group.dlq_topic,
                    partitions=partitions,
                    replication_factor=self.default_replication_factor,
                    retention_ms=self.dlq_retention_ms,
                    description=f"dead letters of consumer group {group.name}",
                )
            )
        return specs

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Catalog:
        defaults = data.get("defaults", {})
        partitions = int(defaults.get("partitions", 6))
        replication = int(defaults.get("replication_factor", 3))
        retention = parse_duration_ms(defaults.get("retention", "7d"))
        dlq_retention = parse_duration_ms(defaults.get("dlq_retention", "30d"))
        topics = tuple(
            TopicSpec(
                name=t["name"],
                partitions=int(t.get("partitions", partitions)),
                replication_factor=int(t.get("replication_factor", replication)),
                retention_ms=parse_duration_ms(t.get("retention", retention)),
                key=t.get("key", ""),
                schema=t.get("schema", ""),
                description=t.get("description", ""),
            )
            for t in data.get("topics", [])
        )
        groups = tuple(
            ConsumerGroupSpec(
                name=g["name"],
                topics=tuple(g["topics"]),
                retry_delays_ms=tuple(parse_duration_ms(d) for d in g.get("retry_delays", [])),
            )
            for g in data.get("consumer_groups", [])
        )
        catalog = cls(topics, groups, partitions, replication, retention, dlq_retention)
        for group in groups:
            for topic in group.topics:
                catalog.topic(topic)  # raises on a group reading an undeclared topic
        return catalog

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        """Load the catalog shipped with the contracts, or the file at ``path``."""
        if path is None:
            text = resources.files("esquadrao").joinpath("topics.yaml").read_text()
        else:
            text = path.read_text()
        return cls.from_dict(yaml.safe_load(text))
