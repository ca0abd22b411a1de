"""The control and witness API, ``/_sim/…`` (JSON): what tests and benchmarks use to set
the simulator up, steer it, and ask it what was sent.

Errors are FastAPI's ``{"detail": …}`` with 404 for unknown numbers and sessions, 409 for
an action the session's state does not allow, and 422 for invalid input.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from esquadrao_wasim import store
from esquadrao_wasim.knobs import Knobs, deep_merge
from esquadrao_wasim.sessions import SessionHub
from esquadrao_wasim.simulator import Channel, PhoneNumber, Sender, Simulator
from esquadrao_wasim.webhooks import WebhookDispatcher

#: Largest page of ``GET /_sim/messages``.
MAX_PAGE = 1000


class NumberRegistration(BaseModel):
    """A Cloud API number's registration (the id is the path's)."""

    model_config = ConfigDict(extra="forbid")

    display_phone_number: str = Field(min_length=1)
    access_token: str = Field(min_length=1)
    waba_id: str | None = None
    webhook_url: str | None = None
    app_secret: str | None = None
    verify_token: str | None = None

    @model_validator(mode="after")
    def _secret_with_webhook(self) -> NumberRegistration:
        if self.webhook_url is not None and not self.app_secret:
            raise ValueError("a webhook_url needs an app_secret to sign the callbacks")
        return self


class SessionSetup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_e164: str | None = Field(default=None, pattern=r"^\+[1-9]\d{7,14}$")


class Ban(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = "account banned for violating the WhatsApp Business Terms of Service"


class Inbound(BaseModel):
    """A customer's message to a number or a session."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    phone_number_id: str | None = None
    session_id: str | None = None
    from_: str = Field(alias="from", min_length=8)
    text: str = Field(min_length=1)
    profile_name: str | None = None
    reply_to: str | None = None

    @model_validator(mode="after")
    def _one_receiver(self) -> Inbound:
        if (self.phone_number_id is None) == (self.session_id is None):
            raise ValueError("give exactly one of phone_number_id and session_id")
        return self


class Reset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    everything: bool = Field(default=False, description="Also forget numbers, sessions and knobs.")


def _invalid(error: ValidationError) -> HTTPException:
    return HTTPException(422, detail=error.errors(include_url=False, include_context=False))


