"""Session send limits on in-process buckets and a fake clock: session rate, pair limit,
their order, adaptive back-off and recovery, profiles and overrides."""

from __future__ import annotations

import pytest
from esquadrao_common.resilience.ratelimit import Decision, Limit, LocalTokenBucket
from hypothesis import given
from hypothesis import strategies as st
from whatsapp.adapters.limits import (
    CLOUD,
    LIFTED,
    PROFILES,
    SIM,
    PairLimit,
    ProviderProfile,
    RefusedBy,
    SessionLimiter,
    profile_named,
)

pytestmark = pytest.mark.unit

SESSION = "session-1"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class RecordingLimiter:
    """A local bucket that remembers the keys it was asked for."""

    def __init__(self, clock: FakeClock) -> None:
        self.keys: list[str] = []
        self._buckets = LocalTokenBucket(clock)

    async def acquire(self, key: str, limit: Limit, cost: float = 1.0) -> Decision:
        self.keys.append(key)
        return await self._buckets.acquire(key, limit, cost)


def phone(n: int) -> str:
    return f"+551190{n:07d}"


def make(
    profile: ProviderProfile = CLOUD, overrides: dict[str, object] | None = None
) -> tuple[SessionLimiter, FakeClock]:
    clock = FakeClock()
    limiter = SessionLimiter(LocalTokenBucket(clock), clock)
    limiter.configure(SESSION, profile, overrides)
    return limiter, clock


async def allowed_now(limiter: SessionLimiter, recipients: list[str]) -> int:
    """How many of the sends to ``recipients`` (in order) go at this instant."""
    return sum([(await limiter.acquire(SESSION, r)).allowed for r in recipients])


# --- profiles ---------------------------------------------------------------------------------


def test_profiles_are_found_by_name() -> None:
    assert profile_named("cloud") is CLOUD
    assert profile_named("sim") is SIM
    assert profile_named("lifted") is LIFTED
    assert set(PROFILES) == {"cloud", "sim", "lifted"}
    with pytest.raises(ValueError, match="known"):
        profile_named("carrier-pigeon")


def test_cloud_profile_follows_the_published_figures() -> None:
    assert (CLOUD.rate, CLOUD.pair) == (80, PairLimit(burst=10, interval=6))


def test_sim_profile_is_more_conservative_than_cloud() -> None:
    assert SIM.pair is not None and CLOUD.pair is not None
    assert SIM.rate < CLOUD.rate and SIM.burst < CLOUD.burst
    assert SIM.pair.burst < CLOUD.pair.burst and SIM.pair.interval > CLOUD.pair.interval


# --- session rate -----------------------------------------------------------------------------


async def test_session_rate_allows_the_burst_then_refuses_until_a_token_refills() -> None:
    limiter, clock = make(SIM)

    assert await allowed_now(limiter, [phone(n) for n in range(5)]) == 5
    refused = await limiter.acquire(SESSION, phone(5))

    assert (refused.allowed, refused.refused_by) == (False, RefusedBy.SESSION_RATE)
    assert refused.retry_after == pytest.approx(1.0)
    clock.now = 1.0
    assert (await limiter.acquire(SESSION, phone(5))).allowed


async def test_session_rate_holds_over_time() -> None:
    limiter, clock = make(SIM)
    allowed = await allowed_now(limiter, [phone(n) for n in range(10)])
    for step in range(1, 21):  # 10 s in half seconds, 10 sends asked each time
        clock.now = step / 2
        allowed += await allowed_now(limiter, [phone(100 * step + n) for n in range(10)])

    assert allowed == 5 + 10


async def test_lifted_profile_passes_a_large_burst() -> None:
    limiter, _ = make(LIFTED)

    assert await allowed_now(limiter, [phone(1)] * 10_000) == 10_000


# --- pair limit -------------------------------------------------------------------------------


async def test_pair_limit_allows_its_burst_then_one_per_interval() -> None:
    limiter, clock = make(CLOUD)
    alice = phone(1)

    assert await allowed_now(limiter, [alice] * 10) == 10
    refused = await limiter.acquire(SESSION, alice)
    assert (refused.allowed, refused.refused_by) == (False, RefusedBy.PAIR)
    assert refused.retry_after == pytest.approx(6.0)

    clock.now = 5.9
    assert not (await limiter.acquire(SESSION, alice)).allowed
    clock.now = 6.0
    assert await allowed_now(limiter, [alice] * 3) == 1
    clock.now = 12.0
    assert await allowed_now(limiter, [alice] * 3) == 1


