import datetime

from esquadrao.common.v1 import envelope_pb2 as _envelope_pb2
from esquadrao.whatsapp.v1 import whatsapp_pb2 as _whatsapp_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_ACTION_UNSPECIFIED: _ClassVar[SessionAction]
    SESSION_ACTION_START: _ClassVar[SessionAction]
    SESSION_ACTION_STOP: _ClassVar[SessionAction]
    SESSION_ACTION_RECONNECT: _ClassVar[SessionAction]
    SESSION_ACTION_RESET_BREAKER: _ClassVar[SessionAction]
SESSION_ACTION_UNSPECIFIED: SessionAction
SESSION_ACTION_START: SessionAction
SESSION_ACTION_STOP: SessionAction
SESSION_ACTION_RECONNECT: SessionAction
SESSION_ACTION_RESET_BREAKER: SessionAction

class TextContent(_message.Message):
    __slots__ = ("body", "preview_url")
    BODY_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_URL_FIELD_NUMBER: _ClassVar[int]
    body: str
    preview_url: bool
    def __init__(self, body: _Optional[str] = ..., preview_url: _Optional[bool] = ...) -> None: ...

class TemplateContent(_message.Message):
    __slots__ = ("name", "language", "body_parameters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    BODY_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    language: str
    body_parameters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., language: _Optional[str] = ..., body_parameters: _Optional[_Iterable[str]] = ...) -> None: ...

class MediaContent(_message.Message):
    __slots__ = ("kind", "ref", "caption", "filename", "mime_type")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    kind: _whatsapp_pb2.MessageKind
    ref: str
    caption: str
    filename: str
    mime_type: str
    def __init__(self, kind: _Optional[_Union[_whatsapp_pb2.MessageKind, str]] = ..., ref: _Optional[str] = ..., caption: _Optional[str] = ..., filename: _Optional[str] = ..., mime_type: _Optional[str] = ...) -> None: ...

class SendMessage(_message.Message):
    __slots__ = ("message_id", "session_id", "pool_id", "to_phone_e164", "text", "template", "media", "not_after", "origin", "reply_to")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    TO_PHONE_E164_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    session_id: str
    pool_id: str
    to_phone_e164: str
    text: TextContent
    template: TemplateContent
    media: MediaContent
    not_after: _timestamp_pb2.Timestamp
    origin: _whatsapp_pb2.Origin
    reply_to: str
    def __init__(self, message_id: _Optional[str] = ..., session_id: _Optional[str] = ..., pool_id: _Optional[str] = ..., to_phone_e164: _Optional[str] = ..., text: _Optional[_Union[TextContent, _Mapping]] = ..., template: _Optional[_Union[TemplateContent, _Mapping]] = ..., media: _Optional[_Union[MediaContent, _Mapping]] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., origin: _Optional[_Union[_whatsapp_pb2.Origin, _Mapping]] = ..., reply_to: _Optional[str] = ...) -> None: ...

class SessionControl(_message.Message):
    __slots__ = ("session_id", "action", "reason")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    action: SessionAction
    reason: str
    def __init__(self, session_id: _Optional[str] = ..., action: _Optional[_Union[SessionAction, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class WhatsappCommand(_message.Message):
    __slots__ = ("envelope", "send_message", "session_control")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    SEND_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SESSION_CONTROL_FIELD_NUMBER: _ClassVar[int]
    envelope: _envelope_pb2.Envelope
    send_message: SendMessage
    session_control: SessionControl
    def __init__(self, envelope: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., send_message: _Optional[_Union[SendMessage, _Mapping]] = ..., session_control: _Optional[_Union[SessionControl, _Mapping]] = ...) -> None: ...
