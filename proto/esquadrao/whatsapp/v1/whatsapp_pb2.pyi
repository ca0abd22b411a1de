import datetime

from esquadrao.common.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MessageKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_KIND_UNSPECIFIED: _ClassVar[MessageKind]
    MESSAGE_KIND_TEXT: _ClassVar[MessageKind]
    MESSAGE_KIND_IMAGE: _ClassVar[MessageKind]
    MESSAGE_KIND_AUDIO: _ClassVar[MessageKind]
    MESSAGE_KIND_VIDEO: _ClassVar[MessageKind]
    MESSAGE_KIND_DOCUMENT: _ClassVar[MessageKind]
    MESSAGE_KIND_STICKER: _ClassVar[MessageKind]
    MESSAGE_KIND_LOCATION: _ClassVar[MessageKind]
    MESSAGE_KIND_CONTACTS: _ClassVar[MessageKind]
    MESSAGE_KIND_INTERACTIVE_REPLY: _ClassVar[MessageKind]

class MessageStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_STATUS_UNSPECIFIED: _ClassVar[MessageStatus]
    MESSAGE_STATUS_QUEUED: _ClassVar[MessageStatus]
    MESSAGE_STATUS_SENT: _ClassVar[MessageStatus]
    MESSAGE_STATUS_DELIVERED: _ClassVar[MessageStatus]
    MESSAGE_STATUS_READ: _ClassVar[MessageStatus]
    MESSAGE_STATUS_FAILED: _ClassVar[MessageStatus]
    MESSAGE_STATUS_UNKNOWN: _ClassVar[MessageStatus]
    MESSAGE_STATUS_EXPIRED: _ClassVar[MessageStatus]

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    SESSION_STATE_STOPPED: _ClassVar[SessionState]
    SESSION_STATE_STARTING: _ClassVar[SessionState]
    SESSION_STATE_PAIRING: _ClassVar[SessionState]
    SESSION_STATE_CONNECTED: _ClassVar[SessionState]
    SESSION_STATE_DISCONNECTED: _ClassVar[SessionState]
    SESSION_STATE_RECONNECTING: _ClassVar[SessionState]
    SESSION_STATE_FAILED: _ClassVar[SessionState]
    SESSION_STATE_BANNED: _ClassVar[SessionState]

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    BREAKER_STATE_CLOSED: _ClassVar[BreakerState]
    BREAKER_STATE_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_HALF_OPEN: _ClassVar[BreakerState]
MESSAGE_KIND_UNSPECIFIED: MessageKind
MESSAGE_KIND_TEXT: MessageKind
MESSAGE_KIND_IMAGE: MessageKind
MESSAGE_KIND_AUDIO: MessageKind
MESSAGE_KIND_VIDEO: MessageKind
MESSAGE_KIND_DOCUMENT: MessageKind
MESSAGE_KIND_STICKER: MessageKind
MESSAGE_KIND_LOCATION: MessageKind
MESSAGE_KIND_CONTACTS: MessageKind
MESSAGE_KIND_INTERACTIVE_REPLY: MessageKind
MESSAGE_STATUS_UNSPECIFIED: MessageStatus
MESSAGE_STATUS_QUEUED: MessageStatus
MESSAGE_STATUS_SENT: MessageStatus
MESSAGE_STATUS_DELIVERED: MessageStatus
MESSAGE_STATUS_READ: MessageStatus
MESSAGE_STATUS_FAILED: MessageStatus
MESSAGE_STATUS_UNKNOWN: MessageStatus
MESSAGE_STATUS_EXPIRED: MessageStatus
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_STOPPED: SessionState
SESSION_STATE_STARTING: SessionState
SESSION_STATE_PAIRING: SessionState
SESSION_STATE_CONNECTED: SessionState
SESSION_STATE_DISCONNECTED: SessionState
SESSION_STATE_RECONNECTING: SessionState
SESSION_STATE_FAILED: SessionState
SESSION_STATE_BANNED: SessionState
BREAKER_STATE_UNSPECIFIED: BreakerState
BREAKER_STATE_CLOSED: BreakerState
BREAKER_STATE_OPEN: BreakerState
BREAKER_STATE_HALF_OPEN: BreakerState

class MediaRef(_message.Message):
    __slots__ = ("ref", "mime_type", "sha256", "caption", "filename")
    REF_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    ref: str
    mime_type: str
    sha256: str
    caption: str
    filename: str
    def __init__(self, ref: _Optional[str] = ..., mime_type: _Optional[str] = ..., sha256: _Optional[str] = ..., caption: _Optional[str] = ..., filename: _Optional[str] = ...) -> None: ...