def control_router(
    simulator: Simulator, sessions: SessionHub, webhooks: WebhookDispatcher
) -> APIRouter:
    router = APIRouter(prefix="/_sim", tags=["control"])

    def number_or_404(phone_number_id: str) -> PhoneNumber:
        number = simulator.numbers.get(phone_number_id)
        if number is None:
            raise HTTPException(404, detail=f"no number {phone_number_id!r}")
        return number

    @router.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "started_at": simulator.started_at, "now": time.time()}

    # -- knobs -------------------------------------------------------------------------

    @router.get("/knobs")
    async def get_knobs() -> Knobs:
        return simulator.global_knobs

    @router.patch("/knobs")
    async def patch_knobs(changes: Annotated[dict[str, Any], Body()]) -> Knobs:
        """Change some global knobs (nested objects merge field by field)."""
        try:
            knobs = Knobs.model_validate(deep_merge(simulator.global_knobs.model_dump(), changes))
            await simulator.set_global_knobs(knobs)
        except ValidationError as error:
            raise _invalid(error) from None
        return knobs

    @router.put("/knobs")
    async def put_knobs(knobs: Knobs) -> Knobs:
        """Replace the global knobs (missing ones take their defaults)."""
        try:
            await simulator.set_global_knobs(knobs)
        except ValidationError as error:
            raise _invalid(error) from None
        return knobs

    async def describe_knobs(sender: Sender) -> dict[str, Any]:
        return {
            "override": simulator.override(sender),
            "effective": simulator.knobs(sender).model_dump(mode="json"),
        }

    async def patch_sender_knobs(sender: Sender, changes: dict[str, Any]) -> dict[str, Any]:
        try:
            await simulator.set_override(sender, deep_merge(simulator.override(sender), changes))
        except ValidationError as error:
            raise _invalid(error) from None
        return await describe_knobs(sender)

    # -- numbers -----------------------------------------------------------------------

    @router.put("/numbers/{phone_number_id}")
    async def put_number(phone_number_id: str, registration: NumberRegistration) -> dict[str, Any]:
        """Register or update a number. With a ``verify_token`` the webhook is verified
        first (Meta's handshake) and the number is not saved if that fails (422)."""
        number = PhoneNumber(phone_number_id=phone_number_id, **registration.model_dump())
        verification = None
        if number.webhook_url is not None and number.verify_token is not None:
            verification = await webhooks.verify(number)
            if not verification.verified:
                raise HTTPException(
                    422, detail=f"webhook verification failed: {verification.detail}"
                )
        await simulator.register_number(number)
        result: dict[str, Any] = {"number": number.model_dump(mode="json")}
        if verification is not None:
            result["webhook_verified"] = verification.verified
        return result

    @router.get("/numbers")
    async def list_numbers() -> list[PhoneNumber]:
        return list(simulator.numbers.values())

    @router.get("/numbers/{phone_number_id}")
    async def get_number(phone_number_id: str) -> PhoneNumber:
        return number_or_404(phone_number_id)

    @router.delete("/numbers/{phone_number_id}", status_code=204)
    async def delete_number(phone_number_id: str) -> None:
        if not await simulator.unregister_number(phone_number_id):
            raise HTTPException(404, detail=f"no number {phone_number_id!r}")

    @router.post("/numbers/{phone_number_id}/verify-webhook")
    async def verify_webhook(phone_number_id: str) -> dict[str, Any]:
        """Run the verification handshake against the number's webhook now."""
        verification = await webhooks.verify(number_or_404(phone_number_id))
        return {
            "verified": verification.verified,
            "status_code": verification.status_code,
            "detail": verification.detail,
        }

    @router.get("/numbers/{phone_number_id}/knobs")
    async def get_number_knobs(phone_number_id: str) -> dict[str, Any]:
        number_or_404(phone_number_id)
        return await describe_knobs(Sender(Channel.CLOUD, phone_number_id))

    @router.patch("/numbers/{phone_number_id}/knobs")
    async def patch_number_knobs(
        phone_number_id: str, changes: Annotated[dict[str, Any], Body()]
    ) -> dict[str, Any]:
        number_or_404(phone_number_id)
        return await patch_sender_knobs(Sender(Channel.CLOUD, phone_number_id), changes)

    @router.delete("/numbers/{phone_number_id}/knobs")
    async def delete_number_knobs(phone_number_id: str) -> dict[str, Any]:
        number_or_404(phone_number_id)
        sender = Sender(Channel.CLOUD, phone_number_id)
        await simulator.set_override(sender, {})
        return await describe_knobs(sender)

    # -- sessions ----------------------------------------------------------------------

    def session_or_404(session_id: str) -> dict[str, Any]:
        record = sessions.sessions.get(session_id)
        if record is None:
            raise HTTPException(404, detail=f"no session {session_id!r}")
        return record.describe()

    @router.put("/sessions/{session_id}")
    async def put_session(session_id: str, setup: SessionSetup) -> dict[str, Any]:
        """Create a session ahead of its first connection, or change its number."""
        return (await sessions.configure(session_id, setup.phone_e164)).describe()

    @router.get("/sessions")
    async def list_sessions(
        state: Literal["offline", "pairing", "connected", "banned"] | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> list[dict[str, Any]]:
        listed = []
        for record in sessions.sessions.values():
            if state is None or record.state == state:
                listed.append(record.describe())
                if len(listed) >= limit:
                    break
        return listed

    @router.get("/sessions/{session_id}")
    async def get_session(session_id: str) -> dict[str, Any]:
        return session_or_404(session_id)

    @router.post("/sessions/{session_id}/pair")
    async def pair_session(session_id: str) -> dict[str, Any]:
        """The phone scans the code now (for ``pairing_delay_s: null``)."""
        if not sessions.pair(session_id):
            raise HTTPException(409, detail=f"session {session_id!r} has no connection pairing")
        return session_or_404(session_id)

    @router.post("/sessions/{session_id}/disconnect")
    async def disconnect_session(session_id: str) -> dict[str, Any]:
        if not sessions.disconnect(session_id):
            raise HTTPException(409, detail=f"session {session_id!r} has no connection")
        return session_or_404(session_id)

    @router.post("/sessions/{session_id}/ban")
    async def ban_session(session_id: str, ban: Ban | None = None) -> dict[str, Any]:
        return (await sessions.ban(session_id, (ban or Ban()).reason)).describe()

    @router.post("/sessions/{session_id}/unban")
    async def unban_session(session_id: str) -> dict[str, Any]:
        record = await sessions.unban(session_id)
        if record is None:
            raise HTTPException(404, detail=f"no session {session_id!r}")
        return record.describe()

    @router.post("/sessions/{session_id}/logout")
    async def logout_session(session_id: str) -> dict[str, Any]:
        """Revoke the session's credentials, as logging out from the phone does."""
        record = await sessions.logout(session_id)
        if record is None:
            raise HTTPException(404, detail=f"no session {session_id!r}")
        return record.describe()

    @router.get("/sessions/{session_id}/knobs")
    async def get_session_knobs(session_id: str) -> dict[str, Any]:
        return await describe_knobs(Sender(Channel.SESSION, session_id))

    @router.patch("/sessions/{session_id}/knobs")
    async def patch_session_knobs(
        session_id: str, changes: Annotated[dict[str, Any], Body()]
    ) -> dict[str, Any]:
        return await patch_sender_knobs(Sender(Channel.SESSION, session_id), changes)

    @router.delete("/sessions/{session_id}/knobs")
    async def delete_session_knobs(session_id: str) -> dict[str, Any]:
        sender = Sender(Channel.SESSION, session_id)
        await simulator.set_override(sender, {})
        return await describe_knobs(sender)

    # -- traffic -----------------------------------------------------------------------

    @router.post("/inbound", status_code=202)
    async def inject_inbound(inbound: Inbound) -> dict[str, str]:
        """A customer writes to a number (webhook) or a session (frame)."""
        if inbound.phone_number_id is not None:
            number_or_404(inbound.phone_number_id)
            sender = Sender(Channel.CLOUD, inbound.phone_number_id)
        else:
            assert inbound.session_id is not None
            if inbound.session_id not in sessions.sessions:
                await sessions.configure(inbound.session_id, None)
            sender = Sender(Channel.SESSION, inbound.session_id)
        provider_id = simulator.receive(
            sender, inbound.from_, inbound.text, inbound.profile_name, inbound.reply_to
        )
        return {"provider_message_id": provider_id}

    @router.get("/messages/{message_id}")
    async def message_history(message_id: str) -> dict[str, Any]:
        """How many times ``message_id`` was accepted (with provider ids and times) and
        every refusal of it. An id never seen answers a count of 0."""
        return await simulator.database.run(store.message_history(message_id))

    @router.get("/messages")
    async def list_messages(
        phone_number_id: str | None = None,
        session_id: str | None = None,
        after: Annotated[int, Query(ge=0, description="The seq of the last item seen.")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        """Accepted messages in acceptance order, of one number or session or of all."""
        if phone_number_id is not None and session_id is not None:
            raise HTTPException(422, detail="give at most one of phone_number_id, session_id")
        channel, sender = None, None
        if phone_number_id is not None:
            channel, sender = Channel.CLOUD.value, phone_number_id
        elif session_id is not None:
            channel, sender = Channel.SESSION.value, session_id
        items = await simulator.database.run(
            store.list_accepted(channel=channel, sender=sender, after=after, limit=limit)
        )
        next_after = items[-1]["seq"] if len(items) == limit else None
        return {"items": items, "next_after": next_after}

    @router.get("/stats")
    async def stats() -> dict[str, Any]:
        return await simulator.stats()

    @router.post("/reset")
    async def reset(reset: Reset | None = None) -> dict[str, Any]:
        """Forget the traffic (and with ``everything``, numbers, sessions and knobs)."""
        everything = reset is not None and reset.everything
        if everything:
            sessions.forget_all()
        await simulator.reset(everything=everything)
        return await simulator.stats()

    return router
