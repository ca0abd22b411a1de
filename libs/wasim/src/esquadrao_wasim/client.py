"""Python clients of the simulator for tests and benchmarks.

:class:`SimulatorControl` wraps the ``/_sim`` control and witness API (httpx, async);
:class:`SimSession` is a bare session-mode connection that speaks the frames of
:mod:`esquadrao_wasim.sessions` — enough to drive the simulator, not a provider (the
whatsapp service's ``sim`` provider is the real client).

Both raise on errors: ``httpx.HTTPStatusError`` for a control call the simulator refused,
``TimeoutError`` when an expected frame does not come in time.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from esquadrao_wasim.sessions import SESSIONS_PATH


class SimulatorControl:
    """The control API of the simulator at ``base_url`` (``http://host:port``)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, f"/_sim{path}", **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/health")
        return result

    # -- knobs -------------------------------------------------------------------------

    async def knobs(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/knobs")
        return result

    async def set_knobs(self, **changes: Any) -> dict[str, Any]:
        """Change some global knobs; return all of them."""
        result: dict[str, Any] = await self._call("PATCH", "/knobs", json=changes)
        return result

    async def replace_knobs(self, knobs: dict[str, Any]) -> dict[str, Any]:
        """Replace the global knobs (those not given take their defaults)."""
        result: dict[str, Any] = await self._call("PUT", "/knobs", json=knobs)
        return result

    async def set_number_knobs(self, phone_number_id: str, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "PATCH", f"/numbers/{phone_number_id}/knobs", json=changes
        )
        return result

    async def clear_number_knobs(self, phone_number_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("DELETE", f"/numbers/{phone_number_id}/knobs")
        return result

    async def set_session_knobs(self, session_id: str, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "PATCH", f"/sessions/{session_id}/knobs", json=changes
        )
        return result

    async def clear_session_knobs(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("DELETE", f"/sessions/{session_id}/knobs")
        return result

    # -- numbers -----------------------------------------------------------------------

    async def register_number(
        self,
        phone_number_id: str,
        *,
        display_phone_number: str,
        access_token: str,
        webhook_url: str | None = None,
        app_secret: str | None = None,
        verify_token: str | None = None,
        waba_id: str | None = None,
    ) -> dict[str, Any]:
        """Register (or update) a Cloud API number; with ``verify_token`` the webhook is
        verified first."""
        result: dict[str, Any] = await self._call(
            "PUT",
            f"/numbers/{phone_number_id}",
            json={
                "display_phone_number": display_phone_number,
                "access_token": access_token,
                "webhook_url": webhook_url,
                "app_secret": app_secret,
                "verify_token": verify_token,
                "waba_id": waba_id,
            },
        )
        return result

    async def number(self, phone_number_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/numbers/{phone_number_id}")
        return result

    async def numbers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/numbers")
        return result

    async def verify_webhook(self, phone_number_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "POST", f"/numbers/{phone_number_id}/verify-webhook"
        )
        return result

    # -- sessions ----------------------------------------------------------------------

    async def configure_session(
        self, session_id: str, *, phone_e164: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "PUT", f"/sessions/{session_id}", json={"phone_e164": phone_e164}
        )
        return result

    async def session(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/sessions/{session_id}")
        return result

    async def pair(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", f"/sessions/{session_id}/pair")
        return result

    async def disconnect(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", f"/sessions/{session_id}/disconnect")
        return result

    async def ban(self, session_id: str, reason: str | None = None) -> dict[str, Any]:
        body = None if reason is None else {"reason": reason}
        result: dict[str, Any] = await self._call("POST", f"/sessions/{session_id}/ban", json=body)
        return result

    async def unban(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", f"/sessions/{session_id}/unban")
        return result

    async def logout(self, session_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", f"/sessions/{session_id}/logout")
        return result

    # -- traffic and witness -----------------------------------------------------------

    async def inject_inbound(
        self,
        *,
        from_phone: str,
        text: str,
        phone_number_id: str | None = None,
        session_id: str | None = None,
        profile_name: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """A customer writes to a number or a session; return the provider message id."""
        body = {
            "from": from_phone,
            "text": text,
            "phone_number_id": phone_number_id,
            "session_id": session_id,
            "profile_name": profile_name,
            "reply_to": reply_to,
        }
        result = await self._call("POST", "/inbound", json=body)
        provider_id: str = result["provider_message_id"]
        return provider_id

    async def message(self, message_id: str) -> dict[str, Any]:
        """Every acceptance and refusal of ``message_id``."""
        result: dict[str, Any] = await self._call("GET", f"/messages/{message_id}")
        return result

    async def accepted_count(self, message_id: str) -> int:
        """How many times the simulated WhatsApp accepted ``message_id``."""
        count: int = (await self.message(message_id))["accepted_count"]
        return count

    async def messages(
        self,
        *,
        phone_number_id: str | None = None,
        session_id: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> dict[str, Any]:
        """One page of accepted messages (``items``, ``next_after``)."""
        params: dict[str, Any] = {"after": after, "limit": limit}
        if phone_number_id is not None:
            params["phone_number_id"] = phone_number_id
        if session_id is not None:
            params["session_id"] = session_id
        result: dict[str, Any] = await self._call("GET", "/messages", params=params)
        return result

    async def all_messages(
        self, *, phone_number_id: str | None = None, session_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Every accepted message (of one number or session), page after page."""
        items: list[dict[str, Any]] = []
        after = 0
        while True:
            page = await self.messages(
                phone_number_id=phone_number_id, session_id=session_id, after=after, limit=1000
            )
            items.extend(page["items"])
            if page["next_after"] is None:
                return items
            after = page["next_after"]

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/stats")
        return result

    async def reset(self, *, everything: bool = False) -> dict[str, Any]:
        """Forget the traffic (``everything``: numbers, sessions and knobs too)."""
        result: dict[str, Any] = await self._call("POST", "/reset", json={"everything": everything})
        return result


def sessions_url(base_url: str, session_id: str) -> str:
    """The WebSocket URL of ``session_id`` on the simulator at ``base_url``."""
    base = "ws" + base_url.rstrip("/").removeprefix("http")
    return base + SESSIONS_PATH + quote(session_id, safe="")


class SimSession:
    """One session-mode connection. Every received frame is kept in :attr:`frames`."""

    def __init__(self, websocket: ClientConnection, session_id: str) -> None:
        self.websocket = websocket
        self.session_id = session_id
        self.frames: list[dict[str, Any]] = []

    @classmethod
    async def open(
        cls, base_url: str, session_id: str, *, credentials: str | None = None, hello: bool = True
    ) -> SimSession:
        """Connect and (unless ``hello=False``) say hello with ``credentials``."""
        websocket = await connect(
            sessions_url(base_url, session_id),
            compression=None,
            ping_interval=None,
            open_timeout=30,
            # Frames a test does not wait for (receipts) must not stall the connection:
            # with a bounded queue, reading stops and even the closing handshake hangs.
            max_queue=None,
        )
        session = cls(websocket, session_id)
        if hello:
            await session.send(
                {"type": "hello", "session_id": session_id, "credentials": credentials}
            )
        return session

    async def send(self, frame: dict[str, Any]) -> None:
        await self.websocket.send(json.dumps(frame))

    async def recv(self, within: float = 10.0) -> dict[str, Any]:
        """The next frame (TimeoutError after ``within`` seconds)."""
        async with asyncio.timeout(within):
            raw = await self.websocket.recv()
        frame: dict[str, Any] = json.loads(raw)
        self.frames.append(frame)
        return frame

    async def expect(self, *types: str, within: float = 10.0) -> dict[str, Any]:
        """Receive frames until one of ``types`` comes; return it (TimeoutError after
        ``within`` seconds)."""
        async with asyncio.timeout(within):
            while True:
                frame = await self.recv(within)
                if frame["type"] in types:
                    return frame

    async def connected(self, within: float = 10.0) -> dict[str, Any]:
        """Wait for ``connected`` (pairing first if it comes); return it."""
        return await self.expect("connected", within=within)

    @property
    def credentials(self) -> str | None:
        """The credentials of the last ``paired`` frame received."""
        for frame in reversed(self.frames):
            if frame["type"] == "paired":
                credentials: str = frame["credentials"]
                return credentials
        return None

    async def send_text(self, message_id: str, to: str, text: str) -> None:
        await self.send({"type": "send", "message_id": message_id, "to": to, "text": text})

    async def ping(self, frame_id: str | None = None) -> None:
        await self.send({"type": "ping"} if frame_id is None else {"type": "ping", "id": frame_id})

    async def wait_closed(self, within: float = 10.0) -> int | None:
        """Wait until the server closes the connection (frames meanwhile are kept);
        return the close code (TimeoutError after ``within`` seconds)."""
        try:
            async with asyncio.timeout(within):
                async for raw in self.websocket:
                    self.frames.append(json.loads(raw))
        except ConnectionClosed:
            pass
        return self.websocket.close_code

    async def close(self) -> None:
        await self.websocket.close()
