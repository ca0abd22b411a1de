"""Cursor (keyset) pagination: every list endpoint pages this way.

A page is read as ``WHERE (a, id) > (:a, :id) ORDER BY a, id LIMIT n + 1``, where
``(:a, :id)`` is the sort key of the last item of the previous page, carried by an opaque
cursor. Unlike ``OFFSET``, this is stable while rows are inserted or deleted concurrently:
the position is a key, not a count, so a row inserted before it does not shift the next
page (no item is served twice) and a row deleted before it does not make one skipped.
It also costs the same on page 1000 as on page 1 (an index seek, no rows read and thrown
away). The price: no "jump to page N" and no total count, which a feed does not need.

The sort key must be unique (end it with the primary key) and its columns ``NOT NULL``,
with an index on them in that order (after the tenant column, for tenant-scoped lists).

Cursors are URL-safe base64 of ``{"v": 1, "k": [values]}``. They are opaque to clients but
not secret nor signed: a client that forges one can only choose where its own
(tenant-scoped) listing starts, so a forged cursor is treated as any malformed input,
a 422 on the ``cursor`` field.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeAlias, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, literal, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from esquadrao_common.errors import ValidationProblem

CURSOR_VERSION = 1
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: Cursors are at most this long (about 3 KB of key): longer input is refused unparsed,
#: so a client cannot make the API parse arbitrarily large or deeply nested JSON.
MAX_CURSOR_LENGTH = 4096
#: The field a bad cursor is reported on (it comes from the ``cursor`` query parameter).
CURSOR_FIELD = "query.cursor"

#: What a cursor can hold: the types sort keys are made of (never NULL).
CursorValue: TypeAlias = str | int | float | bool | dt.datetime | dt.date | uuid.UUID | Decimal
#: A sort key column: a Core column expression or an ORM attribute (``Contact.id``).
KeysetColumn: TypeAlias = ColumnElement[Any] | QueryableAttribute[Any]

T = TypeVar("T")


def _bad_cursor(message: str) -> ValidationProblem:
    return ValidationProblem.for_field(CURSOR_FIELD, message, type="cursor_invalid")


def _encode_value(value: CursorValue) -> Any:
    # Types JSON lacks travel tagged; datetime before date (a datetime is a date).
    if isinstance(value, dt.datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"d": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"u": str(value)}
    if isinstance(value, Decimal):
        return {"n": str(value)}
    if isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot put a {type(value).__name__} in a cursor")


def _decode_value(raw: Any) -> CursorValue:
    if isinstance(raw, str | int | float | bool):
        return raw
    if isinstance(raw, dict) and len(raw) == 1:
        ((tag, text),) = raw.items()
        if isinstance(text, str):
            try:
                if tag == "dt":
                    return dt.datetime.fromisoformat(text)
                if tag == "d":
                    return dt.date.fromisoformat(text)
                if tag == "u":
                    return uuid.UUID(text)
                if tag == "n":
                    return Decimal(text)
            except (ArithmeticError, ValueError):
                pass
    raise _bad_cursor("cursor holds a value of no known type")


def encode_cursor(values: Sequence[CursorValue]) -> str:
    """The opaque cursor for a position given by its sort key ``values``; ``ValueError``
    if it would exceed :data:`MAX_CURSOR_LENGTH` (a sort key should be short)."""
    payload = {"v": CURSOR_VERSION, "k": [_encode_value(value) for value in values]}
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    cursor = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise ValueError(f"a cursor of {len(cursor)} characters is too long")
    return cursor


def decode_cursor(cursor: str) -> tuple[CursorValue, ...]:
    """The sort key values in ``cursor``; :class:`ValidationProblem` (422, field
    ``query.cursor``) for anything :func:`encode_cursor` did not produce."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise _bad_cursor("cursor is not one this API issued")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError) as error:
        raise _bad_cursor("cursor is not one this API issued") from error
    if not isinstance(payload, dict) or not isinstance(payload.get("k"), list):
        raise _bad_cursor("cursor is not one this API issued")
    if payload.get("v") != CURSOR_VERSION:
        raise _bad_cursor("cursor is from another version of this API; start over")
    return tuple(_decode_value(raw) for raw in payload["k"])


