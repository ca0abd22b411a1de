"""Handlers of a company's custom field definitions.

A definition's key is its identity (templates write ``{bloco}``, filters and imports name
``bloco``), so a definition is put by key. Its label and, for a choice, its options may
change at any time; values already stored are kept as they are. Its type may not change,
since stored values were validated against the old type: a new type needs a new key.
A definition is removed only when no contact holds a value for it, so no contact carries
a value nobody can read or change.
"""

from __future__ import annotations

from datetime import datetime

from contacts.domain.model import CustomFieldDefinition
from contacts.service_layer.errors import FieldInUse, FieldTypeChange, NotFoundError
from contacts.service_layer.unit_of_work import ContactsUnitOfWork


async def list_definitions(uow: ContactsUnitOfWork, company_id: str) -> list[CustomFieldDefinition]:
    """The company's definitions, by key."""
    return await uow.fields.all(company_id)


async def get_definition(
    uow: ContactsUnitOfWork, company_id: str, key: str
) -> CustomFieldDefinition:
    definition = await uow.fields.get(company_id, key)
    if definition is None:
        raise NotFoundError("custom field", key)
    return definition


async def put_definition(
    uow: ContactsUnitOfWork, company_id: str, definition: CustomFieldDefinition, *, now: datetime
) -> bool:
    """Create the definition, or change its label and options; True when it was created.

    FieldTypeChange when a definition of this key exists with another type.
    """
    current = await uow.fields.get(company_id, definition.key, lock=True)
    if current is not None and current.type is not definition.type:
        raise FieldTypeChange(definition.key, current.type.value, definition.type.value)
    await uow.fields.put(company_id, definition, now)
    return current is None


async def delete_definition(uow: ContactsUnitOfWork, company_id: str, key: str) -> None:
    """Remove the definition; NotFoundError, or FieldInUse while contacts hold values."""
    if await uow.fields.get(company_id, key, lock=True) is None:
        raise NotFoundError("custom field", key)
    in_use = await uow.contacts.count_with_field(company_id, key)
    if in_use:
        raise FieldInUse(key, in_use)
    await uow.fields.delete(company_id, key)
