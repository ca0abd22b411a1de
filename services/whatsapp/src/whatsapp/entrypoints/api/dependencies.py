"""What the whatsapp endpoints get from the app: units of work, the clock, the settings and
the credentials cipher.

:mod:`whatsapp.bootstrap` builds one :class:`ApiContext` per app with
:func:`install_context`; endpoints take it as a parameter annotated :data:`Context`.
Tests build apps with their own context (a fixed clock, say) the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from whatsapp.adapters.credentials import CredentialCipher
from whatsapp.config import WhatsappSettings
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork


@dataclass(frozen=True)
class ApiContext:
    """The dependencies of the endpoints.

    ``uow`` makes a new, not yet entered unit of work (``async with ctx.uow() as uow``);
    ``clock`` gives the timezone-aware time recorded for changes; ``cipher`` seals and
    opens session credentials.
    """

    uow: Callable[[], WhatsappUnitOfWork]
    clock: Callable[[], datetime]
    settings: WhatsappSettings
    cipher: CredentialCipher


def install_context(app: FastAPI, context: ApiContext) -> None:
    app.state.whatsapp_context = context


async def api_context(request: Request) -> ApiContext:
    """The :class:`ApiContext` of the app serving ``request`` (FastAPI dependency; async so
    that FastAPI calls it on the event loop instead of in a worker thread)."""
    context = getattr(request.app.state, "whatsapp_context", None)
    if not isinstance(context, ApiContext):
        raise RuntimeError("install_context(app, context) was not called for this app")
    return context


#: An endpoint parameter annotated with this receives the app's :class:`ApiContext`.
Context = Annotated[ApiContext, Depends(api_context)]
