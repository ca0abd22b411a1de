"""Request and response bodies of the whatsapp API.

Request models refuse unknown members (a misspelt field is an error, not silently
ignored) and check what a schema can express; what depends on other values (credentials by
provider, exactly one content kind) is checked by their methods, which raise a 422 naming
the field (``body.credentials.app_secret``, ``body.text``).

Credentials go in and never come out: responses say ``has_credentials`` and nothing more,
and a refused credentials document is reported by field and reason, never by value.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Final, Literal, TypeAlias, cast, get_args

from esquadrao.whatsapp.v1 import commands_pb2
from esquadrao_common.errors import FieldError, ValidationProblem, field_path
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from whatsapp.adapters.repositories import SessionView
from whatsapp.domain.ledger import LedgerEntry, Priority
from whatsapp.domain.messages import (
    MediaKind,
    MessageStatus,
    e164_from_digits,
    outbound_from_command,
    to_timestamp,
)
from whatsapp.domain.sessions import ProviderKind, SessionState
from whatsapp.service_layer.sessions import (
    SessionChanges,
    SessionDraft,
    SessionMetrics,
)

#: Characters a phone may be written with besides its digits.
_PHONE_SPELLING: Final = re.compile(r"\+?[\d\s().-]+")
#: The session id of ledger entries that never had a session (an unroutable pool send).
_NO_SESSION: Final = str(uuid.UUID(int=0))


def international_phone(raw: str) -> str:
    """``raw`` in E.164 form. Digits with or without ``+``, spaces, dots, dashes and
    parentheses allowed; the country code is required (nothing is guessed)."""
    if _PHONE_SPELLING.fullmatch(raw.strip()) is None:
        raise ValueError("a phone is digits with the country code, optionally after a '+'")
    return e164_from_digits(raw)


#: A phone as clients write it, stored in E.164 form.
Phone: TypeAlias = Annotated[
    str,
    Field(examples=["+5511987654321", "55 11 98765-4321"]),
    AfterValidator(international_phone),
]
Name: TypeAlias = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]
PoolId: TypeAlias = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)]
Profile: TypeAlias = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)]
Secret: TypeAlias = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4096)
]
#: A number for a limit override (a JSON number; ``true`` or ``"5"`` are refused).
LimitValue: TypeAlias = Annotated[float, Field(strict=True, allow_inf_nan=False)]
LimitOverrides: TypeAlias = Annotated[
    dict[str, LimitValue],
    Field(
        description="Changes to the profile's limits: `rate` and `burst` (messages per "
        "second, and at once), `pair_burst` and `pair_interval` (to one recipient: at once, "
        "then one per that many seconds).",
        examples=[{"rate": 20, "pair_interval": 10}],
    ),
]
#: Ledger statuses, as the API spells them.
StatusName: TypeAlias = Literal[
    "queued", "sent", "delivered", "read", "failed", "unknown", "expired"
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- sessions -----------------------------------------------------------------------------


class CloudCredentialsIn(_Input):
    """A Cloud API number's credentials (Meta's app dashboard, WhatsApp > API Setup)."""

    access_token: Secret = Field(description="A system user's permanent access token.")
    phone_number_id: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)
    ] = Field(description="The number's id; unique among live sessions.")
    app_secret: Secret = Field(description="The app secret that signs the webhooks.")
    verify_token: Secret = Field(description="The token Meta echoes to subscribe the webhook.")


class SimCredentialsIn(_Input):
    """A ``sim`` session's saved login; without it the session pairs when started."""

    saved: Secret | None = Field(
        default=None, description="What the simulator gave when the session last paired."
    )


def credentials_document(
    provider: ProviderKind, raw: dict[str, Any] | None, *, required: bool
) -> dict[str, str] | None:
    """``raw`` checked against ``provider``'s credentials: the document to seal, None when
    none was given. A 422 on ``body.credentials[.member]`` when it does not fit, or is
    missing and ``required`` (cloud sessions cannot run without theirs)."""
    field = "body.credentials"
    if raw is None:
        if required and provider is ProviderKind.CLOUD:
            raise ValidationProblem.for_field(
                field,
                "cloud sessions need access_token, phone_number_id, app_secret and verify_token",
                type="missing",
            )
        return None
    model = CloudCredentialsIn if provider is ProviderKind.CLOUD else SimCredentialsIn
    try:
        parsed = model.model_validate(raw)
    except ValidationError as error:
        raise ValidationProblem(
            [
                FieldError(
                    field=field_path(("body", "credentials", *problem["loc"])),
                    message=problem["msg"],
                    type=problem["type"],
                )
                for problem in error.errors(include_url=False, include_input=False)
            ]
        ) from None
    return parsed.model_dump(exclude_none=True)


