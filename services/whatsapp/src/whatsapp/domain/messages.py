"""Messages the whatsapp service sends and receives, as plain values.

Outbound: an :class:`OutboundMessage` carries our ``message_id`` (the key of the send
ledger, chosen by whoever asked for the send) and one content kind, :class:`Text`,
:class:`Template` or :class:`Media`. Inbound: providers turn what customers send into
:class:`InboundMessage` and what happens to our messages into :class:`StatusUpdate`.
Every value checks its own invariants when built, so an adapter cannot hand the service
something the contracts in ``proto/esquadrao/whatsapp/v1`` cannot express.

:func:`advance` is the forward-only status rule of the architecture: late, duplicate and
out-of-order provider callbacks never move a message's status backwards.

Nothing here does I/O; the ``to_proto`` helpers only build protobuf messages.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final

from esquadrao.whatsapp.v1 import commands_pb2, whatsapp_pb2
from google.protobuf.timestamp_pb2 import Timestamp

if TYPE_CHECKING:
    # provider.py imports this module at run time; here the kind is only annotated.
    from whatsapp.domain.provider import FailureKind

#: A phone in E.164 form: ``+``, a country code not starting with 0, at most 15 digits.
E164_PATTERN: Final = re.compile(r"\+[1-9]\d{6,14}")

_NON_DIGIT: Final = re.compile(r"\D")


def is_e164(phone: str) -> bool:
    """Whether ``phone`` is already in E.164 form (``+5511987654321``)."""
    return E164_PATTERN.fullmatch(phone) is not None


def e164_from_digits(raw: str) -> str:
    """The E.164 form of a provider's phone or WhatsApp id (``"5511987654321"``).

    WhatsApp ids (``wa_id``, ``from``, ``recipient_id``) are the international number in
    digits without ``+``; display numbers may carry spaces, dashes or a ``+``. Raises
    ValueError when what is left is not a possible E.164 number.
    """
    phone = "+" + _NON_DIGIT.sub("", raw)
    if not is_e164(phone):
        raise ValueError(f"{raw!r} is not an international phone number")
    return phone


def to_timestamp(moment: datetime) -> Timestamp:
    """``moment`` (timezone-aware) as a protobuf Timestamp."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class MessageKind(enum.Enum):
    """What an inbound message carries; mirrors ``esquadrao.whatsapp.v1.MessageKind``.

    UNSPECIFIED is kept for what no other kind describes (reactions, orders, types the
    provider added after this code): such messages are still delivered, never dropped.
    """

    UNSPECIFIED = 0
    TEXT = 1
    IMAGE = 2
    AUDIO = 3
    VIDEO = 4
    DOCUMENT = 5
    STICKER = 6
    LOCATION = 7
    CONTACTS = 8
    INTERACTIVE_REPLY = 9

    def to_proto(self) -> whatsapp_pb2.MessageKind:
        return _KIND_TO_PROTO[self]


_KIND_TO_PROTO: Final[dict[MessageKind, whatsapp_pb2.MessageKind]] = {
    kind: getattr(whatsapp_pb2, f"MESSAGE_KIND_{kind.name}") for kind in MessageKind
}


class MessageStatus(enum.Enum):
    """Delivery state of an outbound message; mirrors ``esquadrao.whatsapp.v1.MessageStatus``.

    The progress states are ordered ``QUEUED < SENT < DELIVERED < READ``; FAILED, UNKNOWN
    and EXPIRED are terminal. Members are deliberately not ints: compare them only through
    :func:`advance`, since the proto numbers put FAILED "above" READ.
    """

    UNSPECIFIED = 0
    QUEUED = 1
    SENT = 2
    DELIVERED = 3
    READ = 4
    FAILED = 5
    UNKNOWN = 6
    EXPIRED = 7

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_REPLACES

    def to_proto(self) -> whatsapp_pb2.MessageStatus:
        return _STATUS_TO_PROTO[self]


_STATUS_TO_PROTO: Final[dict[MessageStatus, whatsapp_pb2.MessageStatus]] = {
    status: getattr(whatsapp_pb2, f"MESSAGE_STATUS_{status.name}") for status in MessageStatus
}

