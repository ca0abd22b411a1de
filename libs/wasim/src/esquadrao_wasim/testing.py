"""Test helpers around the simulator: a webhook receiver that stands in for our endpoint,
a registered Cloud API number, and a bounded wait for a condition.

:func:`webhook_receiver` serves a :class:`WebhookReceiver` in the running event loop: it
records every POST (raw body and headers, so tests can check signatures), answers Meta's
verification handshake for its ``verify_token``, and can refuse the next POSTs with 500
(``fail_next``) to exercise retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import uvicorn

from esquadrao_wasim.client import SimulatorControl
from esquadrao_wasim.server import InProcessServer, bind


async def eventually(
    condition: Callable[[], Awaitable[bool]], within: float = 10.0, interval: float = 0.02
) -> None:
    """Return once ``await condition()`` is true; TimeoutError after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the condition did not hold within {within} s")
        await asyncio.sleep(interval)


@dataclass
class Callback:
    """One webhook POST as the receiver got it."""

    body: bytes
    headers: dict[str, str]

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        return payload

    @property
    def value(self) -> dict[str, Any]:
        """The ``value`` of the first change of the first entry."""
        value: dict[str, Any] = self.payload["entry"][0]["changes"][0]["value"]
        return value


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass
class WebhookReceiver:
    """A webhook endpoint (ASGI) that records what it gets; see the module docstring."""

    verify_token: str = "test-verify-token"
    fail_next: int = 0
    url: str = ""
    callbacks: list[Callback] = field(default_factory=list)
    refused: list[Callback] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def statuses(self) -> list[dict[str, Any]]:
        """Every status of every accepted callback, in arrival order."""
        return [s for c in self.callbacks for s in c.value.get("statuses", [])]

    def messages(self) -> list[dict[str, Any]]:
        """Every inbound message of every accepted callback, in arrival order."""
        return [m for c in self.callbacks for m in c.value.get("messages", [])]

    async def wait_for(
        self, predicate: Callable[[WebhookReceiver], bool], within: float = 10.0
    ) -> None:
        """Return once ``predicate(self)`` holds; TimeoutError after ``within`` seconds."""
        async with asyncio.timeout(within):
            while not predicate(self):
                self._arrived.clear()
                await self._arrived.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":
            await self._handshake(scope, send)
            return
        callback = Callback(body, {k.decode().lower(): v.decode() for k, v in scope["headers"]})
        if self.fail_next > 0:
            self.fail_next -= 1
            self.refused.append(callback)
            await _respond(send, 500, b"try again later")
        else:
            self.callbacks.append(callback)
            await _respond(send, 200, b"ok")
        self._arrived.set()

    async def _handshake(self, scope: Scope, send: Send) -> None:
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        if query.get("hub.mode") == "subscribe" and query.get("hub.verify_token") == (
            self.verify_token
        ):
            await _respond(send, 200, query.get("hub.challenge", "").encode())
        else:
            await _respond(send, 403, b"forbidden")


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def webhook_receiver(
    receiver: WebhookReceiver | None = None, path: str = "/webhook"
) -> AsyncIterator[WebhookReceiver]:
    """Serve ``receiver`` (a new one by default) on a free port of 127.0.0.1 for the
    block's duration; its ``url`` is set to ``http://127.0.0.1:<port><path>``."""
    receiver = receiver or WebhookReceiver()
    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(
        receiver, interface="asgi3", lifespan="off", log_level="warning", access_log=False
    )
    server = InProcessServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if serving.done():
                    serving.result()
                    raise RuntimeError("the webhook receiver stopped before it started")
                await asyncio.sleep(0.01)
        receiver.url = f"http://127.0.0.1:{sock.getsockname()[1]}{path}"
        yield receiver
    finally:
        server.should_exit = True
        await serving
        sock.close()


@dataclass(frozen=True)
class CloudNumber:
    """A Cloud API number registered on a simulator, with what a client needs to use it."""

    phone_number_id: str
    display_phone_number: str  # digits, as webhooks carry it
    access_token: str
    app_secret: str
    messages_url: str

    async def send(self, client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
        """POST ``body`` to the number's send endpoint with its token."""
        return await client.post(
            self.messages_url, json=body, headers={"Authorization": f"Bearer {self.access_token}"}
        )


async def register_cloud_number(
    control: SimulatorControl,
    phone_number_id: str,
    *,
    display_phone_number: str = "+55 11 4000-1000",
    webhook_url: str | None = None,
    access_token: str = "test-access-token",
    app_secret: str = "test-app-secret",
    version: str = "v21.0",
) -> CloudNumber:
    """Register a number on the simulator behind ``control`` and describe it."""
    registered = await control.register_number(
        phone_number_id,
        display_phone_number=display_phone_number,
        access_token=access_token,
        webhook_url=webhook_url,
        app_secret=app_secret,
    )
    return CloudNumber(
        phone_number_id=phone_number_id,
        display_phone_number=registered["number"]["display_phone_number"],
        access_token=access_token,
        app_secret=app_secret,
        messages_url=f"{control.base_url}/{version}/{phone_number_id}/messages",
    )


def text_message(to: str, message_id: str | None = None, body: str = "Olá!") -> dict[str, Any]:
    """A Cloud API text send body; ``message_id`` goes in ``biz_opaque_callback_data``."""
    message: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"preview_url": False, "body": body},
    }
    if message_id is not None:
        message["biz_opaque_callback_data"] = message_id
    return message
