"""Cursors, page parameters and the shape of keyset queries (SQL checked as compiled text)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Annotated, Any

import httpx
import pytest
from esquadrao_common.errors import ValidationProblem, install_problem_handlers
from esquadrao_common.pagination import (
    CURSOR_FIELD,
    CursorValue,
    Page,
    PageParams,
    decode_cursor,
    encode_cursor,
    keyset_select,
)
from fastapi import Depends, FastAPI
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Uuid, select
from sqlalchemy.dialects.postgresql import asyncpg

pytestmark = pytest.mark.unit

metadata = MetaData()
contacts = Table(
    "contacts",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("company_id", String, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("seq", Integer, nullable=False),
)

CREATED = dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
ID = uuid.UUID("0b7e1b2c-5d6f-4a89-9b0c-1d2e3f405162")


def sql(statement: Any) -> str:
    """``statement`` as the services' driver (asyncpg) receives it."""
    return " ".join(str(statement.compile(dialect=asyncpg.dialect())).split())


def params(statement: Any) -> list[Any]:
    """The values of ``$1``, ``$2``... of ``statement``."""
    compiled = statement.compile(dialect=asyncpg.dialect())
    return [compiled.params[name] for name in compiled.positiontup]


def raw_cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def test_a_cursor_round_trips_every_key_type() -> None:
    values: tuple[CursorValue, ...] = (
        CREATED,
        dt.date(2026, 3, 1),
        ID,
        Decimal("12.50"),
        7,
        2.5,
        "Ana",
        True,
    )

    decoded = decode_cursor(encode_cursor(values))

    assert decoded == values
    assert [type(value) for value in decoded] == [type(value) for value in values]
    created = decoded[0]
    assert isinstance(created, dt.datetime)
    assert created.utcoffset() == dt.timedelta(0)


@given(
    st.lists(
        st.one_of(st.integers(), st.text(max_size=200), st.datetimes(), st.uuids()), max_size=4
    )
)
def test_cursors_are_url_safe_and_round_trip(values: list[CursorValue]) -> None:
    cursor = encode_cursor(values)

    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(cursor) == tuple(values)


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64!",
        "e30",  # {} : no key
        raw_cursor([1, 2]),  # not an object
        raw_cursor({"v": 2, "k": [1]}),  # another version
        raw_cursor({"v": 1, "k": [{"dt": "yesterday"}]}),  # unparseable tagged value
        raw_cursor({"v": 1, "k": [{"zz": "1"}]}),  # unknown tag
        raw_cursor({"v": 1, "k": [None]}),  # sort keys are never null
        encode_cursor([CREATED, ID])[:-3],  # truncated
        raw_cursor({"v": 1, "k": ["x" * 4000]}),  # well-formed, but longer than any we issue
    ],
)
def test_a_garbage_cursor_is_a_validation_problem_on_the_cursor_field(cursor: str) -> None:
    with pytest.raises(ValidationProblem) as raised:
        decode_cursor(cursor)

    assert raised.value.status == 422
    assert [error["field"] for error in raised.value.errors] == [CURSOR_FIELD]


def test_first_page_orders_by_the_key_and_reads_one_extra_row() -> None:
    statement = keyset_select(
        select(contacts.c.id),
        order_by=(contacts.c.created_at, contacts.c.id),
        cursor=None,
        limit=20,
    )

    text = sql(statement)
    assert "WHERE" not in text
    assert "ORDER BY contacts.created_at ASC, contacts.id ASC LIMIT $1" in text
    assert params(statement) == [21]


def test_next_page_compares_the_key_as_a_row_value() -> None:
    base = select(contacts.c.id).where(contacts.c.company_id == "acme")
    statement = keyset_select(
        base,
        order_by=(contacts.c.created_at, contacts.c.id),
        cursor=encode_cursor((CREATED, ID)),
        limit=10,
    )

    text = sql(statement)
    assert (
        "WHERE contacts.company_id = $1::VARCHAR"
        " AND (contacts.created_at, contacts.id) > ($2::TIMESTAMP WITH TIME ZONE, $3::UUID)"
        " ORDER BY contacts.created_at ASC, contacts.id ASC LIMIT $4"
    ) in text
    assert params(statement) == ["acme", CREATED, ID, 11]


