"""The co-partitioned sticky assignor: partition numbers stay together across topics, the
shares are balanced, and a member joining or leaving moves only what it must."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from esquadrao_common.kafka.assignors import CoPartitionedStickyAssignor, sticky_shares
from hypothesis import given
from hypothesis import strategies as st


@dataclass
class Cluster:
    """The part of aiokafka's ClusterMetadata an assignor reads."""

    partitions: dict[str, int]

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.partitions.get(topic)
        return set(range(count)) if count is not None else None


def check_balanced(shares: dict[str, list[int]], numbers: set[int]) -> None:
    assigned = [number for share in shares.values() for number in share]
    assert sorted(assigned) == sorted(numbers), "every number exactly once"
    sizes = [len(share) for share in shares.values()]
    assert max(sizes) - min(sizes) <= 1


@given(count=st.integers(0, 64), members=st.integers(1, 9))
def test_fresh_shares_are_balanced_and_cover_every_number(count: int, members: int) -> None:
    numbers = set(range(count))
    shares = sticky_shares(numbers, {f"m{i}": [] for i in range(members)})
    check_balanced(shares, numbers)


@given(count=st.integers(1, 64), members=st.integers(1, 8), data=st.data())
def test_a_member_joining_moves_only_what_it_takes(
    count: int, members: int, data: st.DataObject
) -> None:
    numbers = set(range(count))
    before = sticky_shares(numbers, {f"m{i}": [] for i in range(members)})
    newcomer = data.draw(st.sampled_from(["a-new", "z-new", "m0-new"]))

    after = sticky_shares(numbers, {**before, newcomer: []})

    check_balanced(after, numbers)
    moved = {n for member, share in before.items() for n in share if n not in after[member]}
    assert moved == set(after[newcomer])


@given(count=st.integers(1, 64), members=st.integers(2, 8), data=st.data())
def test_a_member_leaving_moves_only_its_own_numbers(
    count: int, members: int, data: st.DataObject
) -> None:
    numbers = set(range(count))
    before = sticky_shares(numbers, {f"m{i}": [] for i in range(members)})
    leaver = data.draw(st.sampled_from(sorted(before)))
    survivors = {member: share for member, share in before.items() if member != leaver}

    after = sticky_shares(numbers, survivors)

    check_balanced(after, numbers)
    for member, share in survivors.items():
        assert set(share) <= set(after[member]), "survivors keep everything they had"


def test_a_number_claimed_twice_goes_to_one_member_and_stale_numbers_are_dropped() -> None:
    shares = sticky_shares({0, 1, 2, 3}, {"a": [0, 1, 9], "b": [1, 2], "c": []})

    check_balanced(shares, {0, 1, 2, 3})
    assert shares["a"][:2] == [0, 1]
    assert 2 in shares["b"]


def test_the_assignment_keeps_co_partitioned_topics_together_and_survives_a_rejoin() -> None:
    cluster = Cluster({"interactive": 12, "bulk": 12, "retry": 12})
    topics = ["bulk", "interactive", "retry"]
    first = CoPartitionedStickyAssignor.for_member()
    second = CoPartitionedStickyAssignor.for_member()

    alone = first.assign(cluster, {"w1": first.metadata(topics)})  # type: ignore[arg-type]
    first.on_assignment(alone["w1"])
    assert first.owned == frozenset(range(12))
    assert second.owned == frozenset(), "each member remembers only its own"

    both = first.assign(
        cluster,  # type: ignore[arg-type]
        {"w1": first.metadata(topics), "w0": second.metadata(topics)},
    )
    first.on_assignment(both["w1"])
    second.on_assignment(both["w0"])

    for assignment in both.values():
        by_topic = dict(assignment.assignment)
        assert set(by_topic) == set(topics)
        assert by_topic["interactive"] == by_topic["bulk"] == by_topic["retry"]
    assert len(first.owned) == len(second.owned) == 6
    assert first.owned | second.owned == frozenset(range(12))


def test_unreadable_member_data_counts_as_owning_nothing() -> None:
    cluster = Cluster({"interactive": 4})
    garbage = ConsumerProtocolMemberMetadata(0, ["interactive"], b"not json")
    assignment = CoPartitionedStickyAssignor.assign(
        cluster,  # type: ignore[arg-type]
        {"w0": garbage, "w1": garbage},
    )
    assert sorted(p for a in assignment.values() for _, ps in a.assignment for p in ps) == [
        0,
        1,
        2,
        3,
    ]
