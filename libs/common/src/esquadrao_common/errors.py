"""Errors as ``application/problem+json`` (RFC 9457), the one error shape of every REST API.

A handler raises a :class:`ProblemError` (or one of its subclasses); the handlers that
:func:`install_problem_handlers` adds render it, and every error the framework produces
itself (request validation, unknown routes and methods, unhandled exceptions), as::

    {"type": "https://esquadrao.dev/problems/not-found", "title": "Not Found",
     "status": 404, "detail": "contact 42 does not exist", "instance": "/contacts/42"}

``type`` identifies the kind of problem (clients branch on it, never on ``detail``);
``title`` is the same for every occurrence of a type; ``detail`` explains this occurrence;
``instance`` is the request path. Extension members (``errors``, ``existing_id``,
``retry_after``...) sit next to them at the top level.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar, TypedDict

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
#: Base URI of the problem types this project defines; ``type`` is ``PROBLEM_TYPE_BASE + slug``.
PROBLEM_TYPE_BASE = "https://esquadrao.dev/problems/"
#: The members RFC 9457 defines; extension members may not reuse these names.
STANDARD_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


def problem_type(slug: str) -> str:
    """The ``type`` URI of the problem called ``slug`` (e.g. ``not-found``)."""
    return PROBLEM_TYPE_BASE + slug


class FieldError(TypedDict):
    """One invalid input of a 422: where (``field``, a dotted path such as ``body.phone``
    or ``query.limit``), what is wrong (``message``) and a machine-readable ``type``."""

    field: str
    message: str
    type: str


class ProblemError(Exception):
    """An error the API reports to its client as a problem document.

    Subclasses set ``default_status``, ``default_title`` and ``slug`` (the ``type`` URI is
    derived from the slug; no slug means ``about:blank``). Without a title, the title is
    the status's HTTP reason phrase. ``extensions`` become top-level members of the
    document and ``headers`` response headers. Any argument overrides the class default
    for one occurrence.
    """

    default_status: ClassVar[int] = 500
    default_title: ClassVar[str | None] = None
    slug: ClassVar[str | None] = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        status: int | None = None,
        title: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        clashing = STANDARD_MEMBERS.intersection(extensions)
        if clashing:
            raise ValueError(f"extension members may not be named {sorted(clashing)}")
        self.status = self.default_status if status is None else status
        self.title = title or self.default_title or _reason(self.status)
        self.detail = detail
        default_type = problem_type(self.slug) if self.slug else "about:blank"
        self.type = default_type if type is None else type
        self.headers: dict[str, str] = dict(headers or {})
        self.extensions: dict[str, Any] = extensions
        super().__init__(detail or self.title)

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem document (a JSON object) for this error at ``instance``."""
        return _document(
            type=self.type,
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            extensions=self.extensions,
        )


