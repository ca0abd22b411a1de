"""Contact exports: the contacts of a filter or a list as CSV, streamed page by page.

:func:`open_export` checks the request (the list exists) and returns the header and an
async iterator of rows that reads the contacts in keyset pages of ``page_size``, each in
its own short transaction: memory stays flat whatever the number of contacts, and no
transaction stays open while a slow client downloads. Contacts changed during the download
appear as they are when their page is read; keyset order means none is served twice.

Columns: ``id``, then the fields an import recognises by name (``phone``, ``name``,
``email``, ``tags``, ``condominio``, ``endereco``, ``cargo``, ``opted_out``), then one
``custom:<key>`` column per custom field the company defines (by key), then
``created_at`` and ``updated_at``. So an exported file imports back unchanged, with no
mapping: ``id`` and the times are ignored by an import, tags are joined with ``", "``,
``opted_out`` is ``sim``/``não`` and custom values are their canonical text.

:func:`csv_stream` turns rows into the bytes of a CSV file: UTF-8 with a byte order mark
(without it, Excel reads UTF-8 as cp1252 and breaks every accent), ``\\r\\n`` line ends,
and a delimiter of choice (``,`` by default; ``;`` is what Excel in a Brazilian locale
splits on when a file is opened by double-click). Cells that a spreadsheet would run as a
formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return, and not a plain
number) get a leading ``'``: names come from WhatsApp profiles and uploaded files, and must
never become formulas in the helpdesk's spreadsheet.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from contacts.adapters.repositories import ContactFilter
from contacts.domain.model import Contact, CustomFieldDefinition
from contacts.service_layer.contacts import list_contacts, load_definitions
from contacts.service_layer.errors import NotFoundError
from contacts.service_layer.unit_of_work import ContactsUnitOfWork

#: Cell separators an export may use.
Delimiter: TypeAlias = Literal[",", ";", "\t"]
#: Contacts read per page (and per transaction) by an export.
EXPORT_PAGE_SIZE: Final = 1000
#: The columns before the custom fields, and after them.
LEADING_COLUMNS: Final = (
    "id",
    "phone",
    "name",
    "email",
    "tags",
    "condominio",
    "endereco",
    "cargo",
    "opted_out",
)
TRAILING_COLUMNS: Final = ("created_at", "updated_at")
#: Prefix of a custom field's column: ``custom:<key>``, the form imports map by name.
CUSTOM_COLUMN_PREFIX: Final = "custom:"

_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER: Final = re.compile(r"[+-]?\d+([.,]\d+)?")
_BOM: Final = "\ufeff"


def spreadsheet_safe(cell: str) -> str:
    """``cell`` with a leading ``'`` if a spreadsheet would read it as a formula; plain
    numbers (``+5511987654321``, ``-12.5``) are left alone."""
    if cell.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


async def csv_stream(
    header: Sequence[str],
    rows: AsyncIterable[Sequence[str | int]],
    *,
    delimiter: Delimiter = ",",
    rows_per_chunk: int = 500,
) -> AsyncIterator[bytes]:
    """The bytes of a CSV file of ``header`` and ``rows``, in chunks of about
    ``rows_per_chunk`` rows (the first carries the byte order mark and the header)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    buffer.write(_BOM)
    writer.writerow([spreadsheet_safe(cell) for cell in header])
    pending = 0
    async for row in rows:
        writer.writerow([spreadsheet_safe(cell) if isinstance(cell, str) else cell for cell in row])
        pending += 1
        if pending >= rows_per_chunk:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue().encode("utf-8")


def export_header(definitions: Sequence[CustomFieldDefinition]) -> list[str]:
    return [
        *LEADING_COLUMNS,
        *(CUSTOM_COLUMN_PREFIX + definition.key for definition in definitions),
        *TRAILING_COLUMNS,
    ]


def contact_row(contact: Contact, definitions: Sequence[CustomFieldDefinition]) -> list[str]:
    """The cells of ``contact`` under :func:`export_header` of the same ``definitions``."""
    return [
        contact.id,
        contact.phone_e164,
        contact.name,
        contact.email,
        ", ".join(contact.tags),
        contact.condominio,
        contact.endereco,
        contact.cargo,
        "sim" if contact.opted_out else "não",
        *(contact.custom_fields.get(definition.key, "") for definition in definitions),
        contact.created_at.isoformat(),
        contact.updated_at.isoformat(),
    ]


@dataclass(frozen=True)
class ContactExport:
    """An export ready to stream: its header and its rows (read as they are iterated)."""

    header: list[str]
    rows: AsyncIterator[list[str]]


async def open_export(
    new_uow: Callable[[], ContactsUnitOfWork],
    company_id: str,
    criteria: ContactFilter,
    *,
    page_size: int = EXPORT_PAGE_SIZE,
) -> ContactExport:
    """The export of the company's contacts matching ``criteria`` (live ones unless it
    says ``deleted``), oldest first. NotFoundError, before anything is read, when
    ``criteria.list_id`` names no list of the company."""
    async with new_uow() as uow:
        if (
            criteria.list_id is not None
            and await uow.lists.get(company_id, criteria.list_id) is None
        ):
            raise NotFoundError("contact list", criteria.list_id)
        definitions = await load_definitions(uow, company_id)

    async def rows() -> AsyncIterator[list[str]]:
        cursor: str | None = None
        while True:
            async with new_uow() as uow:
                page = await list_contacts(
                    uow, company_id, criteria, cursor=cursor, limit=page_size
                )
            for contact in page.items:
                yield contact_row(contact, definitions)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    return ContactExport(header=export_header(definitions), rows=rows())