class Page(BaseModel, Generic[T]):
    """One page of a listing; ``next_cursor`` is null on the last page."""

    items: list[T]
    next_cursor: str | None = None


class PageParams:
    """The paging query parameters, as a FastAPI dependency:
    ``page: Annotated[PageParams, Depends()]`` reads ``?limit=&cursor=``."""

    def __init__(
        self,
        limit: Annotated[
            int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")
        ] = DEFAULT_PAGE_SIZE,
        cursor: Annotated[
            str | None,
            Query(description="`next_cursor` of the previous page; absent for the first."),
        ] = None,
    ) -> None:
        self.limit = limit
        self.cursor = cursor


def _expression(column: KeysetColumn) -> ColumnElement[Any]:
    return column.expression if isinstance(column, QueryableAttribute) else column


def _python_type(column: ColumnElement[Any]) -> type | None:
    try:
        python_type: type = column.type.python_type
    except NotImplementedError:
        return None
    return python_type


def _check_key(values: tuple[CursorValue, ...], columns: Sequence[ColumnElement[Any]]) -> None:
    """Refuse a cursor whose values do not fit the sort key, before the database does."""
    if len(values) != len(columns):
        raise _bad_cursor("cursor is not one of this listing")
    for value, column in zip(values, columns, strict=True):
        expected = _python_type(column)
        if expected is not None and not isinstance(value, expected):
            raise _bad_cursor("cursor is not one of this listing")
        if expected is int and isinstance(value, bool):
            raise _bad_cursor("cursor is not one of this listing")


def keyset_select(
    statement: Select[Any],
    *,
    order_by: Sequence[KeysetColumn],
    cursor: str | None,
    limit: int,
    descending: bool = False,
) -> Select[Any]:
    """``statement`` restricted to the page after ``cursor``, in ``order_by`` order.

    Adds ``WHERE (a, b) > (cursor values)`` (``<`` when ``descending``; one direction for
    every column, which is what lets the database compare rows and seek an index),
    ``ORDER BY a, b`` and ``LIMIT limit + 1``: the extra row tells whether there is a next
    page. ``statement`` must have no ORDER BY or LIMIT of its own. A cursor that does not
    decode, or whose values do not fit ``order_by``, is a 422 on ``query.cursor``.
    """
    if not order_by:
        raise ValueError("order_by needs at least one column")
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    columns = [_expression(column) for column in order_by]
    if cursor is not None:
        values = decode_cursor(cursor)
        _check_key(values, columns)
        key = tuple_(*columns)
        position = tuple_(
            *(literal(value, column.type) for value, column in zip(values, columns, strict=True))
        )
        statement = statement.where(key < position if descending else key > position)
    ordering = [column.desc() if descending else column.asc() for column in columns]
    return statement.order_by(*ordering).limit(limit + 1)


@dataclass(frozen=True)
class KeysetPage:
    """The rows of one page and the cursor of the next (``None`` on the last page).

    ``items`` hold what ``statement`` selects: the entity or value itself when it selects
    one thing (``select(Contact)``), a tuple of them otherwise.
    """

    items: list[Any]
    next_cursor: str | None


async def keyset_page(
    session: AsyncSession,
    statement: Select[Any],
    *,
    order_by: Sequence[KeysetColumn],
    cursor: str | None,
    limit: int,
    descending: bool = False,
) -> KeysetPage:
    """Read the page after ``cursor`` (see :func:`keyset_select`) in ``session``.

    The sort key is selected alongside ``statement``'s columns (so it need not be among
    them) and the last item's key becomes ``next_cursor``.
    """
    keys = [_expression(column).label(f"keyset_{i}") for i, column in enumerate(order_by)]
    paged = keyset_select(
        statement.add_columns(*keys),
        order_by=order_by,
        cursor=cursor,
        limit=limit,
        descending=descending,
    )
    rows = (await session.execute(paged)).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    width = len(rows[0]) - len(keys) if rows else 0
    items = [row[0] if width == 1 else tuple(row[:width]) for row in rows]
    next_cursor = encode_cursor(tuple(rows[-1][width:])) if has_more else None
    return KeysetPage(items=items, next_cursor=next_cursor)
