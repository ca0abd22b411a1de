"""Webhook bodies are accepted only with Meta's signature over the exact bytes received."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from whatsapp.adapters.cloud_webhooks import (
    InvalidSignature,
    SubscriptionRejected,
    sign,
    verify_signature,
    verify_subscription,
)

from ..contract.fake_graph import fixture_bytes, signed_webhook

pytestmark = pytest.mark.unit

APP_SECRET = "6f1c2a9d4e8b7c3f5a0d1e2b3c4d5e6f"
BODY = fixture_bytes("webhooks/text.json")


def meta_signature(body: bytes, secret: str = APP_SECRET) -> str:
    """The header as Meta documents it, computed independently of the code under test."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_valid_signature_passes() -> None:
    verify_signature(BODY, meta_signature(BODY), APP_SECRET)


def test_sign_matches_metas_algorithm_and_the_fake() -> None:
    assert sign(BODY, APP_SECRET) == meta_signature(BODY)
    assert signed_webhook(BODY, APP_SECRET)["X-Hub-Signature-256"] == meta_signature(BODY)


def test_uppercase_hex_digest_passes() -> None:
    digest = meta_signature(BODY).removeprefix("sha256=").upper()
    verify_signature(BODY, f"sha256={digest}", APP_SECRET)


def test_signature_with_another_secret_is_forged() -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature(BODY, meta_signature(BODY, "not-our-app-secret"), APP_SECRET)


def test_signature_of_another_body_is_rejected() -> None:
    other = fixture_bytes("webhooks/image.json")
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature(BODY, meta_signature(other), APP_SECRET)


def test_tampered_body_is_rejected() -> None:
    tampered = BODY.replace(b"another color", b"a refund now!")
    assert tampered != BODY
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature(tampered, meta_signature(BODY), APP_SECRET)


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_signature_is_rejected(header: str | None) -> None:
    with pytest.raises(InvalidSignature, match="missing"):
        verify_signature(BODY, header, APP_SECRET)


@pytest.mark.parametrize(
    "header",
    [
        meta_signature(BODY).removeprefix("sha256="),  # no scheme
        "sha1=" + hmac.new(APP_SECRET.encode(), BODY, hashlib.sha1).hexdigest(),
        meta_signature(BODY)[:-2],  # truncated
        meta_signature(BODY) + "00",  # too long
        "sha256=" + "z" * 64,  # not hex
        "sha256 " + meta_signature(BODY).removeprefix("sha256="),
        "sha256=" + meta_signature(BODY) + ",sha256=" + meta_signature(BODY),
    ],
)
def test_malformed_signature_header_is_rejected(header: str) -> None:
    with pytest.raises(InvalidSignature, match="malformed"):
        verify_signature(BODY, header, APP_SECRET)


@pytest.mark.parametrize(
    "reserialize",
    [
        lambda payload: json.dumps(payload).encode(),  # other spacing and escaping
        lambda payload: json.dumps(payload, separators=(",", ":")).encode(),
        lambda payload: json.dumps(payload, ensure_ascii=False, indent=2).encode() + b"\n\n",
        lambda payload: json.dumps(payload, sort_keys=True, ensure_ascii=False).encode(),
    ],
)
def test_reserialized_body_is_rejected(reserialize: object) -> None:
    """Same JSON, other bytes: the signature covers the raw body, never a re-encoding."""
    raw = fixture_bytes("webhooks/location.json")  # has non-ASCII text to escape
    payload = json.loads(raw)
    again = reserialize(payload)  # type: ignore[operator]
    assert json.loads(again) == payload
    assert again != raw

    verify_signature(raw, meta_signature(raw), APP_SECRET)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature(again, meta_signature(raw), APP_SECRET)


def test_empty_app_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="app secret"):
        verify_signature(BODY, meta_signature(BODY, ""), "")


# --- subscription handshake ---------------------------------------------------------------


def test_subscription_with_our_token_answers_the_challenge() -> None:
    assert verify_subscription("subscribe", "meu-token", "1158201444", "meu-token") == "1158201444"


@pytest.mark.parametrize(
    ("mode", "token", "challenge"),
    [
        ("subscribe", "outro-token", "1158201444"),
        ("subscribe", None, "1158201444"),
        ("subscribe", "", "1158201444"),
        ("unsubscribe", "meu-token", "1158201444"),
        (None, "meu-token", "1158201444"),
        ("subscribe", "meu-token", None),
        ("subscribe", "meu-token", ""),
    ],
)
def test_subscription_is_rejected(
    mode: str | None, token: str | None, challenge: str | None
) -> None:
    with pytest.raises(SubscriptionRejected):
        verify_subscription(mode, token, challenge, "meu-token")


def test_empty_verify_token_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="verify token"):
        verify_subscription("subscribe", "", "1", "")
