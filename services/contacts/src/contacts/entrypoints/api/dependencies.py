"""What the contacts endpoints get from the app: units of work, the clock, the settings.

:mod:`contacts.bootstrap` builds one :class:`ApiContext` per app with
:func:`install_context`; endpoints (this service's and the import endpoints) take it as a
parameter annotated :data:`Context`. Tests build apps with their own context (a fixed clock,
say) the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from contacts.config import ContactsSettings
from contacts.service_layer.unit_of_work import ContactsUnitOfWork


@dataclass(frozen=True)
class ApiContext:
    """The dependencies of the endpoints.

    ``uow`` makes a new, not yet entered unit of work (``async with ctx.uow() as uow``);
    ``clock`` gives the timezone-aware time recorded for changes.
    """

    uow: Callable[[], ContactsUnitOfWork]
    clock: Callable[[], datetime]
    settings: ContactsSettings


def install_context(app: FastAPI, context: ApiContext) -> None:
    app.state.contacts_context = context


async def api_context(request: Request) -> ApiContext:
    """The :class:`ApiContext` of the app serving ``request`` (FastAPI dependency; async so
    that FastAPI calls it on the event loop instead of in a worker thread)."""
    context = getattr(request.app.state, "contacts_context", None)
    if not isinstance(context, ApiContext):
        raise RuntimeError("install_context(app, context) was not called for this app")
    return context


#: An endpoint parameter annotated with this receives the app's :class:`ApiContext`.
Context = Annotated[ApiContext, Depends(api_context)]
