"""Knob merging and validation, and the token buckets behind the simulated limits."""

from __future__ import annotations

import pytest
from esquadrao_wasim.knobs import Knobs, deep_merge, effective_knobs
from esquadrao_wasim.limits import BucketSet, TokenBucket
from pydantic import ValidationError

pytestmark = pytest.mark.unit


def test_a_sender_override_merges_nested_knobs_field_by_field() -> None:
    base = Knobs(receipt_delays={"sent": 0.0, "delivered": 1.0, "read": 2.0})

    knobs = effective_knobs(base, {"receipt_delays": {"read": 9.0}, "spam_rate": 0.5})

    assert knobs.receipt_delays.model_dump() == {"sent": 0.0, "delivered": 1.0, "read": 9.0}
    assert knobs.spam_rate == 0.5
    assert base.spam_rate == 0.0


def test_without_an_override_the_global_knobs_apply_as_they_are() -> None:
    base = Knobs(latency_ms=5)

    assert effective_knobs(base, {}) is base


def test_none_replaces_a_value_instead_of_removing_it() -> None:
    assert deep_merge({"pair_rate_limit": {"burst": 3}}, {"pair_rate_limit": None}) == {
        "pair_rate_limit": None
    }


@pytest.mark.parametrize(
    "override",
    [{"spam_rate": 1.5}, {"unknown_knob": 1}, {"reply_texts": []}, {"keepalive_timeout_s": 0}],
)
def test_invalid_knobs_are_refused(override: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        effective_knobs(Knobs(), override)


def test_defaults_are_meta_s_documented_limits() -> None:
    knobs = Knobs()

    assert knobs.max_mps == 80
    assert knobs.pair_rate_limit is not None
    assert knobs.pair_rate_limit.per_seconds == 6
    assert knobs.error_delivery == "sync"


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(capacity=2, rate=0.5, now=100.0)

    assert [bucket.take(100.0), bucket.take(100.0), bucket.take(100.0)] == [True, True, False]
    assert bucket.take(101.0) is False  # half a token
    assert bucket.take(102.0) is True
    assert bucket.take(102.0) is False


def test_buckets_are_per_key_and_restart_when_their_limits_change() -> None:
    now = [0.0]
    buckets = BucketSet(clock=lambda: now[0])

    assert buckets.take(("a",), 1, 1) is True
    assert buckets.take(("a",), 1, 1) is False
    assert buckets.take(("b",), 1, 1) is True
    assert buckets.take(("a",), 2, 1) is True  # new limits: a new, full bucket


def test_full_buckets_are_forgotten() -> None:
    now = [0.0]
    buckets = BucketSet(clock=lambda: now[0], sweep_every=3)
    buckets.take(("a",), 1, 1)
    buckets.take(("b",), 1, 1)
    now[0] = 10.0

    buckets.take(("c",), 1, 1)

    assert len(buckets) == 1
