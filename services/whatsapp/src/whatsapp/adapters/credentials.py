"""Session credentials, encrypted at rest with Fernet and a rotatable list of keys.

A session's credentials (a Cloud API access token and app secret, a ``sim`` session's
saved login) are the keys to a company's WhatsApp number. They are kept only in the
``sessions.credentials`` column, sealed by :class:`CredentialCipher`, and opened in memory
by the process that needs them (the webhook endpoint for the app secret, the worker that
connects the session). They never appear in responses, logs or exception texts: the
errors of this module name what is wrong, never a value.

Keys come from ``WHATSAPP_CREDENTIALS_KEY``: comma-separated Fernet keys, newest first.
Sealing uses the newest; opening tries each in turn (``MultiFernet``), so rotating is:
prepend a new key and deploy (new writes use it, old rows still open), re-seal the rows
at leisure, then drop the old key.

The sealed plaintext is always a JSON object of strings:

* ``cloud``: :class:`CloudCredentials` (``access_token``, ``phone_number_id``,
  ``app_secret``, ``verify_token``);
* ``sim``: ``{"saved": "<what the simulator gave when the session paired>"}``; sealing a
  bare string stores it this way (see :data:`SAVED`, :func:`saved_credentials`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from whatsapp.config import WhatsappSettings

#: The member under which a connection-oriented provider's saved login is sealed.
SAVED: Final = "saved"


class CredentialsError(Exception):
    """Credentials cannot be sealed or opened. The text never holds a secret."""


class CredentialsKeyError(CredentialsError):
    """``WHATSAPP_CREDENTIALS_KEY`` is not a list of Fernet keys: the process cannot start."""


class UnreadableCredentials(CredentialsError):
    """Sealed credentials that no configured key opens (sealed under a key since removed
    from ``WHATSAPP_CREDENTIALS_KEY``, or altered), or that are not a credentials object."""


class CredentialCipher:
    """Seals and opens session credentials with ``keys`` (Fernet keys, newest first)."""

    def __init__(self, keys: Sequence[str]) -> None:
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.strip()))
            except ValueError:
                # Named by position only, and without the library's error chained to it:
                # nothing about the key's text reaches a log.
                raise CredentialsKeyError(
                    f"key {position} of WHATSAPP_CREDENTIALS_KEY is not a Fernet key "
                    "(32 url-safe base64-encoded bytes)"
                ) from None
        if not fernets:
            raise CredentialsKeyError("WHATSAPP_CREDENTIALS_KEY holds no key")
        self._fernet = MultiFernet(fernets)

    @classmethod
    def from_settings(cls, settings: WhatsappSettings) -> CredentialCipher:
        """The cipher of ``WHATSAPP_CREDENTIALS_KEY`` (empty items ignored)."""
        raw = settings.whatsapp_credentials_key.get_secret_value()
        return cls([key for key in raw.split(",") if key.strip()])

    def seal(self, credentials: Mapping[str, Any] | str) -> bytes:
        """``credentials`` encrypted with the newest key; a string is a saved login
        (sealed as ``{"saved": credentials}``)."""
        document = {SAVED: credentials} if isinstance(credentials, str) else dict(credentials)
        if not all(isinstance(value, str) for value in document.values()):
            raise CredentialsError("credentials are an object of strings")
        plaintext = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        return self._fernet.encrypt(plaintext)

    def open(self, sealed: bytes) -> dict[str, Any]:
        """The credentials sealed in ``sealed``; :class:`UnreadableCredentials` when no key
        opens them or they are not an object of strings."""
        try:
            plaintext = self._fernet.decrypt(sealed)
        except InvalidToken:
            raise UnreadableCredentials(
                "session credentials cannot be opened: they were sealed with a key that is "
                "not in WHATSAPP_CREDENTIALS_KEY, or altered"
            ) from None
        try:
            document = json.loads(plaintext)
        except ValueError:
            document = None
        if not isinstance(document, dict) or not all(
            isinstance(value, str) for value in document.values()
        ):
            raise UnreadableCredentials("sealed session credentials are not an object of strings")
        return document


@dataclass(frozen=True)
class CloudCredentials:
    """What a ``cloud`` session needs: the Graph API token and number id to send, the
    app secret that signs its webhooks and the token Meta echoes when subscribing them.

    Secrets are left out of ``repr``, so the value can appear in a log line or traceback.
    """

    access_token: str = field(repr=False)
    phone_number_id: str
    app_secret: str = field(repr=False)
    verify_token: str = field(repr=False)

    @classmethod
    def of(cls, opened: Mapping[str, Any]) -> CloudCredentials:
        """The cloud credentials in an opened document; :class:`UnreadableCredentials`
        naming (only) the members that are missing or empty."""
        names = [item.name for item in fields(cls)]
        missing = [name for name in names if not opened.get(name)]
        if missing:
            raise UnreadableCredentials(f"cloud credentials lack {', '.join(missing)}")
        return cls(**{name: opened[name] for name in names})

    def as_dict(self) -> dict[str, str]:
        """The document to seal."""
        return {item.name: getattr(self, item.name) for item in fields(self)}


def saved_credentials(opened: Mapping[str, Any]) -> str | None:
    """A connection-oriented session's saved login, None when it has to pair."""
    saved = opened.get(SAVED)
    return saved if isinstance(saved, str) and saved else None