class Unauthorized(ProblemError):
    """401: no credentials, or credentials that are not valid. Carries
    ``WWW-Authenticate: Bearer`` (RFC 6750), with ``error="invalid_token"`` when a token was
    presented but rejected (a request without any token gets no error code)."""

    default_status = 401
    default_title = "Unauthorized"
    slug = "unauthorized"

    def __init__(
        self,
        detail: str | None = None,
        *,
        invalid_token: bool = True,
        headers: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> None:
        challenge = "Bearer"
        if invalid_token:
            # The description is a quoted string: no bare double quotes or backslashes.
            description = (detail or "").replace("\\", "").replace('"', "'")
            challenge = f'Bearer error="invalid_token", error_description="{description}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge, **(headers or {})}, **kw)


class Forbidden(ProblemError):
    """403: authenticated, but not allowed to do this (e.g. the role is not enough)."""

    default_status = 403
    default_title = "Forbidden"
    slug = "forbidden"


class NotFound(ProblemError):
    default_status = 404
    default_title = "Not Found"
    slug = "not-found"


class Conflict(ProblemError):
    """409: the request conflicts with the current state, e.g. a duplicate; pass the
    conflicting resource's id as an extension (``Conflict("...", existing_id=id)``) so the
    client can go on with it."""

    default_status = 409
    default_title = "Conflict"
    slug = "conflict"


class ValidationProblem(ProblemError):
    """422: input that is well-formed but invalid, listed per field in ``errors``.

    Raised by handlers for checks a schema cannot express (:meth:`for_field` for a single
    field); request validation by FastAPI produces the same shape.
    """

    default_status = 422
    default_title = "Unprocessable Content"
    slug = "validation"

    def __init__(self, errors: Sequence[FieldError], detail: str | None = None, **kw: Any) -> None:
        if not errors:
            raise ValueError("a validation problem needs at least one field error")
        self.errors = list(errors)
        fields = ", ".join(error["field"] for error in self.errors)
        super().__init__(detail or f"invalid input: {fields}", errors=self.errors, **kw)

    @classmethod
    def for_field(cls, field: str, message: str, *, type: str = "value_error") -> ValidationProblem:
        """The problem of a single invalid ``field`` (dotted path, e.g. ``query.cursor``)."""
        return cls([FieldError(field=field, message=message, type=type)], detail=message)


class TooManyRequests(ProblemError):
    """429 with ``Retry-After`` (whole seconds, rounded up, at least 1: a client that
    waits that long finds the capacity it was refused) and the same number as the
    ``retry_after`` member."""

    default_status = 429
    default_title = "Too Many Requests"
    slug = "rate-limited"

    def __init__(
        self,
        detail: str | None = None,
        *,
        retry_after: float,
        headers: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> None:
        seconds = retry_after_seconds(retry_after)
        super().__init__(
            detail,
            headers={"Retry-After": str(seconds), **(headers or {})},
            retry_after=seconds,
            **kw,
        )


def retry_after_seconds(seconds: float) -> int:
    """``seconds`` as a ``Retry-After`` value: rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def problem_response(
    document: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A response carrying the problem ``document`` with its status and content type."""
    return JSONResponse(
        dict(document),
        status_code=int(document["status"]),
        headers=dict(headers) if headers else None,
        media_type=PROBLEM_CONTENT_TYPE,
    )


def _document(
    *,
    type: str,
    title: str,
    status: int,
    detail: str | None,
    instance: str | None,
    extensions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {"type": type, "title": title, "status": status}
    if detail is not None:
        document["detail"] = detail
    if instance is not None:
        document["instance"] = instance
    document.update(extensions or {})
    return document


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def field_path(loc: Sequence[str | int]) -> str:
    """A pydantic error location as a dotted path: ``("body", "items", 0, "phone")`` is
    ``body.items.0.phone``."""
    return ".".join(str(part) for part in loc)


async def _problem_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.to_problem(request.url.path), exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldError(field=field_path(error["loc"]), message=error["msg"], type=error["type"])
        for error in exc.errors()
    ]
    return problem_response(ValidationProblem(errors).to_problem(request.url.path))


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    reason = _reason(exc.status_code)
    # Starlette's own detail defaults to the reason phrase, which says nothing more.
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != reason else None
    extensions: dict[str, Any] = {} if isinstance(exc.detail, str) else {"context": exc.detail}
    document = _document(
        type="about:blank",
        title=reason,
        status=exc.status_code,
        detail=detail,
        instance=request.url.path,
        extensions=extensions,
    )
    return problem_response(document, exc.headers)


async def _unhandled_exception(request: Request, exc: Exception) -> JSONResponse:
    # The client learns only that it failed; the traceback goes to the log.
    logger.error("unhandled exception in %s %s", request.method, request.url.path, exc_info=exc)
    document = _document(
        type="about:blank",
        title=_reason(500),
        status=500,
        detail="an unexpected error occurred; it has been logged",
        instance=request.url.path,
    )
    return problem_response(document)


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` as a problem document.

    Covers :class:`ProblemError`, request validation (422 with ``errors[].field`` such as
    ``body.phone``), Starlette/FastAPI ``HTTPException`` (including 404 for unknown routes
    and 405 with ``Allow``) and any other exception (500, detail generic, logged with its
    traceback). Starlette still re-raises unhandled exceptions after the 500 is sent, so
    the server logs them too and test clients may raise them (``httpx.ASGITransport`` with
    ``raise_app_exceptions=False`` returns the response instead).
    """
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unhandled_exception)


#: JSON Schema of a problem document, as documented in OpenAPI.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details; extension members may follow.",
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "422 only: one entry per invalid input.",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string", "examples": ["body.phone"]},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
                "required": ["field", "message", "type"],
            },
        },
        "retry_after": {"type": "integer", "description": "429 only: seconds to wait."},
    },
    "required": ["type", "title", "status"],
    "additionalProperties": True,
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting ``statuses`` as problem documents.

    ``@router.get("/x", responses=problem_responses(404, 422))``; a 422 given here
    replaces FastAPI's default (non-problem) validation error schema.
    """
    return {
        status: {
            "description": _reason(status),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }
