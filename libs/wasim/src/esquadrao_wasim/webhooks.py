"""Webhooks of the Cloud API numbers: Meta's envelope, signed, delivered with retries.

Each callback is one POST of the ``whatsapp_business_account`` envelope with one status
or one inbound message, signed ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw
body with the app secret>``. A number's callbacks go out one at a time, in the order they
fell due; a callback answered with anything but 2xx (or not answered) is retried after
0.5 s, 1 s, 2 s, … (capped at 30 s) up to ``webhook_max_attempts`` deliveries, and
meanwhile later callbacks go ahead, so retried ones arrive out of order — as Meta's do.
Numbers without a webhook URL get no callbacks (they are counted as ``not_delivered``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx

from esquadrao_wasim.knobs import Knobs
from esquadrao_wasim.simulator import (
    Event,
    InboundEvent,
    PhoneNumber,
    Simulator,
    StatusEvent,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
RETRY_CAP_S = 30.0


def sign(app_secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value of ``body``."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _metadata(number: PhoneNumber) -> dict[str, str]:
    return {
        "display_phone_number": number.display_phone_number,
        "phone_number_id": number.phone_number_id,
    }


def status_value(number: PhoneNumber, event: StatusEvent) -> dict[str, Any]:
    """The ``value`` of a status callback (Graph v20+ shape)."""
    status: dict[str, Any] = {
        "id": event.provider_message_id,
        "status": event.status,
        "timestamp": str(event.timestamp),
        "recipient_id": event.recipient,
    }
    if event.message_id:
        status["biz_opaque_callback_data"] = event.message_id
    if event.error is not None:
        status["errors"] = [event.error]
    return {
        "messaging_product": "whatsapp",
        "metadata": _metadata(number),
        "statuses": [status],
    }


def inbound_value(number: PhoneNumber, event: InboundEvent) -> dict[str, Any]:
    """The ``value`` of an inbound text message callback."""
    message: dict[str, Any] = {
        "from": event.from_,
        "id": event.provider_message_id,
        "timestamp": str(event.timestamp),
        "type": "text",
        "text": {"body": event.text},
    }
    if event.reply_to is not None:
        message["context"] = {"from": number.display_phone_number, "id": event.reply_to}
    return {
        "messaging_product": "whatsapp",
        "metadata": _metadata(number),
        "contacts": [{"profile": {"name": event.profile_name}, "wa_id": event.from_}],
        "messages": [message],
    }


def envelope(number: PhoneNumber, value: dict[str, Any]) -> dict[str, Any]:
    """Meta's webhook envelope around one ``value``."""
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": number.entry_id, "changes": [{"value": value, "field": "messages"}]}],
    }


@dataclass
class _Callback:
    body: bytes
    max_attempts: int
    attempts: int = 0


@dataclass(frozen=True)
class Verification:
    """The outcome of a webhook verification handshake."""

    verified: bool
    status_code: int | None
    detail: str


class WebhookDispatcher:
    """The Cloud API channel's event sink: see the module docstring."""

    def __init__(
        self,
        simulator: Simulator,
        *,
        retry_base_s: float = 0.5,
        timeout_s: float = 10.0,
    ) -> None:
        self.simulator = simulator
        self.retry_base_s = retry_base_s
        self._client = httpx.AsyncClient(timeout=timeout_s)
        self._queues: dict[str, deque[_Callback]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._retries: set[asyncio.TimerHandle] = set()
        self._counts = {"delivered": 0, "failed_attempts": 0, "gave_up": 0, "not_delivered": 0}

    async def close(self) -> None:
        self.clear()
        await self._client.aclose()

    def deliver(self, sender_id: str, event: Event, knobs: Knobs) -> None:
        number = self.simulator.numbers.get(sender_id)
        if number is None or number.webhook_url is None:
            self._counts["not_delivered"] += 1
            return
        if isinstance(event, StatusEvent):
            value = status_value(number, event)
        else:
            value = inbound_value(number, event)
        body = json.dumps(envelope(number, value), separators=(",", ":")).encode()
        self._enqueue(sender_id, _Callback(body, knobs.webhook_max_attempts))

    def stats(self) -> dict[str, Any]:
        pending = sum(len(queue) for queue in self._queues.values()) + len(self._retries)
        return {**self._counts, "pending": pending}

    def clear(self) -> None:
        for worker in self._workers.values():
            worker.cancel()
        for handle in self._retries:
            handle.cancel()
        self._workers.clear()
        self._queues.clear()
        self._retries.clear()
        self._counts = dict.fromkeys(self._counts, 0)

    def _enqueue(self, number_id: str, callback: _Callback) -> None:
        self._queues.setdefault(number_id, deque()).append(callback)
        if number_id not in self._workers:
            self._workers[number_id] = asyncio.create_task(self._work(number_id))

    async def _work(self, number_id: str) -> None:
        queue = self._queues[number_id]
        try:
            while queue:
                callback = queue.popleft()
                callback.attempts += 1
                if await self._post(number_id, callback.body):
                    self._counts["delivered"] += 1
                    continue
                self._counts["failed_attempts"] += 1
                if callback.attempts >= callback.max_attempts:
                    self._counts["gave_up"] += 1
                    log.warning(
                        "webhook of %s given up after %d attempts", number_id, callback.attempts
                    )
                    continue
                self._retry_later(number_id, callback)
        finally:
            if self._workers.get(number_id) is asyncio.current_task():
                del self._workers[number_id]
                if not queue:
                    del self._queues[number_id]

    def _retry_later(self, number_id: str, callback: _Callback) -> None:
        delay = min(RETRY_CAP_S, self.retry_base_s * 2 ** (callback.attempts - 1))

        def retry() -> None:
            self._retries.discard(handle)
            self._enqueue(number_id, callback)

        handle = asyncio.get_running_loop().call_later(delay, retry)
        self._retries.add(handle)

    async def _post(self, number_id: str, body: bytes) -> bool:
        number = self.simulator.numbers.get(number_id)
        if number is None or number.webhook_url is None:
            return False
        headers = {"Content-Type": "application/json"}
        if number.app_secret is not None:
            headers[SIGNATURE_HEADER] = sign(number.app_secret, body)
        try:
            response = await self._client.post(number.webhook_url, content=body, headers=headers)
        except httpx.HTTPError as error:
            log.info("webhook of %s to %s failed: %r", number_id, number.webhook_url, error)
            return False
        return response.is_success

    async def verify(self, number: PhoneNumber) -> Verification:
        """Meta's verification handshake: ``GET <webhook_url>?hub.mode=subscribe&
        hub.challenge=<n>&hub.verify_token=<token>``; verified when the answer is 200
        with exactly the challenge as body."""
        if number.webhook_url is None or number.verify_token is None:
            return Verification(False, None, "the number has no webhook_url or verify_token")
        challenge = str(secrets.randbelow(10**10))
        params = {
            "hub.mode": "subscribe",
            "hub.challenge": challenge,
            "hub.verify_token": number.verify_token,
        }
        try:
            response = await self._client.get(number.webhook_url, params=params)
        except httpx.HTTPError as error:
            return Verification(False, None, f"the callback URL did not answer: {error!r}")
        if response.status_code != 200:
            return Verification(False, response.status_code, "the callback did not answer 200")
        if response.text.strip() != challenge:
            return Verification(
                False, response.status_code, "the callback did not echo hub.challenge"
            )
        return Verification(True, response.status_code, "challenge echoed")
