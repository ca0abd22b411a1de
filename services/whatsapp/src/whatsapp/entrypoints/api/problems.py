"""The handlers' refusals as problem documents (see docs/http-api.md).

=========================  ======  ====================================================
error                      status  ``type`` slug, extension members
=========================  ======  ====================================================
SessionNotFound            404     ``not-found``
NotPairing                 404     ``not-pairing``
SessionDeleted             409     ``session-deleted``, ``session_id``
SessionNotRunning          409     ``session-stopped``, ``session_id``
NumberInUse                409     ``conflict``, ``existing_id`` (same company only)
MessageIdTaken             409     ``conflict``: the id is another company's message
InvalidSessionInput        422     ``validation``, ``errors`` (``body.<field>``)
InvalidWebhookSignature    401     ``invalid-signature`` (raised by the webhook endpoint)
=========================  ======  ====================================================
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from esquadrao_common.errors import (
    Conflict,
    NotFound,
    ProblemError,
    ValidationProblem,
    problem_response,
    problem_type,
)
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from whatsapp.service_layer.sessions import (
    InvalidSessionInput,
    NotPairing,
    NumberInUse,
    SessionDeleted,
    SessionNotFound,
    SessionNotRunning,
    SessionsError,
)

SESSION_DELETED: Final = problem_type("session-deleted")
SESSION_STOPPED: Final = problem_type("session-stopped")
NOT_PAIRING: Final = problem_type("not-pairing")


class MessageIdTaken(Exception):
    """A send names a message id the ledger holds for another company. Its entry is not
    disclosed, but the id cannot be used: the send would be taken for a duplicate."""

    def __init__(self, message_id: str) -> None:
        super().__init__(f"message_id {message_id} is already used; choose another")


class InvalidWebhookSignature(ProblemError):
    """401: a webhook body without a valid ``X-Hub-Signature-256`` of the session's app."""

    default_status = 401
    default_title = "Invalid Signature"
    slug = "invalid-signature"
    #: RFC 9110 wants a challenge with every 401: the one scheme this endpoint accepts.
    challenge: ClassVar[str] = 'X-Hub-Signature-256 realm="whatsapp-cloud-webhooks"'

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": self.challenge}, **extensions)


def _problem(error: Exception) -> ProblemError:
    match error:
        case SessionNotFound():
            return NotFound(str(error))
        case NotPairing():
            return NotFound(str(error), type=NOT_PAIRING, title="Not Pairing")
        case SessionDeleted(session_id=session_id):
            return Conflict(str(error), type=SESSION_DELETED, session_id=session_id)
        case SessionNotRunning(session_id=session_id):
            return Conflict(str(error), type=SESSION_STOPPED, session_id=session_id)
        case NumberInUse(existing_id=None):
            return Conflict(str(error))
        case NumberInUse(existing_id=existing_id):
            return Conflict(str(error), existing_id=existing_id)
        case MessageIdTaken():
            return Conflict(str(error))
        case InvalidSessionInput(field=field, message=message):
            return ValidationProblem.for_field(f"body.{field}", message)
    raise TypeError(f"no problem document for {type(error).__name__}")


async def _render(request: Request, exc: Exception) -> JSONResponse:
    problem = _problem(exc)
    return problem_response(problem.to_problem(request.url.path), problem.headers)


def install_whatsapp_problems(app: FastAPI) -> None:
    """Render the handlers' refusals of ``app`` as problem documents."""
    app.add_exception_handler(SessionsError, _render)
    app.add_exception_handler(MessageIdTaken, _render)
