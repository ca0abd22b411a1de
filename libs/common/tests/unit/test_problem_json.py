"""Errors rendered as application/problem+json: raised problems, validation, routing, crashes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from esquadrao_common.errors import (
    PROBLEM_CONTENT_TYPE,
    Conflict,
    Forbidden,
    NotFound,
    ProblemError,
    TooManyRequests,
    Unauthorized,
    ValidationProblem,
    install_problem_handlers,
    problem_responses,
)
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

pytestmark = pytest.mark.unit


class NewContact(BaseModel):
    phone: str = Field(pattern=r"^\+\d{8,15}$")
    name: str


def make_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/contacts/{contact_id}", responses=problem_responses(404))
    async def get_contact(contact_id: int) -> dict[str, int]:
        raise NotFound(f"contact {contact_id} does not exist")

    @app.post("/contacts", responses=problem_responses(409, 422))
    async def create_contact(contact: NewContact) -> dict[str, str]:
        raise Conflict("a contact with this phone exists", existing_id="c-17")

    @app.get("/checked")
    async def checked() -> None:
        raise ValidationProblem.for_field("query.since", "must be in the past")

    @app.get("/slow-down")
    async def slow_down() -> None:
        raise TooManyRequests("over the limit", retry_after=2.1)

    @app.get("/starlette-error")
    async def starlette_error() -> None:
        raise HTTPException(status_code=418, detail="short and stout")

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("password=hunter2 in the connection string")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def problem_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    return body


async def test_a_raised_not_found_is_a_problem_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/contacts/42")

    assert response.status_code == 404
    assert problem_of(response) == {
        "type": "https://esquadrao.dev/problems/not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "contact 42 does not exist",
        "instance": "/contacts/42",
    }


async def test_a_conflict_carries_the_existing_id(client: httpx.AsyncClient) -> None:
    response = await client.post("/contacts", json={"phone": "+5511999999999", "name": "Ana"})

    body = problem_of(response)
    assert response.status_code == 409
    assert body["type"] == "https://esquadrao.dev/problems/conflict"
    assert body["existing_id"] == "c-17"


async def test_request_validation_lists_each_field_by_dotted_path(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/contacts", json={"phone": "not a phone"})

    body = problem_of(response)
    assert response.status_code == 422
    assert body["type"] == "https://esquadrao.dev/problems/validation"
    assert body["instance"] == "/contacts"
    by_field = {error["field"]: error for error in body["errors"]}
    assert set(by_field) == {"body.phone", "body.name"}
    assert by_field["body.name"]["type"] == "missing"
    assert by_field["body.phone"]["type"] == "string_pattern_mismatch"
    assert all(error["message"] for error in body["errors"])


async def test_path_parameter_validation_names_the_path_field(client: httpx.AsyncClient) -> None:
    response = await client.get("/contacts/forty-two")

    assert response.status_code == 422
    assert [error["field"] for error in problem_of(response)["errors"]] == ["path.contact_id"]


async def test_a_raised_validation_problem_has_the_same_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/checked")

    body = problem_of(response)
    assert response.status_code == 422
    assert body["errors"] == [
        {"field": "query.since", "message": "must be in the past", "type": "value_error"}
    ]


async def test_an_unknown_route_is_a_problem_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere")

    assert response.status_code == 404
    assert problem_of(response) == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "instance": "/nowhere",
    }


async def test_a_wrong_method_is_a_problem_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete("/contacts/1")

    assert response.status_code == 405
    assert problem_of(response)["title"] == "Method Not Allowed"
    assert response.headers["allow"] == "GET"


async def test_an_http_exception_keeps_its_detail(client: httpx.AsyncClient) -> None:
    response = await client.get("/starlette-error")

    body = problem_of(response)
    assert response.status_code == 418
    assert body["detail"] == "short and stout"


async def test_a_crash_is_a_500_that_leaks_nothing_and_is_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="esquadrao_common.errors"):
        response = await client.get("/crash")

    body = problem_of(response)
    assert response.status_code == 500
    assert body["instance"] == "/crash"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    logged = [record for record in caplog.records if record.name == "esquadrao_common.errors"]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    assert "hunter2" in str(logged[0].exc_info[1])


async def test_too_many_requests_rounds_retry_after_up_to_whole_seconds(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/slow-down")

    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert problem_of(response)["retry_after"] == 3


@pytest.mark.parametrize(
    ("retry_after", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (59.01, "60")]
)
def test_retry_after_is_a_positive_integer(retry_after: float, header: str) -> None:
    assert TooManyRequests(retry_after=retry_after).headers["Retry-After"] == header


def test_unauthorized_challenges_for_a_bearer_token() -> None:
    assert Unauthorized("no token", invalid_token=False).headers == {"WWW-Authenticate": "Bearer"}
    rejected = Unauthorized('token "x" has expired').headers["WWW-Authenticate"]
    assert rejected == ('Bearer error="invalid_token", error_description="token \'x\' has expired"')


def test_extension_members_cannot_shadow_standard_ones() -> None:
    with pytest.raises(ValueError, match="instance"):
        ProblemError("x", instance="/elsewhere")
    with pytest.raises(ValueError, match="instance"):
        Forbidden("x", instance="/elsewhere")


def test_problem_responses_document_problem_json_in_openapi() -> None:
    schema = make_app().openapi()

    responses = schema["paths"]["/contacts"]["post"]["responses"]
    assert set(responses) == {"200", "409", "422"}
    for status in ("409", "422"):
        assert list(responses[status]["content"]) == [PROBLEM_CONTENT_TYPE]
        assert (
            "errors" in responses[status]["content"][PROBLEM_CONTENT_TYPE]["schema"]["properties"]
        )


def test_a_custom_problem_defaults_its_title_to_the_reason_phrase() -> None:
    class QuotaExhausted(ProblemError):
        default_status = 402
        slug = "quota-exhausted"

    assert ProblemError("try later", status=503).to_problem("/x") == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "try later",
        "instance": "/x",
    }
    assert QuotaExhausted(plan="free").to_problem() == {
        "type": "https://esquadrao.dev/problems/quota-exhausted",
        "title": "Payment Required",
        "status": 402,
        "plan": "free",
    }