_PROGRESS_RANK: Final = {
    MessageStatus.UNSPECIFIED: 0,
    MessageStatus.QUEUED: 1,
    MessageStatus.SENT: 2,
    MessageStatus.DELIVERED: 3,
    MessageStatus.READ: 4,
}

#: For each terminal status, the statuses it may replace.
#:
#: * FAILED replaces a message not yet known to be delivered. Meta reports "failed" when a
#:   message could not be sent or delivered, and its callbacks arrive in any order (a
#:   customer with several devices can even yield "delivered" and "failed" for one
#:   message). Once DELIVERED or READ was recorded the customer has the message, and that
#:   evidence wins: a later "failed" is ignored.
#: * UNKNOWN (a crash hid whether the provider accepted the send) and EXPIRED (``not_after``
#:   passed first) are decisions about a message we have not handed over successfully, so
#:   they only replace QUEUED: a message the provider accepted is SENT, not unknown or
#:   expired.
_TERMINAL_REPLACES: Final = {
    MessageStatus.FAILED: frozenset(
        {MessageStatus.UNSPECIFIED, MessageStatus.QUEUED, MessageStatus.SENT}
    ),
    MessageStatus.UNKNOWN: frozenset({MessageStatus.UNSPECIFIED, MessageStatus.QUEUED}),
    MessageStatus.EXPIRED: frozenset({MessageStatus.UNSPECIFIED, MessageStatus.QUEUED}),
}


def advance(current: MessageStatus, new: MessageStatus) -> MessageStatus:
    """The status after ``new`` is reported for a message whose status is ``current``.

    The forward-only rule: returns ``new`` when it moves the message forward, else
    ``current`` (the report is late, duplicated, or contradicts a terminal state).

    * A terminal ``current`` (FAILED, UNKNOWN, EXPIRED) never changes, even when a later
      receipt says the message was delivered: terminal is terminal in the contract.
    * Progress states only go up: READ after DELIVERED moves on, DELIVERED after READ is
      ignored, and READ straight after SENT is accepted (Meta skips "delivered" when a
      message is read as it arrives).
    * A terminal ``new`` applies only to the statuses listed in ``_TERMINAL_REPLACES``
      (FAILED up to SENT; UNKNOWN and EXPIRED up to QUEUED).
    * UNSPECIFIED as ``new`` (a provider status with no meaning here) changes nothing;
      UNSPECIFIED as ``current`` means "no status yet", which anything replaces.

    The function is idempotent (``advance(advance(c, n), n) == advance(c, n)``), and for
    the progress states the order of reports does not matter: any permutation of them
    ends at the highest one.
    """
    if current.is_terminal or new is MessageStatus.UNSPECIFIED:
        return current
    if new.is_terminal:
        return new if current in _TERMINAL_REPLACES[new] else current
    return new if _PROGRESS_RANK[new] > _PROGRESS_RANK[current] else current


# --- outbound -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """Plain text; ``preview_url`` asks for a preview of the first URL in ``body``."""

    body: str
    preview_url: bool = False

    def __post_init__(self) -> None:
        if not self.body.strip():
            raise ValueError("a text message needs a body")


@dataclass(frozen=True)
class Template:
    """An approved message template, with the values of its body's ``{{1}}``, ``{{2}}``, ...

    Templates are the only content WhatsApp lets a business send outside the 24-hour
    customer service window (see ``FailureKind.REENGAGEMENT_REQUIRED``).
    """

    name: str
    language: str
    body_parameters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a template needs a name")
        if not self.language.strip():
            raise ValueError("a template needs a language code, e.g. 'pt_BR'")


class MediaKind(enum.Enum):
    """Media a message can carry; the values are WhatsApp's type names."""

    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    DOCUMENT = "document"
    STICKER = "sticker"

    @property
    def takes_caption(self) -> bool:
        """WhatsApp shows captions under images, videos and documents only."""
        return self in {MediaKind.IMAGE, MediaKind.VIDEO, MediaKind.DOCUMENT}

    @property
    def message_kind(self) -> MessageKind:
        return MessageKind[self.name]


_MESSAGE_KIND_TO_MEDIA: Final = {kind.message_kind: kind for kind in MediaKind}


