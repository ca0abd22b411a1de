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

class WhatsappEvent(_message.Message):
    __slots__ = ("envelope", "message_received")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    envelope: _envelope_pb2.Envelope
    message_received: MessageReceived
    def __init__(self, envelope: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., message_received: _Optional[_Union[MessageReceived, _Mapping]] = ...) -> None: ...