class SessionIn(_Input):
    """A WhatsApp number to connect."""

    name: Name
    provider: ProviderKind = Field(
        description="`cloud`: the WhatsApp Business Cloud API; `sim`: the simulator's "
        "WhatsApp-Web-like sessions."
    )
    credentials: dict[str, Any] | None = Field(
        default=None,
        description="cloud: `access_token`, `phone_number_id`, `app_secret`, `verify_token` "
        "(all required); sim: optionally `saved`. Stored encrypted, never returned.",
    )
    phone_e164: Phone | None = Field(
        default=None, description="The number, when known (sim sessions learn it on pairing)."
    )
    pool_id: PoolId = Field(
        default="", description="Sends to this pool may go through this session."
    )
    pool_priority: int = Field(
        default=0, ge=0, le=1_000_000, description="Lower is used first within the pool."
    )
    profile: Profile = Field(
        default="",
        description="Named limits: `cloud`, `sim` or `lifted`; empty: the service default, "
        "else the provider's own.",
    )
    limit_overrides: LimitOverrides = Field(default_factory=dict)
    start: bool = Field(default=False, description="Start it right away.")

    def draft(self) -> SessionDraft:
        """The session to create; a 422 for credentials that do not fit the provider."""
        document = credentials_document(self.provider, self.credentials, required=True)
        return SessionDraft(
            name=self.name,
            provider=self.provider,
            credentials=document or None,
            phone_e164=self.phone_e164 or "",
            pool_id=self.pool_id,
            pool_priority=self.pool_priority,
            profile=self.profile,
            limit_overrides=self.limit_overrides,
            start=self.start,
        )


class SessionPatchIn(_Input):
    """Changes to a session: members left out stay as they are; ``null`` clears
    ``pool_id``, ``profile`` and ``limit_overrides``; ``credentials`` replaces the whole
    document (for sim, ``{}`` forgets the saved login: the session pairs again)."""

    name: Name | None = None
    pool_id: PoolId | None = None
    pool_priority: int | None = Field(default=None, ge=0, le=1_000_000)
    profile: Profile | None = None
    limit_overrides: LimitOverrides | None = None
    credentials: dict[str, Any] | None = None

    def changes(self, provider: ProviderKind) -> SessionChanges:
        """The changes for a session of ``provider``; a 422 for a ``null`` name or
        credentials, or credentials that do not fit the provider."""
        given = self.model_fields_set
        for name in ("name", "pool_priority", "credentials"):
            if name in given and getattr(self, name) is None:
                raise ValidationProblem.for_field(f"body.{name}", f"{name} cannot be null")
        credentials = None
        if self.credentials is not None:
            credentials = credentials_document(provider, self.credentials, required=True)
        return SessionChanges(
            name=self.name,
            pool_id="" if "pool_id" in given and self.pool_id is None else self.pool_id,
            pool_priority=self.pool_priority,
            profile="" if "profile" in given and self.profile is None else self.profile,
            limit_overrides=(
                {}
                if "limit_overrides" in given and self.limit_overrides is None
                else self.limit_overrides
            ),
            credentials=credentials,
        )


class SessionOut(BaseModel):
    """A session's configuration and its last known state; never its credentials."""

    id: str
    name: str
    provider: ProviderKind
    phone_e164: str = Field(description="Empty until known.")
    provider_number_id: str = Field(description="Cloud API phone number id; empty for sim.")
    pool_id: str
    pool_priority: int
    profile: str
    limit_overrides: dict[str, Any]
    desired_running: bool = Field(description="Whether an operator wants it connected.")
    state: SessionState = Field(description="The connection state the worker last reported.")
    state_reason: str
    breaker_state: str = Field(description="closed, open or half_open.")
    has_credentials: bool
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = Field(description="Set while the session is deleted.")
    version: int = Field(description="Starts at 1 and grows with every change.")

    @classmethod
    def of(cls, view: SessionView) -> SessionOut:
        session = view.session
        assert session.created_at is not None and session.updated_at is not None
        return cls(
            id=session.id,
            name=session.name,
            provider=session.provider,
            phone_e164=session.phone_e164,
            provider_number_id=session.provider_number_id,
            pool_id=session.pool_id,
            pool_priority=session.pool_priority,
            profile=session.profile,
            limit_overrides=dict(session.limit_overrides),
            desired_running=session.desired_running,
            state=session.state,
            state_reason=session.state_reason,
            breaker_state=session.breaker_state,
            has_credentials=view.has_credentials,
            created_at=session.created_at,
            updated_at=session.updated_at,
            deleted_at=session.deleted_at,
            version=session.version,
        )