def test_descending_pages_compare_and_order_the_other_way() -> None:
    statement = keyset_select(
        select(contacts.c.id),
        order_by=(contacts.c.created_at, contacts.c.id),
        cursor=encode_cursor((CREATED, ID)),
        limit=5,
        descending=True,
    )

    text = sql(statement)
    assert (
        "WHERE (contacts.created_at, contacts.id) < ($1::TIMESTAMP WITH TIME ZONE, $2::UUID)"
        " ORDER BY contacts.created_at DESC, contacts.id DESC LIMIT $3"
    ) in text
    assert params(statement) == [CREATED, ID, 6]


@pytest.mark.parametrize(
    "values",
    [
        (CREATED,),  # too few values
        (CREATED, ID, 3),  # too many
        ("2026-03-01", ID),  # a string where the key is a datetime
        (CREATED, 17),  # an int where the key is a UUID
    ],
)
def test_a_cursor_that_does_not_fit_the_sort_key_is_refused(
    values: tuple[CursorValue, ...],
) -> None:
    with pytest.raises(ValidationProblem) as raised:
        keyset_select(
            select(contacts.c.id),
            order_by=(contacts.c.created_at, contacts.c.id),
            cursor=encode_cursor(values),
            limit=5,
        )

    assert raised.value.errors[0]["field"] == CURSOR_FIELD


def test_a_key_too_long_for_a_cursor_is_refused_when_encoding() -> None:
    with pytest.raises(ValueError, match="too long"):
        encode_cursor(["x" * 4000])


def test_a_bool_is_not_an_integer_key() -> None:
    with pytest.raises(ValidationProblem):
        keyset_select(
            select(contacts.c.id), order_by=(contacts.c.seq,), cursor=encode_cursor([True]), limit=5
        )


class Item(BaseModel):
    id: int


def make_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/items")
    async def list_items(page: Annotated[PageParams, Depends()]) -> Page[Item]:
        start = 0 if page.cursor is None else int(str(decode_cursor(page.cursor)[0])) + 1
        ids = range(start, min(start + page.limit, 120))
        next_cursor = encode_cursor([ids[-1]]) if ids and ids[-1] < 119 else None
        return Page[Item](items=[Item(id=i) for i in ids], next_cursor=next_cursor)

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_page_params_default_to_fifty_and_walk_with_next_cursor(
    client: httpx.AsyncClient,
) -> None:
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {} if cursor is None else {"cursor": cursor}
        body = (await client.get("/items", params=query)).json()
        assert set(body) == {"items", "next_cursor"}
        seen.extend(item["id"] for item in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert pages == 3  # 50 + 50 + 20
    assert seen == list(range(120))


@pytest.mark.parametrize("limit", ["0", "501", "many"])
async def test_a_limit_out_of_range_is_a_problem_on_query_limit(
    client: httpx.AsyncClient, limit: str
) -> None:
    response = await client.get("/items", params={"limit": limit})

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["query.limit"]


async def test_the_largest_limit_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.get("/items", params={"limit": "500"})

    assert response.status_code == 200
    assert len(response.json()["items"]) == 120


async def test_a_tampered_cursor_is_a_problem_on_the_cursor_field(
    client: httpx.AsyncClient,
) -> None:
    first = (await client.get("/items", params={"limit": 2})).json()["next_cursor"]
    tampered = first[:-2] + ("AA" if first[-2:] != "AA" else "BB")

    response = await client.get("/items", params={"cursor": tampered})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [error["field"] for error in response.json()["errors"]] == [CURSOR_FIELD]
