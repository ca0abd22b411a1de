"""A sticky assignor for co-partitioned topics.

A service that acts on the keys of its partitions (the whatsapp worker drives the sessions
of the partitions it owns) pays for every partition that moves: its sessions disconnect
from one worker and reconnect on another. The range assignor keeps co-partitioned topics
together (partition ``p`` of each goes to the same member) but lays members out in the
order of their ids, which are new at every restart: a member joining can shift every
range. aiokafka's sticky assignor keeps partitions where they were but balances each
topic-partition on its own, which splits co-partitioned topics.

:class:`CoPartitionedStickyAssignor` does both: the unit of assignment is a partition
*number* (partition ``p`` of every subscribed topic that has one), and each member keeps
the numbers it owned before, as far as a balanced share allows. Members say what they own
in their join metadata (``user_data``), so the leader needs no other state. When a member
joins, only the numbers it takes move; when one leaves, only its numbers move.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

log = logging.getLogger(__name__)


def sticky_shares(
    numbers: Iterable[int], previous: Mapping[str, Iterable[int]]
) -> dict[str, list[int]]:
    """Partition numbers per member: balanced (shares differ by at most one), each member
    keeping as many of its ``previous`` numbers as its share allows. ``previous`` has an
    entry per member (empty for a new one); a number two members claim (one of them was
    presumed dead) is kept by the one that comes first in id order."""
    members = sorted(previous)
    if not members:
        return {}
    available = sorted(set(numbers))
    base, extra = divmod(len(available), len(members))
    valid = set(available)
    kept: dict[str, list[int]] = {}
    taken: set[int] = set()
    for member in members:
        mine = sorted((set(previous[member]) & valid) - taken)
        kept[member] = mine
        taken.update(mine)
    # The larger shares go to the members that held the most, so fewer numbers move.
    by_holding = sorted(members, key=lambda member: (-len(kept[member]), member))
    quota = {member: base + (1 if rank < extra else 0) for rank, member in enumerate(by_holding)}
    spare: list[int] = [number for number in available if number not in taken]
    for member in members:
        surplus = kept[member][quota[member] :]
        kept[member] = kept[member][: quota[member]]
        spare.extend(surplus)
    spare.sort()
    for member in by_holding:
        need = quota[member] - len(kept[member])
        kept[member].extend(spare[:need])
        del spare[:need]
        kept[member].sort()
    return kept


class CoPartitionedStickyAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """See the module docstring. aiokafka calls assignors through their class, so a member
    remembers what it owns on a class of its own: pass ``for_member()`` to each consumer."""

    name = "copartitioned-sticky"
    version = 0
    #: The partition numbers this member was last assigned.
    owned: frozenset[int] = frozenset()

    @classmethod
    def for_member(cls) -> type[CoPartitionedStickyAssignor]:
        """A class with this member's own memory of what it owns."""
        return type(cls.__name__, (cls,), {"owned": frozenset()})

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        user_data = json.dumps(sorted(cls.owned)).encode()
        return ConsumerProtocolMemberMetadata(cls.version, sorted(topics), user_data)

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        cls.owned = frozenset(
            partition for _, partitions in assignment.assignment for partition in partitions
        )

    @classmethod
    def on_generation_assignment(cls, generation: int) -> None:
        """Nothing to do: what a member owns is all it says."""

    @classmethod
    def assign(
        cls,
        cluster: ClusterMetadata,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        partitions_of: dict[str, set[int]] = {}
        for metadata in members.values():
            for topic in metadata.subscription:
                if topic in partitions_of:
                    continue
                partitions = cluster.partitions_for_topic(topic)
                if partitions is None:
                    log.warning("no partition metadata for topic %s", topic)
                    continue
                partitions_of[topic] = set(partitions)
        numbers = set().union(*partitions_of.values()) if partitions_of else set()
        shares = sticky_shares(
            numbers, {member: _owned(metadata) for member, metadata in members.items()}
        )
        assignment: dict[str, ConsumerProtocolMemberAssignment] = {}
        for member, metadata in members.items():
            mine = set(shares.get(member, ()))
            topics = [
                (topic, sorted(mine & partitions_of[topic]))
                for topic in sorted(set(metadata.subscription) & partitions_of.keys())
            ]
            assignment[member] = ConsumerProtocolMemberAssignment(
                cls.version, [(topic, parts) for topic, parts in topics if parts], b""
            )
        return assignment


def _owned(metadata: ConsumerProtocolMemberMetadata) -> list[int]:
    """The partition numbers a member says it owns; nothing when it says nothing readable
    (a new member, or another version)."""
    try:
        owned = json.loads(metadata.user_data or b"[]")
    except ValueError:
        return []
    if not isinstance(owned, list):
        return []
    return [number for number in owned if isinstance(number, int)]
