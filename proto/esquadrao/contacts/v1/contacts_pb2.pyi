import datetime

from esquadrao.common.v1 import envelope_pb2 as _envelope_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConsentSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_SOURCE_UNSPECIFIED: _ClassVar[ConsentSource]
    CONSENT_SOURCE_API: _ClassVar[ConsentSource]
    CONSENT_SOURCE_INBOUND_KEYWORD: _ClassVar[ConsentSource]
    CONSENT_SOURCE_IMPORT: _ClassVar[ConsentSource]
CONSENT_SOURCE_UNSPECIFIED: ConsentSource
CONSENT_SOURCE_API: ConsentSource
CONSENT_SOURCE_INBOUND_KEYWORD: ConsentSource
CONSENT_SOURCE_IMPORT: ConsentSource

class Contact(_message.Message):
    __slots__ = ("id", "company_id", "phone_e164", "name", "email", "tags", "condominio", "endereco", "cargo", "custom_fields", "opted_out", "opted_out_at", "opt_out_reason", "created_at", "updated_at", "deleted_at", "version")
    class CustomFieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    COMPANY_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_E164_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CONDOMINIO_FIELD_NUMBER: _ClassVar[int]
    ENDERECO_FIELD_NUMBER: _ClassVar[int]
    CARGO_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELDS_FIELD_NUMBER: _ClassVar[int]
    OPTED_OUT_FIELD_NUMBER: _ClassVar[int]
    OPTED_OUT_AT_FIELD_NUMBER: _ClassVar[int]
    OPT_OUT_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    DELETED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    company_id: str
    phone_e164: str
    name: str
    email: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    condominio: str
    endereco: str
    cargo: str
    custom_fields: _containers.ScalarMap[str, str]
    opted_out: bool
    opted_out_at: _timestamp_pb2.Timestamp
    opt_out_reason: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    deleted_at: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, id: _Optional[str] = ..., company_id: _Optional[str] = ..., phone_e164: _Optional[str] = ..., name: _Optional[str] = ..., email: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., condominio: _Optional[str] = ..., endereco: _Optional[str] = ..., cargo: _Optional[str] = ..., custom_fields: _Optional[_Mapping[str, str]] = ..., opted_out: _Optional[bool] = ..., opted_out_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., opt_out_reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deleted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class ContactCreated(_message.Message):
    __slots__ = ("contact",)
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    contact: Contact
    def __init__(self, contact: _Optional[_Union[Contact, _Mapping]] = ...) -> None: ...

class ContactUpdated(_message.Message):
    __slots__ = ("contact", "changed_fields")
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    contact: Contact
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, contact: _Optional[_Union[Contact, _Mapping]] = ..., changed_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class ContactDeleted(_message.Message):
    __slots__ = ("contact_id", "deleted_at", "version")
    CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    contact_id: str
    deleted_at: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, contact_id: _Optional[str] = ..., deleted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class ContactRestored(_message.Message):
    __slots__ = ("contact",)
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    contact: Contact
    def __init__(self, contact: _Optional[_Union[Contact, _Mapping]] = ...) -> None: ...

class ContactOptedOut(_message.Message):
    __slots__ = ("contact_id", "phone_e164", "reason", "source", "opted_out_at", "version")
    CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_E164_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OPTED_OUT_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    contact_id: str
    phone_e164: str
    reason: str
    source: ConsentSource
    opted_out_at: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, contact_id: _Optional[str] = ..., phone_e164: _Optional[str] = ..., reason: _Optional[str] = ..., source: _Optional[_Union[ConsentSource, str]] = ..., opted_out_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class ContactOptedIn(_message.Message):
    __slots__ = ("contact_id", "phone_e164", "source", "opted_in_at", "version")
    CONTACT_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_E164_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OPTED_IN_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    contact_id: str
    phone_e164: str
    source: ConsentSource
    opted_in_at: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, contact_id: _Optional[str] = ..., phone_e164: _Optional[str] = ..., source: _Optional[_Union[ConsentSource, str]] = ..., opted_in_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class ContactListMembershipChanged(_message.Message):
    __slots__ = ("list_id", "added_contact_ids", "removed_contact_ids")
    LIST_ID_FIELD_NUMBER: _ClassVar[int]
    ADDED_CONTACT_IDS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_CONTACT_IDS_FIELD_NUMBER: _ClassVar[int]
    list_id: str
    added_contact_ids: _containers.RepeatedScalarFieldContainer[str]
    removed_contact_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, list_id: _Optional[str] = ..., added_contact_ids: _Optional[_Iterable[str]] = ..., removed_contact_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ContactImportCompleted(_message.Message):
    __slots__ = ("job_id", "processed", "created", "updated", "skipped", "errors")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    processed: int
    created: int
    updated: int
    skipped: int
    errors: int
    def __init__(self, job_id: _Optional[str] = ..., processed: _Optional[int] = ..., created: _Optional[int] = ..., updated: _Optional[int] = ..., skipped: _Optional[int] = ..., errors: _Optional[int] = ...) -> None: ...

class ContactEvent(_message.Message):
    __slots__ = ("envelope", "contact_created", "contact_updated", "contact_deleted", "contact_restored", "contact_opted_out", "contact_opted_in", "contact_list_membership_changed", "contact_import_completed")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    CONTACT_CREATED_FIELD_NUMBER: _ClassVar[int]
    CONTACT_UPDATED_FIELD_NUMBER: _ClassVar[int]
    CONTACT_DELETED_FIELD_NUMBER: _ClassVar[int]
    CONTACT_RESTORED_FIELD_NUMBER: _ClassVar[int]
    CONTACT_OPTED_OUT_FIELD_NUMBER: _ClassVar[int]
    CONTACT_OPTED_IN_FIELD_NUMBER: _ClassVar[int]
    CONTACT_LIST_MEMBERSHIP_CHANGED_FIELD_NUMBER: _ClassVar[int]
    CONTACT_IMPORT_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    envelope: _envelope_pb2.Envelope
    contact_created: ContactCreated
    contact_updated: ContactUpdated
    contact_deleted: ContactDeleted
    contact_restored: ContactRestored
    contact_opted_out: ContactOptedOut
    contact_opted_in: ContactOptedIn
    contact_list_membership_changed: ContactListMembershipChanged
    contact_import_completed: ContactImportCompleted
    def __init__(self, envelope: _Optional[_Union[_envelope_pb2.Envelope, _Mapping]] = ..., contact_created: _Optional[_Union[ContactCreated, _Mapping]] = ..., contact_updated: _Optional[_Union[ContactUpdated, _Mapping]] = ..., contact_deleted: _Optional[_Union[ContactDeleted, _Mapping]] = ..., contact_restored: _Optional[_Union[ContactRestored, _Mapping]] = ..., contact_opted_out: _Optional[_Union[ContactOptedOut, _Mapping]] = ..., contact_opted_in: _Optional[_Union[ContactOptedIn, _Mapping]] = ..., contact_list_membership_changed: _Optional[_Union[ContactListMembershipChanged, _Mapping]] = ..., contact_import_completed: _Optional[_Union[ContactImportCompleted, _Mapping]] = ...) -> None: ...