class BreakerOut(BaseModel):
    state: str = Field(description="closed, open or half_open.")
    reason: str


class SessionStatusOut(BaseModel):
    """Where the session's connection is, as its worker last reported it."""

    session_id: str
    state: SessionState
    reason: str
    since: datetime | None = Field(description="When the state last changed.")
    desired_running: bool
    phone_e164: str
    connected_since: datetime | None
    reconnect_attempts: int = Field(description="Attempts in a row since the last connection.")
    next_reconnect_at: datetime | None
    breaker: BreakerOut
    owner: str = Field(description="The worker driving it (host:pid); empty when none.")

    @classmethod
    def of(cls, view: SessionView) -> SessionStatusOut:
        session = view.session
        return cls(
            session_id=session.id,
            state=session.state,
            reason=session.state_reason,
            since=view.state_changed_at,
            desired_running=session.desired_running,
            phone_e164=session.phone_e164,
            connected_since=session.connected_since,
            reconnect_attempts=session.reconnect_attempts,
            next_reconnect_at=session.next_reconnect_at,
            breaker=BreakerOut(state=session.breaker_state, reason=session.breaker_reason),
            owner=view.owner,
        )


class PairingOut(BaseModel):
    """Link the phone: scan ``qr`` in WhatsApp (Linked devices), or type ``code``."""

    qr: str
    code: str
    expires_at: datetime | None = Field(description="A new code replaces this one then.")


class SessionMetricsOut(BaseModel):
    metrics: dict[str, Any] = Field(
        description="The worker's figures (uptime, processed, per minute, average response "
        "time, errors, reconnects); empty before its first flush."
    )
    metrics_at: datetime | None = Field(description="When the worker flushed them.")
    messages: dict[str, int] = Field(description="The session's ledger entries by status.")

    @classmethod
    def of(cls, metrics: SessionMetrics) -> SessionMetricsOut:
        return cls(
            metrics=metrics.figures,
            metrics_at=metrics.flushed_at,
            messages={status.name.lower(): n for status, n in metrics.messages.items()},
        )


class ControlIn(_Input):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] = Field(
        default="", description="Why, for the session's state history."
    )


class ControlOut(BaseModel):
    """The request was queued for the worker driving the session; follow its effect in
    ``GET /v1/sessions/{id}/status``."""

    session_id: str
    action: str = Field(description="start, stop, reconnect or reset_breaker.")
    command_id: str = Field(description="The event id of the queued SessionControl.")


# --- messages -----------------------------------------------------------------------------


class TextIn(_Input):
    body: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    preview_url: bool = Field(default=False, description="Preview the first URL in the body.")


