"""Cloud API webhooks: the subscription handshake, signature checks and payload parsing.

Meta calls our webhook endpoint in two ways:

* ``GET`` with ``hub.mode=subscribe``, ``hub.verify_token`` and ``hub.challenge`` when the
  webhook is registered: :func:`verify_subscription` answers the challenge only for our
  verify token.
* ``POST`` with a JSON body and ``X-Hub-Signature-256: sha256=<hex>``, the HMAC-SHA256 of
  the **raw body bytes** under the app secret. :func:`verify_signature` must run on those
  bytes exactly as received, before any JSON parsing: the same JSON serialized again
  (other spacing, key order or escaping) has another signature and is rejected. Only then
  is the body parsed, and :func:`parse_webhook` turns it into values.

Parsing never drops anything silently. Messages of types this service has no kind for
become :class:`InboundMessage` of kind UNSPECIFIED (logged); provider statuses with no
meaning here become :class:`StatusUpdate` with status UNSPECIFIED (logged); an item that
cannot be read at all (no id, a phone that is not a phone) is returned in
:attr:`WebhookBatch.unreadable` with its raw JSON, for the caller to log and keep. Changes
of fields other than ``messages`` are ignored: this service subscribes to nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from whatsapp.adapters.cloud_errors import classify_delivery_error
from whatsapp.domain.messages import (
    InboundMessage,
    Location,
    MediaRef,
    MessageKind,
    MessageStatus,
    ProviderError,
    SharedContact,
    StatusUpdate,
    describe_contacts,
    e164_from_digits,
)

log = logging.getLogger(__name__)

#: The header that carries the payload signature.
SIGNATURE_HEADER: Final = "X-Hub-Signature-256"

_SIGNATURE: Final = re.compile(r"sha256=([0-9a-fA-F]{64})")

_MEDIA_KINDS: Final = {
    "image": MessageKind.IMAGE,
    "audio": MessageKind.AUDIO,
    "video": MessageKind.VIDEO,
    "document": MessageKind.DOCUMENT,
    "sticker": MessageKind.STICKER,
}

#: Statuses Meta reports, as ours. "played" (a voice message was listened to) implies
#: it was read.
_STATUSES: Final = {
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.READ,
    "played": MessageStatus.READ,
    "failed": MessageStatus.FAILED,
}

#: Message types Meta documents that no MessageKind describes; kept as UNSPECIFIED.
_KNOWN_UNMAPPED_TYPES: Final = frozenset(
    {"reaction", "order", "system", "unsupported", "unknown", "request_welcome"}
)


class InvalidSignature(Exception):
    """The webhook body is not signed with our app secret: reject it (HTTP 401/403)."""


class SubscriptionRejected(Exception):
    """A verification request that is not Meta's for our verify token: answer 403."""


class MalformedWebhook(ValueError):
    """A signed body that is not a Cloud API webhook payload at all (not an object, no
    ``entry`` list): nothing in it can be read."""


