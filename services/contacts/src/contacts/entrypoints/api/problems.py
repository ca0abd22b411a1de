"""The service layer's refusals as problem documents (see docs/http-api.md).

=========================  ======  ================================================
error                      status  extension members
=========================  ======  ================================================
NotFoundError              404
DuplicatePhone             409     ``existing_id``, ``existing_deleted``
DuplicateListName          409     ``existing_id``
ContactIsDeleted           409     ``contact_id`` (type ``contact-deleted``)
FieldTypeChange            409
FieldInUse                 409     ``contacts_with_values``
ContactValidationError     422     ``errors`` (one per invalid field)
=========================  ======  ================================================

Validation errors are converted where the input's location is known
(:func:`validation_problem`), since the field path (``body.phone``,
``body.contacts.3.phone``) depends on it; the others by the handlers that
:func:`install_contacts_problems` adds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from esquadrao_common.errors import (
    Conflict,
    FieldError,
    NotFound,
    ProblemError,
    ValidationProblem,
    problem_response,
    problem_type,
)
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from contacts.domain.model import ContactIsDeleted, ContactValidationError
from contacts.service_layer.errors import (
    DuplicateListName,
    DuplicatePhone,
    FieldInUse,
    FieldTypeChange,
    NotFoundError,
)

#: ``type`` of the 409 for a change of a deleted contact.
CONTACT_DELETED: Final = problem_type("contact-deleted")

E = TypeVar("E", bound=Exception)


def field_errors(error: ContactValidationError, prefix: str) -> list[FieldError]:
    """One field error per issue, the field under ``prefix`` (``body``, ``body.contacts.3``)."""
    return [
        FieldError(field=f"{prefix}.{issue.field}", message=issue.message, type=issue.code.value)
        for issue in error.issues
    ]


def validation_problem(error: ContactValidationError, prefix: str = "body") -> ValidationProblem:
    """The 422 of invalid input found at ``prefix``."""
    return ValidationProblem(field_errors(error, prefix))


def not_found(error: NotFoundError) -> ProblemError:
    return NotFound(str(error))


def duplicate_phone(error: DuplicatePhone) -> ProblemError:
    return Conflict(
        str(error), existing_id=error.existing_id, existing_deleted=error.existing_deleted
    )


def duplicate_list_name(error: DuplicateListName) -> ProblemError:
    return Conflict(str(error), existing_id=error.existing_id)


def contact_deleted(error: ContactIsDeleted) -> ProblemError:
    return Conflict(str(error), type=CONTACT_DELETED, contact_id=error.contact_id)


def field_type_change(error: FieldTypeChange) -> ProblemError:
    return Conflict(str(error))


def field_in_use(error: FieldInUse) -> ProblemError:
    return Conflict(str(error), contacts_with_values=error.contacts_with_values)


def _handler(
    error_type: type[E], problem_of: Callable[[E], ProblemError]
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, error_type):
            raise TypeError(f"{type(exc).__name__} is not a {error_type.__name__}")
        problem = problem_of(exc)
        return problem_response(problem.to_problem(request.url.path), problem.headers)

    return handle


def install_contacts_problems(app: FastAPI) -> None:
    """Render the service layer's refusals of ``app`` as problem documents."""
    app.add_exception_handler(NotFoundError, _handler(NotFoundError, not_found))
    app.add_exception_handler(DuplicatePhone, _handler(DuplicatePhone, duplicate_phone))
    app.add_exception_handler(DuplicateListName, _handler(DuplicateListName, duplicate_list_name))
    app.add_exception_handler(ContactIsDeleted, _handler(ContactIsDeleted, contact_deleted))
    app.add_exception_handler(FieldTypeChange, _handler(FieldTypeChange, field_type_change))
    app.add_exception_handler(FieldInUse, _handler(FieldInUse, field_in_use))
    app.add_exception_handler(
        ContactValidationError,
        _handler(ContactValidationError, lambda error: validation_problem(error)),
    )