class MessageReceived(_message.Message):
    __slots__ = ("session_id", "provider_message_id", "from_phone_e164", "to_phone_e164", "kind", "text", "sent_at", "profile_name", "media", "in_reply_to")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_PHONE_E164_FIELD_NUMBER: _ClassVar[int]
    TO_PHONE_E164_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    PROFILE_NAME_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    IN_REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    provider_message_id: str
    from_phone_e164: str
    to_phone_e164: str
    kind: MessageKind
    text: str
    sent_at: _timestamp_pb2.Timestamp
    profile_name: str
    media: MediaRef
    in_reply_to: str
    def __init__(self, session_id: _Optional[str] = ..., provider_message_id: _Optional[str] = ..., from_phone_e164: _Optional[str] = ..., to_phone_e164: _Optional[str] = ..., kind: _Optional[_Union[MessageKind, str]] = ..., text: _Optional[str] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., profile_name: _Optional[str] = ..., media: _Optional[_Union[MediaRef, _Mapping]] = ..., in_reply_to: _Optional[str] = ...) -> None: ...

class Origin(_message.Message):
    __slots__ = ("kind", "id", "item_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    kind: str
    id: str
    item_id: str
    def __init__(self, kind: _Optional[str] = ..., id: _Optional[str] = ..., item_id: _Optional[str] = ...) -> None: ...

class ProviderError(_message.Message):
    __slots__ = ("code", "title", "detail")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    code: str
    title: str
    detail: str
    def __init__(self, code: _Optional[str] = ..., title: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class MessageStatusChanged(_message.Message):
    __slots__ = ("message_id", "session_id", "provider_message_id", "to_phone_e164", "status", "previous_status", "error", "changed_at", "origin")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TO_PHONE_E164_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    session_id: str
    provider_message_id: str
    to_phone_e164: str
    status: MessageStatus
    previous_status: MessageStatus
    error: ProviderError
    changed_at: _timestamp_pb2.Timestamp
    origin: Origin
    def __init__(self, message_id: _Optional[str] = ..., session_id: _Optional[str] = ..., provider_message_id: _Optional[str] = ..., to_phone_e164: _Optional[str] = ..., status: _Optional[_Union[MessageStatus, str]] = ..., previous_status: _Optional[_Union[MessageStatus, str]] = ..., error: _Optional[_Union[ProviderError, _Mapping]] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., origin: _Optional[_Union[Origin, _Mapping]] = ...) -> None: ...

class SessionStateChanged(_message.Message):
    __slots__ = ("session_id", "state", "previous_state", "reason", "changed_at", "phone_e164")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    PHONE_E164_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    state: SessionState
    previous_state: SessionState
    reason: str
    changed_at: _timestamp_pb2.Timestamp
    phone_e164: str
    def __init__(self, session_id: _Optional[str] = ..., state: _Optional[_Union[SessionState, str]] = ..., previous_state: _Optional[_Union[SessionState, str]] = ..., reason: _Optional[str] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., phone_e164: _Optional[str] = ...) -> None: ...

class SessionHealthChanged(_message.Message):
    __slots__ = ("session_id", "breaker_state", "previous_breaker_state", "reason", "error", "changed_at")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    breaker_state: BreakerState
    previous_breaker_state: BreakerState
    reason: str
    error: ProviderError
    changed_at: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., breaker_state: _Optional[_Union[BreakerState, str]] = ..., previous_breaker_state: _Optional[_Union[BreakerState, str]] = ..., reason: _Optional[str] = ..., error: _Optional[_Union[ProviderError, _Mapping]] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WhatsappEvent(_message.Message):
    __slots__ = ("envelope", "message_received", "message_status_changed", "session_state_changed", "session_health_changed")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_STATUS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    SESSION_STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    SESSION_HEALTH_CHANGED_FIELD_NUMBER: _ClassVar[int]
    envelope: _envelope_pb2.Envelope
    message_received: MessageReceived
    message_status_changed: MessageStatusChanged
    session_state_changed: SessionStateChanged
    session_health_changed: SessionHealthChanged
    def __init__(self, envelope: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., message_received: _Optional[_Union[MessageReceived, _Mapping]] = ..., message_status_changed: _Optional[_Union[MessageStatusChanged, _Mapping]] = ..., session_state_changed: _Optional[_Union[SessionStateChanged, _Mapping]] = ..., session_health_changed: _Optional[_Union[SessionHealthChanged, _Mapping]] = ...) -> None: ...