async def test_pair_limit_of_one_recipient_leaves_the_others_alone() -> None:
    limiter, _ = make(CLOUD)
    alice, bob = phone(1), phone(2)
    await allowed_now(limiter, [alice] * 10)

    assert not (await limiter.acquire(SESSION, alice)).allowed
    assert await allowed_now(limiter, [bob] * 10) == 10


async def test_a_send_refused_by_the_session_rate_takes_no_pair_token() -> None:
    limiter, clock = make(SIM, {"rate": 1, "burst": 1, "pair_burst": 2, "pair_interval": 1000})
    alice = phone(1)
    assert (await limiter.acquire(SESSION, alice)).allowed

    for _ in range(5):
        assert (await limiter.acquire(SESSION, alice)).refused_by is RefusedBy.SESSION_RATE
    clock.now = 1.0

    assert (await limiter.acquire(SESSION, alice)).allowed  # the second pair token was kept
    clock.now = 2.0
    assert (await limiter.acquire(SESSION, alice)).refused_by is RefusedBy.PAIR


async def test_a_send_refused_by_the_pair_limit_spends_its_session_token() -> None:
    """The documented price of checking the session rate first."""
    limiter, _ = make(SIM, {"burst": 3, "pair_burst": 1, "pair_interval": 1000})
    alice = phone(1)
    assert (await limiter.acquire(SESSION, alice)).allowed

    assert (await limiter.acquire(SESSION, alice)).refused_by is RefusedBy.PAIR
    assert (await limiter.acquire(SESSION, phone(2))).allowed
    assert (await limiter.acquire(SESSION, phone(3))).refused_by is RefusedBy.SESSION_RATE


async def test_keys_are_namespaced_by_session_and_recipient() -> None:
    clock = FakeClock()
    recording = RecordingLimiter(clock)
    limiter = SessionLimiter(recording, clock)
    limiter.configure("s1", CLOUD)
    limiter.configure("s2", LIFTED)

    await limiter.acquire("s1", "+5511987654321")
    await limiter.acquire("s2", "+5511987654321")

    assert recording.keys == ["rate:s1", "pair:s1:+5511987654321", "rate:s2"]


@given(
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=3), st.integers(min_value=0, max_value=2)),
        max_size=80,
    )
)
async def test_no_send_passes_beyond_either_limit(steps: list[tuple[float, int]]) -> None:
    limiter, clock = make(SIM)
    assert SIM.pair is not None
    total = 0
    per_recipient = [0, 0, 0]
    for advance, recipient in steps:
        clock.now += advance
        if (await limiter.acquire(SESSION, phone(recipient))).allowed:
            total += 1
            per_recipient[recipient] += 1
        assert total <= SIM.burst + SIM.rate * clock.now + 1e-9
        assert per_recipient[recipient] <= SIM.pair.burst + clock.now / SIM.pair.interval + 1e-9


# --- adaptive rate ----------------------------------------------------------------------------


async def test_throttle_halves_the_rate_and_acquire_enforces_it() -> None:
    limiter, clock = make(CLOUD)

    assert limiter.on_throttled(SESSION)
    assert limiter.current_rate(SESSION) == 40

    # The burst shrinks with the rate (40 → 20), then 40 tokens refill in one second.
    allowed = await allowed_now(limiter, [phone(n) for n in range(100)])
    assert allowed == 20
    for step in range(1, 33):
        clock.now = step / 32
        allowed += await allowed_now(limiter, [phone(1000 * step + n) for n in range(5)])
    assert allowed == 20 + 40


def test_throttles_within_the_cooldown_count_once() -> None:
    limiter, clock = make(CLOUD)

    assert [limiter.on_throttled(SESSION) for _ in range(5)] == [True] + [False] * 4
    clock.now = 2.0
    assert limiter.on_throttled(SESSION)
    assert limiter.current_rate(SESSION) == 20