@dataclass(frozen=True)
class Media:
    """Media by reference: a public ``link`` the provider downloads, or a provider
    ``media_id`` of an upload; exactly one of them.

    ``caption`` only for kinds that show one, ``filename`` only for documents: WhatsApp
    would drop them silently otherwise, so they are refused here.
    """

    kind: MediaKind
    link: str | None = None
    media_id: str | None = None
    caption: str = ""
    filename: str = ""
    mime_type: str = ""

    def __post_init__(self) -> None:
        if (self.link is None) == (self.media_id is None):
            raise ValueError("media needs exactly one of link and media_id")
        if self.link is not None and not self.link.startswith(("https://", "http://")):
            raise ValueError("a media link must be an http(s) URL")
        if self.media_id is not None and not self.media_id.strip():
            raise ValueError("a media id cannot be blank")
        if self.caption and not self.kind.takes_caption:
            raise ValueError(f"{self.kind.value} messages cannot have a caption")
        if self.filename and self.kind is not MediaKind.DOCUMENT:
            raise ValueError("only documents have a filename")


Content = Text | Template | Media


@dataclass(frozen=True)
class OutboundMessage:
    """One message to send: our ``message_id`` (idempotency key of the send ledger), the
    recipient in E.164 form, the content, and the provider id of the message it quotes."""

    message_id: str
    to_phone_e164: str
    content: Content
    reply_to: str | None = None

    def __post_init__(self) -> None:
        if not self.message_id.strip():
            raise ValueError("an outbound message needs a message_id")
        if not is_e164(self.to_phone_e164):
            raise ValueError(f"recipient {self.to_phone_e164!r} is not in E.164 form")
        if self.reply_to is not None and not self.reply_to.strip():
            raise ValueError("reply_to cannot be blank: leave it None")


def outbound_from_command(command: commands_pb2.SendMessage) -> OutboundMessage:
    """The message a ``SendMessage`` command asks for.

    A media ``ref`` that is an http(s) URL is sent as a link, anything else as a provider
    media id. Raises ValueError when the command has no content, names a media kind that
    is not media, or breaks an invariant of the values above.
    """
    content: Content
    which = command.WhichOneof("content")
    if which == "text":
        content = Text(body=command.text.body, preview_url=command.text.preview_url)
    elif which == "template":
        content = Template(
            name=command.template.name,
            language=command.template.language,
            body_parameters=tuple(command.template.body_parameters),
        )
    elif which == "media":
        media = command.media
        kind = _MESSAGE_KIND_TO_MEDIA.get(MessageKind(media.kind))
        if kind is None:
            raise ValueError(f"{MessageKind(media.kind).name} is not a media kind")
        is_link = media.ref.startswith(("https://", "http://"))
        content = Media(
            kind=kind,
            link=media.ref if is_link else None,
            media_id=None if is_link else media.ref,
            caption=media.caption,
            filename=media.filename,
            mime_type=media.mime_type,
        )
    else:
        raise ValueError(f"SendMessage {command.message_id!r} has no content")
    return OutboundMessage(
        message_id=command.message_id,
        to_phone_e164=command.to_phone_e164,
        content=content,
        reply_to=command.reply_to or None,
    )


# --- inbound and status updates -----------------------------------------------------------


@dataclass(frozen=True)
class ProviderError:
    """An error as the provider reported it (mirrors ``esquadrao.whatsapp.v1.ProviderError``),
    with ``kind``: what it means for the send pipeline, when the adapter knows."""

    code: str
    title: str = ""
    detail: str = ""
    kind: FailureKind | None = None

    def to_proto(self) -> whatsapp_pb2.ProviderError:
        return whatsapp_pb2.ProviderError(code=self.code, title=self.title, detail=self.detail)


@dataclass(frozen=True)
class MediaRef:
    """Media kept by the provider (a Cloud API media id, or a URL); bytes are not carried."""

    ref: str
    mime_type: str = ""
    sha256: str = ""
    caption: str = ""
    filename: str = ""

    def to_proto(self) -> whatsapp_pb2.MediaRef:
        return whatsapp_pb2.MediaRef(
            ref=self.ref,
            mime_type=self.mime_type,
            sha256=self.sha256,
            caption=self.caption,
            filename=self.filename,
        )