class TemplateIn(_Input):
    """An approved template: the only content allowed 24 hours after the customer last
    wrote."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    language: Annotated[str, StringConstraints(min_length=2, max_length=15)] = Field(
        examples=["pt_BR"]
    )
    body_parameters: list[Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=list, max_length=100, description="Values of {{1}}, {{2}}, ..."
    )


class MediaIn(_Input):
    kind: MediaKind
    ref: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048)] = (
        Field(description="A public http(s) URL, or the provider's media id.")
    )
    caption: Annotated[str, StringConstraints(max_length=1024)] = Field(
        default="", description="Images, videos and documents only."
    )
    filename: Annotated[str, StringConstraints(max_length=240)] = Field(
        default="", description="Documents only."
    )
    mime_type: Annotated[str, StringConstraints(max_length=255)] = ""


class OriginIn(_Input):
    """Where the message comes from; copied into its status events."""

    kind: Annotated[str, StringConstraints(max_length=64)] = Field(
        default="", examples=["ticket", "campaign"]
    )
    id: Annotated[str, StringConstraints(max_length=128)] = ""
    item_id: Annotated[str, StringConstraints(max_length=128)] = ""


class MessageIn(_Input):
    """One message to send, through a session or any healthy session of a pool."""

    message_id: uuid.UUID | None = Field(
        default=None,
        description="Your id for the message (generated when absent). Sending the same id "
        "again never sends twice: it answers the message as it stands.",
    )
    session_id: uuid.UUID | None = Field(default=None, description="Send from this session...")
    pool_id: PoolId | None = Field(default=None, description="...or from one of this pool.")
    to: Phone
    text: TextIn | None = None
    template: TemplateIn | None = None
    media: MediaIn | None = None
    not_after: AwareDatetime | None = Field(
        default=None, description="Not sent after this time: it expires instead."
    )
    origin: OriginIn | None = None
    reply_to: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        default=None, description="The provider message id this message quotes."
    )
    priority: Literal["interactive", "bulk"] = Field(
        default="interactive",
        description="interactive (agent replies, transactional) is always served before bulk.",
    )

    @property
    def priority_level(self) -> Priority:
        return Priority.BULK if self.priority == "bulk" else Priority.INTERACTIVE

    def command(self, message_id: str, now: datetime) -> commands_pb2.SendMessage:
        """The ``SendMessage`` to stage; a 422 naming the field for what the schema could
        not check (one sender, one content kind, content WhatsApp refuses, a past
        ``not_after``)."""
        senders = [name for name in ("session_id", "pool_id") if getattr(self, name)]
        if len(senders) != 1:
            raise ValidationProblem.for_field(
                f"body.{senders[-1] if senders else 'session_id'}",
                "give exactly one of session_id and pool_id",
            )
        contents = [name for name in ("text", "template", "media") if getattr(self, name)]
        if len(contents) != 1:
            raise ValidationProblem.for_field(
                f"body.{contents[-1] if contents else 'text'}",
                "give exactly one of text, template and media",
            )
        if self.not_after is not None and self.not_after <= now:
            raise ValidationProblem.for_field("body.not_after", "must be in the future")
        command = commands_pb2.SendMessage(
            message_id=message_id,
            session_id=str(self.session_id) if self.session_id else "",
            pool_id=self.pool_id or "",
            to_phone_e164=self.to,
            reply_to=self.reply_to or "",
        )
        if self.text is not None:
            command.text.CopyFrom(
                commands_pb2.TextContent(body=self.text.body, preview_url=self.text.preview_url)
            )
        elif self.template is not None:
            command.template.CopyFrom(
                commands_pb2.TemplateContent(
                    name=self.template.name,
                    language=self.template.language,
                    body_parameters=self.template.body_parameters,
                )
            )
        elif self.media is not None:
            command.media.CopyFrom(
                commands_pb2.MediaContent(
                    kind=self.media.kind.message_kind.to_proto(),
                    ref=self.media.ref,
                    caption=self.media.caption,
                    filename=self.media.filename,
                    mime_type=self.media.mime_type,
                )
            )
        if self.not_after is not None:
            command.not_after.CopyFrom(to_timestamp(self.not_after))
        if self.origin is not None:
            command.origin.kind = self.origin.kind
            command.origin.id = self.origin.id
            command.origin.item_id = self.origin.item_id
        try:
            outbound_from_command(command)
        except ValueError as error:
            raise ValidationProblem.for_field(f"body.{contents[0]}", str(error)) from None
        return command


class MessageAcceptedOut(BaseModel):
    """The message was queued for its session's worker; follow it at
    ``GET /v1/messages/{message_id}`` or on ``whatsapp.events.v1``."""

    message_id: str
    status: Literal["accepted"] = "accepted"


class ProviderErrorOut(BaseModel):
    code: str
    title: str
    detail: str


class OriginOut(BaseModel):
    kind: str
    id: str
    item_id: str


class MessageOut(BaseModel):
    """A message's entry in the send ledger."""

    message_id: str
    session_id: str | None = Field(description="Null when no session could take it.")
    pool_id: str
    to: str
    priority: Literal["interactive", "bulk"]
    status: StatusName
    provider_message_id: str = Field(description="Empty until the provider accepted it.")
    attempts: int = Field(description="Times it was handed to the provider.")
    error: ProviderErrorOut | None
    origin: OriginOut
    queued_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None = Field(description="When a refused send is retried.")
    not_after: datetime | None

    @classmethod
    def of(cls, entry: LedgerEntry) -> MessageOut:
        error = entry.error
        return cls(
            message_id=entry.message_id,
            session_id=None if entry.session_id == _NO_SESSION else entry.session_id,
            pool_id=entry.pool_id,
            to=entry.to_phone_e164,
            priority="bulk" if entry.priority is Priority.BULK else "interactive",
            status=status_name(entry.status),
            provider_message_id=entry.provider_message_id,
            attempts=entry.attempts,
            error=(
                ProviderErrorOut(code=error.code, title=error.title, detail=error.detail)
                if error is not None
                else None
            ),
            origin=OriginOut(
                kind=entry.origin.kind, id=entry.origin.id, item_id=entry.origin.item_id
            ),
            queued_at=entry.queued_at,
            updated_at=entry.updated_at,
            next_attempt_at=entry.next_attempt_at,
            not_after=entry.not_after,
        )


def status_name(status: MessageStatus) -> StatusName:
    """The API's name of a stored status (UNSPECIFIED is never stored)."""
    name = status.name.lower()
    if name not in get_args(StatusName):
        raise ValueError(f"status {status.name} is never stored")
    return cast(StatusName, name)


def ledger_status(name: StatusName) -> MessageStatus:
    return MessageStatus[name.upper()]
