"""The session state machine and the reconnection backoff."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from whatsapp.domain.sessions import (
    TRANSITIONS,
    InvalidTransition,
    ProviderKind,
    ReconnectPolicy,
    Session,
    SessionState,
    can_move,
)

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def session(state: SessionState = SessionState.STOPPED) -> Session:
    return Session(id="s-1", company_id="co", name="loja", provider=ProviderKind.SIM, state=state)


def test_a_move_returns_the_change_to_publish_and_records_the_reason() -> None:
    subject = session()
    change = subject.move(SessionState.STARTING, "starting", AT)
    assert change is not None
    assert (change.previous, change.state, change.reason) == (
        SessionState.STOPPED,
        SessionState.STARTING,
        "starting",
    )
    assert subject.state is SessionState.STARTING
    assert change.to_proto().state == SessionState.STARTING.to_proto()


def test_moving_to_the_current_state_publishes_nothing() -> None:
    assert session(SessionState.CONNECTED).move(SessionState.CONNECTED, "again", AT) is None


def test_connecting_resets_the_reconnection_count_and_dates_the_uptime() -> None:
    subject = session(SessionState.RECONNECTING)
    subject.reconnect_attempts = 3
    subject.move(SessionState.CONNECTED, "connected", AT)
    assert subject.reconnect_attempts == 0
    assert subject.connected_since == AT
    subject.move(SessionState.DISCONNECTED, "lost", AT)
    assert subject.connected_since is None


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (SessionState.STOPPED, SessionState.CONNECTED),
        (SessionState.CONNECTED, SessionState.RECONNECTING),
        (SessionState.BANNED, SessionState.CONNECTED),
        (SessionState.FAILED, SessionState.RECONNECTING),
    ],
)
def test_forbidden_moves_are_refused(current: SessionState, new: SessionState) -> None:
    subject = session(current)
    with pytest.raises(InvalidTransition):
        subject.move(new, "nope", AT)
    assert subject.state is current


@given(st.sampled_from(list(SessionState)))
def test_stopped_is_reachable_from_everywhere(current: SessionState) -> None:
    assert can_move(current, SessionState.STOPPED)


def test_every_state_can_be_left() -> None:
    assert all(TRANSITIONS[state] for state in SessionState)


def test_backoff_delays_are_jittered_below_an_exponential_ceiling_and_capped() -> None:
    policy = ReconnectPolicy(base_delay_s=2.0, max_delay_s=300.0, max_retries=10)
    rng = random.Random(42)
    for attempt in range(12):
        ceiling = min(300.0, 2.0 * 2**attempt)
        delays = [policy.delay(attempt, rng) for _ in range(2_000)]
        assert all(0.0 <= delay <= ceiling for delay in delays)
        # Full jitter: uniform over [0, ceiling], so spread out, not clustered at the top.
        assert statistics.mean(delays) == pytest.approx(ceiling / 2, rel=0.05)
        assert min(delays) < ceiling * 0.05
        assert max(delays) > ceiling * 0.95


def test_retries_run_out_after_max_retries() -> None:
    policy = ReconnectPolicy(max_retries=3)
    assert not policy.exhausted(2)
    assert policy.exhausted(3)


@pytest.mark.parametrize(
    "arguments",
    [
        {"base_delay_s": 0},
        {"base_delay_s": 10, "max_delay_s": 5},
        {"max_retries": 0},
    ],
)
def test_invalid_policies_are_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"reconnection|max_retries"):
        ReconnectPolicy(**arguments)  # type: ignore[arg-type]