def test_successes_bring_the_rate_back_to_the_ceiling_one_step_per_second() -> None:
    limiter, clock = make(CLOUD)
    limiter.on_throttled(SESSION)
    assert not limiter.on_success(SESSION)  # within the same second

    trace = []
    for second in range(1, 15):
        clock.now = float(second)
        limiter.on_success(SESSION)
        trace.append(limiter.current_rate(SESSION))

    assert trace[:10] == [44, 48, 52, 56, 60, 64, 68, 72, 76, 80]  # step: 5 % of 80
    assert trace[10:] == [80] * 4


def test_the_rate_never_drops_below_the_floor() -> None:
    limiter, clock = make(CLOUD)
    rates = []
    for attempt in range(8):
        clock.now = 2.0 * attempt
        limiter.on_throttled(SESSION)
        rates.append(limiter.current_rate(SESSION))

    assert rates == [40, 20, 10, 8, 8, 8, 8, 8]  # floor: 10 % of 80


def test_the_floor_and_step_follow_an_overridden_rate() -> None:
    limiter, clock = make(CLOUD, {"rate": 20})
    for attempt in range(6):
        clock.now = 2.0 * attempt
        limiter.on_throttled(SESSION)
    assert limiter.current_rate(SESSION) == 2

    clock.now += 1
    limiter.on_success(SESSION)
    assert limiter.current_rate(SESSION) == 3


# --- configuration ----------------------------------------------------------------------------


def test_overrides_replace_the_profile_values() -> None:
    limiter = SessionLimiter(LocalTokenBucket())

    effective = limiter.configure(SESSION, CLOUD, {"rate": 20, "burst": 5, "pair_interval": 30})

    assert effective == ProviderProfile(
        name="cloud", rate=20, burst=5, pair=PairLimit(burst=10, interval=30)
    )
    assert limiter.current_rate(SESSION) == 20


def test_overrides_can_give_a_pair_limit_to_a_profile_without_one() -> None:
    effective = LIFTED.with_overrides({"pair_burst": 2, "pair_interval": 60})

    assert effective.pair == PairLimit(burst=2, interval=60)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rate": 0}, "rate must be a positive"),
        ({"rate": -5}, "rate must be a positive"),
        ({"burst": float("nan")}, "burst must be a positive"),
        ({"rate": float("inf")}, "rate must be a positive"),
        ({"burst": 0.5}, "burst must be at least 1"),
        ({"pair_burst": 0.5}, "pair_burst must be at least 1"),
        ({"pair_interval": -1}, "pair_interval must be a positive"),
        ({"rate": "80"}, "rate must be a number"),
        ({"rate": True}, "rate must be a number"),
        ({"rate": None}, "rate must be a number"),
        ({"speed": 10}, "unknown limit overrides"),
    ],
)
def test_invalid_overrides_are_refused_and_configure_nothing(
    overrides: dict[str, object], message: str
) -> None:
    limiter = SessionLimiter(LocalTokenBucket())

    with pytest.raises(ValueError, match=message):
        limiter.configure(SESSION, CLOUD, overrides)
    with pytest.raises(KeyError):
        limiter.current_rate(SESSION)


def test_half_a_pair_limit_is_refused_on_a_profile_without_one() -> None:
    with pytest.raises(ValueError, match="no pair limit"):
        LIFTED.with_overrides({"pair_interval": 60})


def test_configuring_the_same_profile_again_keeps_the_adaptive_state() -> None:
    limiter, _ = make(CLOUD, {"rate": 60})
    limiter.on_throttled(SESSION)

    limiter.configure(SESSION, CLOUD, {"rate": 60})
    assert limiter.current_rate(SESSION) == 30

    limiter.configure(SESSION, CLOUD)
    assert limiter.current_rate(SESSION) == 80


async def test_unknown_and_forgotten_sessions_are_refused() -> None:
    limiter, _ = make(CLOUD)
    limiter.forget(SESSION)
    limiter.forget("never-configured")

    with pytest.raises(KeyError, match="no limits configured"):
        await limiter.acquire(SESSION, phone(1))
    with pytest.raises(KeyError):
        limiter.on_throttled(SESSION)
    with pytest.raises(KeyError):
        limiter.on_success(SESSION)


async def test_recipients_must_be_in_e164_form() -> None:
    limiter, _ = make(CLOUD)

    with pytest.raises(ValueError, match=r"E\.164"):
        await limiter.acquire(SESSION, "5511987654321")
