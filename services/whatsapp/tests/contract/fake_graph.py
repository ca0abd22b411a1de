"""A fake of the Graph API's WhatsApp send endpoint, served over real HTTP for tests.

``FakeGraphApi`` answers ``POST /{version}/{phone_number_id}/messages`` the way Meta
documents it: it checks the bearer token (401 with error 190 otherwise) and the request
body against the documented send shapes (400 with error 100 and the reason otherwise),
records every request, and answers with the documented success payload and a fresh
``wamid``, unless a scripted answer was queued with :meth:`FakeGraphApi.answer_next` or
:meth:`FakeGraphApi.fail_next`. Documented payloads live in ``fixtures/graph``; the
documented webhook payloads in ``fixtures/webhooks`` are here for tests that play Meta's
side of a webhook (:func:`signed_webhook`).

:func:`serve` runs an app with uvicorn on ``127.0.0.1`` on a port the kernel picks, in the
running event loop, and yields its base URL.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import itertools
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FIXTURES = Path(__file__).with_name("fixtures")

#: Meta's limits and rules for send requests that the fake enforces.
MAX_TEXT_BODY = 4096
MAX_CALLBACK_DATA = 512
MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")
_CAPTIONED = {"image", "video", "document"}
_TOP_LEVEL_KEYS = {
    "messaging_product",
    "recipient_type",
    "to",
    "type",
    "context",
    "biz_opaque_callback_data",
    "text",
    "template",
    *MEDIA_TYPES,
}


def load_fixture(relative: str) -> Any:
    """A JSON fixture by path under ``fixtures/`` (e.g. ``"webhooks/text.json"``)."""
    return json.loads((FIXTURES / relative).read_text(encoding="utf-8"))


def fixture_bytes(relative: str) -> bytes:
    """A fixture's raw bytes, as Meta would send them (what signatures cover)."""
    return (FIXTURES / relative).read_bytes()


def graph_error(code: int) -> tuple[int, dict[str, Any]]:
    """The documented HTTP status and body of Graph error ``code`` (``graph/errors.json``)."""
    documented = load_fixture("graph/errors.json")[str(code)]
    return documented["http_status"], documented["body"]


def signed_webhook(raw_body: bytes, app_secret: str) -> dict[str, str]:
    """The headers Meta sends with webhook body ``raw_body``, signed with ``app_secret``."""
    digest = hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"}