@dataclass(frozen=True)
class Location:
    """A shared location pin."""

    latitude: float
    longitude: float
    name: str = ""
    address: str = ""

    def describe(self) -> str:
        """Name, address and a ``geo:`` URI (RFC 5870), one per line: the text an agent
        reads, and a link any map application opens."""
        lines = [part for part in (self.name, self.address) if part]
        lines.append(f"geo:{self.latitude},{self.longitude}")
        return "\n".join(lines)


@dataclass(frozen=True)
class SharedContact:
    """A contact card the customer shared: its name and phones as written on the card."""

    name: str
    phones: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.name}: {', '.join(self.phones)}" if self.phones else self.name


def describe_contacts(contacts: tuple[SharedContact, ...]) -> str:
    """One line per shared contact card."""
    return "\n".join(contact.describe() for contact in contacts)


@dataclass(frozen=True)
class InboundMessage:
    """A message a customer sent to one of our numbers.

    ``text`` is what a person reads: the body of a text, the caption of media, the title
    of a chosen button or list row, a rendering of a location or of contact cards (see
    :meth:`Location.describe`, :func:`describe_contacts`). ``provider_number_id`` is the
    provider's id of our number that received it (Cloud API ``phone_number_id``), by which
    the session is found. ``provider_type`` is the provider's own name of the type
    (``"reaction"``, ``"order"``), so messages of kind UNSPECIFIED can still be told apart.
    ``reply_id`` is the id of the chosen button or list row. ``errors`` are those the
    provider attached (e.g. "unsupported message type").
    """

    provider_message_id: str
    from_phone_e164: str
    to_phone_e164: str
    kind: MessageKind
    sent_at: datetime
    provider_number_id: str = ""
    text: str = ""
    profile_name: str = ""
    media: MediaRef | None = None
    location: Location | None = None
    contacts: tuple[SharedContact, ...] = ()
    reply_id: str = ""
    in_reply_to: str = ""
    provider_type: str = ""
    errors: tuple[ProviderError, ...] = ()

    def __post_init__(self) -> None:
        if not self.provider_message_id:
            raise ValueError("an inbound message needs the provider's message id")
        for phone in (self.from_phone_e164, self.to_phone_e164):
            if not is_e164(phone):
                raise ValueError(f"{phone!r} is not in E.164 form")
        if self.sent_at.tzinfo is None:
            raise ValueError("sent_at must be timezone-aware")

    def to_proto(self, session_id: str) -> whatsapp_pb2.MessageReceived:
        """The ``MessageReceived`` event payload for the session that received it."""
        return whatsapp_pb2.MessageReceived(
            session_id=session_id,
            provider_message_id=self.provider_message_id,
            from_phone_e164=self.from_phone_e164,
            to_phone_e164=self.to_phone_e164,
            kind=self.kind.to_proto(),
            text=self.text,
            sent_at=to_timestamp(self.sent_at),
            profile_name=self.profile_name,
            media=self.media.to_proto() if self.media is not None else None,
            in_reply_to=self.in_reply_to,
        )


@dataclass(frozen=True)
class StatusUpdate:
    """The provider's report that one of our messages changed state.

    ``message_id`` is ours when the provider echoes it (Cloud API
    ``biz_opaque_callback_data``), else empty and the ledger finds the message by
    ``provider_message_id``. ``recipient_phone_e164`` is the recipient as the provider
    knows them, which may differ from the number we sent to (WhatsApp ids of Brazilian
    mobiles often lack the ninth digit): match on the ids, never on the phone.
    ``status`` is UNSPECIFIED for provider states with no meaning here, kept in
    ``provider_status``; :func:`advance` ignores them. ``error`` is set for FAILED.
    """

    provider_message_id: str
    status: MessageStatus
    recipient_phone_e164: str
    occurred_at: datetime
    message_id: str = ""
    provider_number_id: str = ""
    provider_status: str = ""
    error: ProviderError | None = None

    def __post_init__(self) -> None:
        if not self.provider_message_id:
            raise ValueError("a status update needs the provider's message id")
        if self.recipient_phone_e164 and not is_e164(self.recipient_phone_e164):
            raise ValueError(f"{self.recipient_phone_e164!r} is not in E.164 form")
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")
