"""What the contacts handlers refuse to do, as exceptions the entrypoints translate.

The HTTP API turns them into problem documents (404, 409); invalid input is
:class:`~contacts.domain.model.ContactValidationError` (422), and a data change asked of a
deleted contact is :class:`~contacts.domain.model.ContactIsDeleted` (409).
"""

from __future__ import annotations

from contacts.domain.model import ContactValidationError


class ContactsError(Exception):
    """Base of the handlers' refusals."""


class NotFoundError(ContactsError):
    """The company has no ``kind`` (``"contact"``, ``"list"``, ``"custom field"``) with this
    id; another company's is reported the same way."""

    def __init__(self, kind: str, identifier: str) -> None:
        super().__init__(f"{kind} {identifier} does not exist")
        self.kind = kind
        self.identifier = identifier


class DuplicatePhone(ContactsError):
    """A contact of the company already has this phone (``existing_deleted``: and it is
    deleted, so the client may restore it rather than create it again)."""

    def __init__(self, phone_e164: str, existing_id: str, *, existing_deleted: bool) -> None:
        state = "a deleted contact" if existing_deleted else "a contact"
        super().__init__(f"{state} with phone {phone_e164} exists")
        self.phone_e164 = phone_e164
        self.existing_id = existing_id
        self.existing_deleted = existing_deleted


class DuplicateListName(ContactsError):
    """The company has a list with this name already (compared case and accent folded)."""

    def __init__(self, name: str, existing_id: str) -> None:
        super().__init__(f"a contact list named {name!r} exists")
        self.existing_id = existing_id


class FieldTypeChange(ContactsError):
    """A custom field's type cannot change: stored values were checked against the old one."""

    def __init__(self, key: str, current: str, requested: str) -> None:
        super().__init__(
            f"custom field {key!r} is a {current} field; its type cannot become {requested} "
            "(define a field with a new key instead)"
        )
        self.key = key


class FieldInUse(ContactsError):
    """A custom field cannot be removed while contacts hold values for it."""

    def __init__(self, key: str, contacts_with_values: int) -> None:
        super().__init__(
            f"{contacts_with_values} contacts have a value for custom field {key!r}; "
            "clear those values before removing the field"
        )
        self.key = key
        self.contacts_with_values = contacts_with_values


class DraftRejected(ContactValidationError):
    """Draft number ``index`` of a batch cannot apply to the contact with its phone (its
    tags added to the contact's would be too many); carries the draft's issues."""

    def __init__(self, index: int, error: ContactValidationError) -> None:
        super().__init__(*error.issues)
        self.index = index