@dataclass(frozen=True)
class ScriptedAnswer:
    """One answer to give instead of the default: ``body`` is JSON, or text when a str."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class ReceivedRequest:
    """A send request as the fake received it."""

    api_version: str
    phone_number_id: str
    headers: Mapping[str, str]
    body: Any


class FakeGraphApi:
    """The send endpoint of the Graph API for one access token.

    ``accepted`` counts the sends it answered with success: the witness of how many
    messages "WhatsApp" took.
    """

    def __init__(self, access_token: str) -> None:
        self.access_token = access_token
        self.requests: list[ReceivedRequest] = []
        self.accepted = 0
        self._script: deque[ScriptedAnswer] = deque()
        self._ids = itertools.count(1)
        self.app = Starlette(
            routes=[Route("/{version}/{phone_number_id}/messages", self._send, methods=["POST"])]
        )

    def reset(self) -> None:
        """Forget recorded requests and scripted answers."""
        self.requests.clear()
        self._script.clear()
        self.accepted = 0

    def answer_next(self, answer: ScriptedAnswer) -> None:
        """Answer the next valid, authorized send with ``answer`` (answers queue up)."""
        self._script.append(answer)

    def fail_next(self, code: int, headers: Mapping[str, str] | None = None) -> None:
        """Answer the next send with documented Graph error ``code``."""
        status, body = graph_error(code)
        self.answer_next(ScriptedAnswer(status=status, body=body, headers=headers or {}))

    async def _send(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.requests.append(
            ReceivedRequest(
                api_version=request.path_params["version"],
                phone_number_id=request.path_params["phone_number_id"],
                headers=dict(request.headers),
                body=body,
            )
        )
        if request.headers.get("authorization") != f"Bearer {self.access_token}":
            status, error = graph_error(190)
            return JSONResponse(error, status_code=status)
        if not request.headers.get("content-type", "").startswith("application/json"):
            return _invalid("the body must be JSON (Content-Type: application/json)")
        problem = send_request_problem(body)
        if problem is not None:
            return _invalid(problem)
        if self._script:
            answer = self._script.popleft()
            if answer.delay:
                await asyncio.sleep(answer.delay)
            if isinstance(answer.body, str):
                return Response(answer.body, answer.status, headers=dict(answer.headers))
            return JSONResponse(answer.body, answer.status, headers=dict(answer.headers))
        self.accepted += 1
        return JSONResponse(self._success(body["to"]))

    def _success(self, to: str) -> dict[str, Any]:
        success: dict[str, Any] = copy.deepcopy(load_fixture("graph/send_success.json"))
        success["contacts"][0] = {"input": to, "wa_id": to.lstrip("+")}
        success["messages"][0]["id"] = f"wamid.FAKE{next(self._ids):012d}"
        return success


def _invalid(details: str) -> JSONResponse:
    status, error = graph_error(100)
    error = copy.deepcopy(error)
    error["error"]["error_data"]["details"] = details
    return JSONResponse(error, status_code=status)


def send_request_problem(body: Any) -> str | None:
    """Why ``body`` is not a valid Cloud API send request, or None when it is."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    unknown = set(body) - _TOP_LEVEL_KEYS
    if unknown:
        return f"unexpected keys {sorted(unknown)}"
    if body.get("messaging_product") != "whatsapp":
        return "messaging_product must be 'whatsapp'"
    if body.get("recipient_type", "individual") != "individual":
        return "recipient_type must be 'individual'"
    if not isinstance(body.get("to"), str) or not body["to"]:
        return "to is required"
    callback = body.get("biz_opaque_callback_data")
    if callback is not None and (
        not isinstance(callback, str) or len(callback) > MAX_CALLBACK_DATA
    ):
        return "biz_opaque_callback_data must be a string of at most 512 characters"
    context = body.get("context")
    if context is not None and (
        not isinstance(context, dict) or not isinstance(context.get("message_id"), str)
    ):
        return "context must be {'message_id': <wamid>}"
    kind = body.get("type", "text")
    payloads = {key for key in ("text", "template", *MEDIA_TYPES) if key in body}
    if payloads != {kind}:
        return f"type {kind!r} needs exactly the {kind!r} object, got {sorted(payloads)}"
    content = body[kind]
    if kind == "text":
        return _text_problem(content)
    if kind == "template":
        return _template_problem(content)
    return _media_problem(kind, content)


def _text_problem(text: Any) -> str | None:
    if not isinstance(text, dict) or not isinstance(text.get("body"), str) or not text["body"]:
        return "text.body is required"
    if len(text["body"]) > MAX_TEXT_BODY:
        return f"text.body is longer than {MAX_TEXT_BODY} characters"
    if set(text) - {"body", "preview_url"}:
        return "text takes only body and preview_url"
    return None


def _template_problem(template: Any) -> str | None:
    if not isinstance(template, dict) or not template.get("name"):
        return "template.name is required"
    language = template.get("language")
    if not isinstance(language, dict) or not language.get("code"):
        return "template.language.code is required"
    for component in template.get("components", []):
        if component.get("type") not in {"header", "body", "button"}:
            return f"unknown template component type {component.get('type')!r}"
        for parameter in component.get("parameters", []):
            if parameter.get("type") == "text" and not isinstance(parameter.get("text"), str):
                return "a text parameter needs text"
    return None


def _media_problem(kind: str, media: Any) -> str | None:
    if not isinstance(media, dict) or ("link" in media) == ("id" in media):
        return f"{kind} needs exactly one of link and id"
    if "caption" in media and kind not in _CAPTIONED:
        return f"{kind} does not take a caption"
    if "filename" in media and kind != "document":
        return "only documents take a filename"
    return None


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve ASGI ``app`` on 127.0.0.1 in this event loop; yields ``http://127.0.0.1:<port>``.

    The socket is bound before uvicorn starts, so there is no race for the port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