def sign(raw_body: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``raw_body``: ``sha256=<hex>``."""
    digest = hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(raw_body: bytes, header: str | None, app_secret: str) -> None:
    """Return if ``header`` is the signature of ``raw_body`` under ``app_secret``.

    Raises InvalidSignature when the header is missing, not ``sha256=<64 hex digits>``, or
    does not match (compared in constant time, so timing reveals nothing about the
    expected digest). Raises ValueError for an empty ``app_secret``: anyone can sign with
    an empty key, so that is a configuration error, never a pass.
    """
    if not app_secret:
        raise ValueError("the app secret is empty: webhook signatures cannot be checked")
    if header is None or not header.strip():
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        raise InvalidSignature(f"malformed {SIGNATURE_HEADER} header")
    expected = sign(raw_body, app_secret)
    if not hmac.compare_digest(expected, f"sha256={match.group(1).lower()}"):
        raise InvalidSignature("signature does not match the body")


def verify_subscription(
    mode: str | None, verify_token: str | None, challenge: str | None, expected_token: str
) -> str:
    """The challenge to answer (as plain text) to Meta's subscription request.

    ``mode``, ``verify_token`` and ``challenge`` are the ``hub.mode``, ``hub.verify_token``
    and ``hub.challenge`` query parameters. Raises SubscriptionRejected unless the mode is
    ``subscribe``, the token equals ``expected_token`` (constant-time) and a challenge was
    given; ValueError for an empty ``expected_token``.
    """
    if not expected_token:
        raise ValueError("the webhook verify token is empty")
    if mode != "subscribe":
        raise SubscriptionRejected(f"hub.mode is {mode!r}, not 'subscribe'")
    if verify_token is None or not hmac.compare_digest(
        verify_token.encode(), expected_token.encode()
    ):
        raise SubscriptionRejected("hub.verify_token does not match")
    if not challenge:
        raise SubscriptionRejected("hub.challenge is missing")
    return challenge


@dataclass(frozen=True)
class WebhookError:
    """An error Meta reported for a whole webhook value (``value.errors[]``), not for one
    message or status: e.g. a message that could not be received at all."""

    provider_number_id: str
    error: ProviderError


@dataclass(frozen=True)
class UnreadableItem:
    """A message, status or error object that could not be turned into a value.

    ``section`` is where it was (``"messages"``, ``"statuses"``, ``"errors"``, ``"value"``),
    ``reason`` why, ``raw`` the object as received.
    """

    section: str
    reason: str
    raw: Any


@dataclass(frozen=True)
class WebhookBatch:
    """Everything one webhook delivery carries, in payload order."""

    inbound: tuple[InboundMessage, ...] = ()
    statuses: tuple[StatusUpdate, ...] = ()
    errors: tuple[WebhookError, ...] = ()
    unreadable: tuple[UnreadableItem, ...] = ()


class _Unreadable(ValueError):
    """An item lacks what makes it a message, status or error."""


def parse_webhook(payload: Any) -> WebhookBatch:
    """The inbound messages, status updates and errors of a (verified) webhook payload.

    Covers every entry and every change; only ``field == "messages"`` changes are read.
    Raises MalformedWebhook when ``payload`` is not a webhook payload at all; problems with
    single items never raise (see :attr:`WebhookBatch.unreadable`).
    """
    if not isinstance(payload, Mapping) or not isinstance(payload.get("entry"), list):
        raise MalformedWebhook("a webhook payload is an object with an 'entry' list")
    if payload.get("object") != "whatsapp_business_account":
        log.warning("ignored webhook for object %r", payload.get("object"))
        return WebhookBatch()
    inbound: list[InboundMessage] = []
    statuses: list[StatusUpdate] = []
    errors: list[WebhookError] = []
    unreadable: list[UnreadableItem] = []
    for entry in payload["entry"]:
        changes = entry.get("changes") if isinstance(entry, Mapping) else None
        if not isinstance(changes, list):
            unreadable.append(UnreadableItem("entry", "an entry without a changes list", entry))
            continue
        for change in changes:
            if not isinstance(change, Mapping):
                unreadable.append(UnreadableItem("changes", "a change is not an object", change))
                continue
            if change.get("field") != "messages":
                log.info("ignored webhook change of field %r", change.get("field"))
                continue
            value = change.get("value")
            if not isinstance(value, Mapping):
                unreadable.append(UnreadableItem("value", "a change without a value", change))
                continue
            _read_value(value, inbound, statuses, errors, unreadable)
    return WebhookBatch(tuple(inbound), tuple(statuses), tuple(errors), tuple(unreadable))


def _read_value(
    value: Mapping[str, Any],
    inbound: list[InboundMessage],
    statuses: list[StatusUpdate],
    errors: list[WebhookError],
    unreadable: list[UnreadableItem],
) -> None:
    metadata = _mapping(value.get("metadata"))
    number_id = _text(metadata.get("phone_number_id"))
    display_phone = _text(metadata.get("display_phone_number"))
    profiles = {
        _text(contact.get("wa_id")): _text(_mapping(contact.get("profile")).get("name"))
        for contact in _mappings(value.get("contacts"))
    }
    for raw in _list(value.get("messages")):
        try:
            inbound.append(_inbound(raw, number_id, display_phone, profiles))
        except _Unreadable as problem:
            log.warning("unreadable inbound message in webhook: %s", problem)
            unreadable.append(UnreadableItem("messages", str(problem), raw))
    for raw in _list(value.get("statuses")):
        try:
            statuses.append(_status(raw, number_id))
        except _Unreadable as problem:
            log.warning("unreadable status in webhook: %s", problem)
            unreadable.append(UnreadableItem("statuses", str(problem), raw))
    for raw in _list(value.get("errors")):
        if not isinstance(raw, Mapping):
            unreadable.append(UnreadableItem("errors", "an error is not an object", raw))
            continue
        error = _error(raw)
        log.warning(
            "webhook reports error %s for number %s: %s", error.code, number_id, error.title
        )
        errors.append(WebhookError(provider_number_id=number_id, error=error))


def _inbound(
    raw: Any, number_id: str, display_phone: str, profiles: Mapping[str, str]
) -> InboundMessage:
    if not isinstance(raw, Mapping):
        raise _Unreadable("a message is not an object")
    message_id = _required(raw, "id")
    sender = _required(raw, "from")
    message_type = _text(raw.get("type"))
    fields: dict[str, Any] = {}
    kind = MessageKind.UNSPECIFIED
    body = _mapping(raw.get(message_type)) if message_type else {}
    if message_type == "text":
        kind = MessageKind.TEXT
        fields["text"] = _text(body.get("body"))
    elif message_type in _MEDIA_KINDS:
        kind = _MEDIA_KINDS[message_type]
        media = MediaRef(
            ref=_required(body, "id"),
            mime_type=_text(body.get("mime_type")),
            sha256=_text(body.get("sha256")),
            caption=_text(body.get("caption")),
            filename=_text(body.get("filename")),
        )
        fields["media"] = media
        fields["text"] = media.caption
    elif message_type == "location":
        kind = MessageKind.LOCATION
        location = _location(body)
        fields["location"] = location
        fields["text"] = location.describe()
    elif message_type == "contacts":
        kind = MessageKind.CONTACTS
        cards = tuple(_shared_contact(card) for card in _mappings(raw.get("contacts")))
        fields["contacts"] = cards
        fields["text"] = describe_contacts(cards)
    elif message_type == "interactive" and _text(body.get("type")) in (
        "button_reply",
        "list_reply",
    ):
        kind = MessageKind.INTERACTIVE_REPLY
        reply = _mapping(body.get(_text(body.get("type"))))
        fields["reply_id"] = _text(reply.get("id"))
        fields["text"] = _text(reply.get("title"))
    elif message_type == "button":
        kind = MessageKind.INTERACTIVE_REPLY
        fields["reply_id"] = _text(body.get("payload"))
        fields["text"] = _text(body.get("text"))
    elif message_type == "reaction":
        fields["text"] = _text(body.get("emoji"))
        fields["in_reply_to"] = _text(body.get("message_id"))
    provider_type = message_type
    if message_type == "interactive":
        provider_type = f"interactive.{_text(body.get('type'))}"
    if kind is MessageKind.UNSPECIFIED:
        level = logging.INFO if message_type in _KNOWN_UNMAPPED_TYPES else logging.WARNING
        log.log(
            level, "inbound message %s of type %r kept as UNSPECIFIED", message_id, provider_type
        )
    context = _mapping(raw.get("context"))
    if context.get("id"):
        fields["in_reply_to"] = _text(context.get("id"))
    try:
        return InboundMessage(
            provider_message_id=message_id,
            from_phone_e164=e164_from_digits(sender),
            to_phone_e164=e164_from_digits(display_phone),
            kind=kind,
            sent_at=_moment(raw.get("timestamp")),
            provider_number_id=number_id,
            profile_name=profiles.get(sender, ""),
            provider_type=provider_type,
            errors=tuple(_error(error) for error in _mappings(raw.get("errors"))),
            **fields,
        )
    except ValueError as problem:
        raise _Unreadable(f"message {message_id}: {problem}") from None


def _status(raw: Any, number_id: str) -> StatusUpdate:
    if not isinstance(raw, Mapping):
        raise _Unreadable("a status is not an object")
    message_id = _required(raw, "id")
    provider_status = _required(raw, "status")
    status = _STATUSES.get(provider_status, MessageStatus.UNSPECIFIED)
    if status is MessageStatus.UNSPECIFIED:
        log.warning("status %r of message %s has no meaning here", provider_status, message_id)
    errors = _mappings(raw.get("errors"))
    recipient = _text(raw.get("recipient_id"))
    try:
        return StatusUpdate(
            provider_message_id=message_id,
            status=status,
            recipient_phone_e164=e164_from_digits(recipient) if recipient else "",
            occurred_at=_moment(raw.get("timestamp")),
            message_id=_text(raw.get("biz_opaque_callback_data")),
            provider_number_id=number_id,
            provider_status=provider_status,
            error=_error(errors[0]) if errors else None,
        )
    except ValueError as problem:
        raise _Unreadable(f"status of {message_id}: {problem}") from None


def _error(raw: Mapping[str, Any]) -> ProviderError:
    """A Cloud API error object: ``code``, ``title``, ``message``, ``error_data.details``
    (older payloads put ``details`` at the top)."""
    code = raw.get("code")
    number = code if isinstance(code, int) and not isinstance(code, bool) else None
    title = _text(raw.get("title")) or _text(raw.get("message"))
    detail = (
        _text(_mapping(raw.get("error_data")).get("details"))
        or _text(raw.get("details"))
        or _text(raw.get("message"))
    )
    return ProviderError(
        code=_text(code), title=title, detail=detail, kind=classify_delivery_error(number)
    )


def _location(body: Mapping[str, Any]) -> Location:
    try:
        latitude = float(body["latitude"])
        longitude = float(body["longitude"])
    except (KeyError, TypeError, ValueError):
        raise _Unreadable("a location without latitude and longitude") from None
    return Location(
        latitude=latitude,
        longitude=longitude,
        name=_text(body.get("name")),
        address=_text(body.get("address")),
    )


def _shared_contact(card: Mapping[str, Any]) -> SharedContact:
    name = _mapping(card.get("name"))
    phones = tuple(
        _text(phone.get("phone")) or _text(phone.get("wa_id"))
        for phone in _mappings(card.get("phones"))
    )
    full_name = _text(name.get("formatted_name")) or " ".join(
        part for part in (_text(name.get("first_name")), _text(name.get("last_name"))) if part
    )
    return SharedContact(name=full_name, phones=tuple(phone for phone in phones if phone))


def _moment(raw: Any) -> datetime:
    """A Cloud API timestamp (Unix seconds, sent as a string) as an aware UTC datetime."""
    try:
        return datetime.fromtimestamp(int(raw), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise _Unreadable(f"timestamp {raw!r} is not Unix seconds") from None


def _required(raw: Mapping[str, Any], key: str) -> str:
    value = _text(raw.get(key))
    if not value:
        raise _Unreadable(f"no {key!r}")
    return value


def _text(value: Any) -> str:
    """Strings as they are, numbers as digits, anything else (missing, objects) empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in _list(value) if isinstance(item, Mapping)]
