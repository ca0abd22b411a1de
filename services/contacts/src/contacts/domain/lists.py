"""Contact lists: named groups of a company's contacts that campaigns are sent to.

A list's name is unique in its company in the folded sense of
:func:`~contacts.domain.model.fold` ("Clientes VIP" and "clientes vip" are one name), since
people pick lists by name and two that differ only in case would be picked by mistake.

Membership is a set of contact ids (adding a member twice changes nothing). A deleted
contact stays a member, so that restoring it restores its lists too; listings of members
show live contacts only. ``member_count`` counts every membership, deleted contacts
included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from contacts.domain.model import (
    ContactValidationError,
    FieldIssue,
    IssueCode,
    RawValue,
    clean_text,
    fold,
    is_blank,
)

#: Most contact ids one membership change (request or event) carries.
MAX_MEMBERSHIP_BATCH: Final = 1000


def clean_list_name(value: RawValue) -> str:
    """A list name on one line, trimmed; ContactValidationError on field ``name`` when
    blank or longer than a contact name may be."""
    if is_blank(value):
        raise ContactValidationError(FieldIssue("name", IssueCode.REQUIRED, "a name is required"))
    return clean_text("name", value)


def list_name_key(name: str) -> str:
    """The form in which list names are compared for uniqueness."""
    return fold(name)


@dataclass(slots=True, kw_only=True)
class ContactList:
    """One list of one company. Build new ones with :meth:`create`."""

    id: str
    company_id: str
    name: str
    member_count: int = 0
    created_at: datetime
    updated_at: datetime

    @classmethod
    def create(cls, *, list_id: str, company_id: str, name: str, now: datetime) -> ContactList:
        """A new, empty list; ``name`` must come from :func:`clean_list_name`."""
        return cls(id=list_id, company_id=company_id, name=name, created_at=now, updated_at=now)

    @property
    def name_key(self) -> str:
        return list_name_key(self.name)

    def rename(self, name: str, now: datetime) -> bool:
        """Give the list a new (cleaned) name; False, and no change, if it is the same text."""
        if name == self.name:
            return False
        self.name = name
        self.updated_at = now
        return True
