"""A message's status only moves forward, whatever order provider receipts arrive in."""

from __future__ import annotations

from functools import reduce
from random import Random

import pytest
from esquadrao.whatsapp.v1 import whatsapp_pb2
from hypothesis import given
from hypothesis import strategies as st
from whatsapp.domain.messages import MessageStatus, advance

pytestmark = pytest.mark.unit

S = MessageStatus
PROGRESS = [S.QUEUED, S.SENT, S.DELIVERED, S.READ]
TERMINAL = [S.FAILED, S.UNKNOWN, S.EXPIRED]


def fold(statuses: list[MessageStatus], start: MessageStatus = S.UNSPECIFIED) -> MessageStatus:
    return reduce(advance, statuses, start)


def test_statuses_mirror_the_proto_enum() -> None:
    for status in MessageStatus:
        assert whatsapp_pb2.MessageStatus.Name(status.to_proto()) == f"MESSAGE_STATUS_{status.name}"
        assert status.to_proto() == status.value
    assert len(MessageStatus) == len(whatsapp_pb2.MessageStatus.keys())


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        (S.UNSPECIFIED, S.QUEUED, S.QUEUED),
        (S.QUEUED, S.SENT, S.SENT),
        (S.SENT, S.DELIVERED, S.DELIVERED),
        (S.DELIVERED, S.READ, S.READ),
        (S.SENT, S.READ, S.READ),  # Meta skips "delivered" when read on arrival
        (S.READ, S.DELIVERED, S.READ),
        (S.DELIVERED, S.SENT, S.DELIVERED),
        (S.SENT, S.QUEUED, S.SENT),
        (S.SENT, S.SENT, S.SENT),
        (S.QUEUED, S.FAILED, S.FAILED),
        (S.SENT, S.FAILED, S.FAILED),
        (S.DELIVERED, S.FAILED, S.DELIVERED),  # delivery is evidence: a late failure loses
        (S.READ, S.FAILED, S.READ),
        (S.FAILED, S.DELIVERED, S.FAILED),  # terminal is terminal
        (S.FAILED, S.READ, S.FAILED),
        (S.QUEUED, S.UNKNOWN, S.UNKNOWN),
        (S.SENT, S.UNKNOWN, S.SENT),
        (S.UNKNOWN, S.SENT, S.UNKNOWN),
        (S.QUEUED, S.EXPIRED, S.EXPIRED),
        (S.SENT, S.EXPIRED, S.SENT),
        (S.EXPIRED, S.QUEUED, S.EXPIRED),
        (S.EXPIRED, S.FAILED, S.EXPIRED),
        (S.FAILED, S.UNKNOWN, S.FAILED),
        (S.DELIVERED, S.UNSPECIFIED, S.DELIVERED),  # a status with no meaning changes nothing
    ],
)
def test_advance(current: MessageStatus, new: MessageStatus, expected: MessageStatus) -> None:
    assert advance(current, new) is expected


def test_terminal_statuses() -> None:
    assert [status for status in MessageStatus if status.is_terminal] == TERMINAL


@given(st.lists(st.sampled_from(PROGRESS), min_size=1, max_size=30), st.randoms())
def test_any_permutation_with_duplicates_ends_at_the_highest_status(
    reports: list[MessageStatus], random: Random
) -> None:
    shuffled = list(reports)
    random.shuffle(shuffled)

    assert fold(shuffled) is max(reports, key=PROGRESS.index)
    assert fold(shuffled, S.QUEUED) is max(reports, key=PROGRESS.index)


@given(st.permutations([S.SENT, S.DELIVERED, S.READ, S.SENT, S.DELIVERED, S.READ, S.READ]))
def test_duplicated_meta_receipts_in_any_order_end_read(reports: list[MessageStatus]) -> None:
    assert fold(reports, S.QUEUED) is S.READ


@given(st.sampled_from(list(MessageStatus)), st.sampled_from(list(MessageStatus)))
def test_advance_is_idempotent(current: MessageStatus, new: MessageStatus) -> None:
    once = advance(current, new)
    assert advance(once, new) is once


@given(st.lists(st.sampled_from(list(MessageStatus)), max_size=30))
def test_never_backwards(reports: list[MessageStatus]) -> None:
    status = S.UNSPECIFIED
    for report in reports:
        after = advance(status, report)
        if status.is_terminal:
            assert after is status
        elif status in PROGRESS and after in PROGRESS:
            assert PROGRESS.index(after) >= PROGRESS.index(status)
        status = after


@given(
    st.lists(st.sampled_from(PROGRESS), max_size=20),
    st.lists(st.sampled_from(PROGRESS), max_size=20),
)
def test_failure_wins_only_before_delivery(
    before: list[MessageStatus], after: list[MessageStatus]
) -> None:
    """A failure report applies unless a delivery was recorded before it; once applied,
    nothing reported after it changes the status."""
    delivered_first = any(status in (S.DELIVERED, S.READ) for status in before)

    final = fold([S.QUEUED, *before, S.FAILED, *after])

    if delivered_first:
        assert final is max([*before, *after], key=PROGRESS.index)
    else:
        assert final is S.FAILED
