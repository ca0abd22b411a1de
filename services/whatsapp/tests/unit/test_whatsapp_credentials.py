"""Session credentials are sealed with the newest key, opened with any configured key, and
refused when altered or sealed under a key that is gone; no error ever shows a secret."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from whatsapp.adapters.credentials import (
    CloudCredentials,
    CredentialCipher,
    CredentialsError,
    CredentialsKeyError,
    UnreadableCredentials,
    saved_credentials,
)
from whatsapp.config import DEV_CREDENTIALS_KEY, WhatsappSettings

pytestmark = pytest.mark.unit

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
CLOUD = {
    "access_token": "EAAG-very-secret-token",
    "phone_number_id": "106540352242922",
    "app_secret": "6f1c2a9d4e8b7c3f5a0d1e2b3c4d5e6f",
    "verify_token": "verify-me",
}


def test_sealed_credentials_open_to_what_was_sealed() -> None:
    cipher = CredentialCipher([NEW])

    sealed = cipher.seal(CLOUD)

    assert cipher.open(sealed) == CLOUD
    for secret in CLOUD.values():
        assert secret.encode() not in sealed
    assert cipher.seal(CLOUD) != sealed, "each seal has its own IV"


def test_a_saved_login_is_sealed_as_an_object() -> None:
    cipher = CredentialCipher([NEW])

    opened = cipher.open(cipher.seal("simcred.abc"))

    assert opened == {"saved": "simcred.abc"}
    assert saved_credentials(opened) == "simcred.abc"
    assert saved_credentials({}) is None
    assert saved_credentials({"saved": ""}) is None


def test_rotation_opens_with_old_keys_and_seals_with_the_newest() -> None:
    before = CredentialCipher([OLD])
    after = CredentialCipher([NEW, OLD])
    only_new = CredentialCipher([NEW])
    sealed_before = before.seal(CLOUD)

    sealed_after = after.seal(CLOUD)

    assert after.open(sealed_before) == CLOUD
    assert only_new.open(sealed_after) == CLOUD
    with pytest.raises(UnreadableCredentials):
        before.open(sealed_after)


def test_a_removed_key_or_an_altered_token_is_refused_without_secrets() -> None:
    sealed = CredentialCipher([OLD]).seal(CLOUD)
    tampered = bytearray(sealed)
    tampered[len(tampered) // 2] ^= 0x01

    for cipher, token in [
        (CredentialCipher([NEW]), sealed),
        (CredentialCipher([OLD]), bytes(tampered)),
        (CredentialCipher([OLD]), b"not a token"),
    ]:
        with pytest.raises(UnreadableCredentials) as refused:
            cipher.open(token)
        assert "WHATSAPP_CREDENTIALS_KEY" in str(refused.value)
        assert refused.value.__cause__ is None
        for secret in [*CLOUD.values(), OLD, NEW]:
            assert secret not in str(refused.value)


def test_only_objects_of_strings_are_sealed_or_opened() -> None:
    cipher = CredentialCipher([NEW])
    fernet = Fernet(NEW.encode())

    with pytest.raises(CredentialsError):
        cipher.seal({"access_token": 42})  # type: ignore[dict-item]
    for plaintext in (b"[1, 2]", b'{"a": 1}', b"not json"):
        with pytest.raises(UnreadableCredentials, match="not an object of strings"):
            cipher.open(fernet.encrypt(plaintext))


def test_keys_come_from_the_settings_newest_first() -> None:
    settings = WhatsappSettings(
        database_url="postgresql://x@localhost/x",
        kafka_bootstrap="localhost:9092",
        redis_url="redis://localhost",
        whatsapp_credentials_key=SecretStr(f" {NEW} , {OLD},"),
    )
    sealed = CredentialCipher.from_settings(settings).seal(CLOUD)

    assert CredentialCipher([NEW]).open(sealed) == CLOUD
    development = CredentialCipher([DEV_CREDENTIALS_KEY])
    assert development.open(development.seal("x")) == {"saved": "x"}


@pytest.mark.parametrize("keys", [[], ["   "], [NEW, "short"], ["x" * 44]])
def test_a_malformed_key_stops_the_process_with_a_clear_error(keys: list[str]) -> None:
    with pytest.raises(CredentialsKeyError) as refused:
        CredentialCipher(keys)

    assert "WHATSAPP_CREDENTIALS_KEY" in str(refused.value)
    for key in keys:
        if key.strip():
            assert key.strip() not in str(refused.value)


def test_cloud_credentials_need_every_member_and_hide_secrets_in_repr() -> None:
    credentials = CloudCredentials.of(CLOUD)

    assert credentials.as_dict() == CLOUD
    assert credentials.phone_number_id in repr(credentials)
    for name in ("access_token", "app_secret", "verify_token"):
        assert CLOUD[name] not in repr(credentials)
    with pytest.raises(UnreadableCredentials, match="lack app_secret, verify_token") as refused:
        CloudCredentials.of({**CLOUD, "app_secret": "", "verify_token": ""})
    assert CLOUD["access_token"] not in str(refused.value)
