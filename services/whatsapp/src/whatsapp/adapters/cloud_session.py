"""A Cloud API number as a session connection.

The Cloud API has no connection to keep: each send is one HTTPS request, and receipts and
inbound messages arrive on the webhook endpoint of the API process. So that the session
driver treats both providers alike, a Cloud API session "connects" at once (the number
is usable as soon as it has credentials) and stays connected until it is closed. A
refused token shows up as an AUTH failure of a send, on which the driver fails the
session.
"""

from __future__ import annotations

import asyncio

from whatsapp.adapters.cloud_api import CloudApiProvider
from whatsapp.domain.messages import OutboundMessage
from whatsapp.domain.provider import (
    CloseKind,
    ConnectionClosed,
    ConnectionListener,
    SendAccepted,
)


class CloudConnection:
    """Implements :class:`whatsapp.domain.provider.SessionConnection` over a
    :class:`CloudApiProvider`; ``phone_e164`` is the number as configured."""

    __slots__ = ("_closed", "_listener", "_phone", "_provider")

    def __init__(
        self, provider: CloudApiProvider, listener: ConnectionListener, phone_e164: str
    ) -> None:
        self._provider = provider
        self._listener = listener
        self._phone = phone_e164
        self._closed = asyncio.Event()

    async def run(self) -> ConnectionClosed:
        await self._listener.connected(self._phone, None)
        await self._closed.wait()
        return ConnectionClosed(CloseKind.CLOSED, "closed")

    async def send(self, message: OutboundMessage) -> SendAccepted:
        return await self._provider.send(message)

    async def close(self) -> None:
        self._closed.set()
