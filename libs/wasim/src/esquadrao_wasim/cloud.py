"""The Cloud API surface: ``POST /{version}/{phone_number_id}/messages`` as Graph has it.

Requests authenticate with the number's access token (``Authorization: Bearer …`` or
``access_token=…``). A send answers ``{"messaging_product", "contacts": [{"input",
"wa_id"}], "messages": [{"id": "wamid.…"}]}``; an error answers Graph's error document
with Meta's code (see :mod:`esquadrao_wasim.errors`). ``biz_opaque_callback_data`` is
echoed in every status webhook of the message, and the witness counts the message by it.
The same endpoint with ``{"status": "read", "message_id"}`` marks an inbound message as
read, as on Meta's.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from esquadrao_wasim.errors import (
    ACCESS_TOKEN,
    INVALID_PARAMETER,
    WhatsappError,
    graph_error_body,
)
from esquadrao_wasim.simulator import Channel, OutboundMessage, Sender, Simulator, digits


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CloudText(_Strict):
    body: str = Field(min_length=1, max_length=4096)
    preview_url: bool = False


class CloudLanguage(_Strict):
    code: str = Field(min_length=2)
    policy: Literal["deterministic"] | None = None


class CloudTemplate(_Strict):
    name: str = Field(min_length=1, max_length=512)
    language: CloudLanguage
    components: list[dict[str, Any]] = Field(default_factory=list)


class CloudMedia(_Strict):
    id: str | None = None
    link: str | None = None
    caption: str | None = Field(default=None, max_length=1024)
    filename: str | None = None

    @model_validator(mode="after")
    def _id_or_link(self) -> CloudMedia:
        if (self.id is None) == (self.link is None):
            raise ValueError("exactly one of id and link is required")
        return self


class CloudContext(_Strict):
    message_id: str = Field(min_length=1)


class CloudMessage(_Strict):
    """A send request body, as Meta's reference describes it (unknown keys are refused)."""

    messaging_product: Literal["whatsapp"]
    recipient_type: Literal["individual"] = "individual"
    to: str = Field(min_length=5, max_length=20)
    type: Literal[
        "text",
        "template",
        "image",
        "document",
        "audio",
        "video",
        "sticker",
        "interactive",
        "location",
        "contacts",
        "reaction",
    ] = "text"
    context: CloudContext | None = None
    text: CloudText | None = None
    template: CloudTemplate | None = None
    image: CloudMedia | None = None
    document: CloudMedia | None = None
    audio: CloudMedia | None = None
    video: CloudMedia | None = None
    sticker: CloudMedia | None = None
    interactive: dict[str, Any] | None = None
    location: dict[str, Any] | None = None
    contacts: list[dict[str, Any]] | None = None
    reaction: dict[str, Any] | None = None
    biz_opaque_callback_data: str | None = Field(default=None, max_length=512)

    @model_validator(mode="after")
    def _content_of_its_type(self) -> CloudMessage:
        if getattr(self, self.type) is None:
            raise ValueError(f"type is {self.type!r} but there is no {self.type!r} object")
        if not digits(self.to):
            raise ValueError("to must be a phone number")
        return self


class MarkAsRead(_Strict):
    messaging_product: Literal["whatsapp"]
    status: Literal["read"]
    message_id: str = Field(min_length=1)
    typing_indicator: dict[str, Any] | None = None


def graph_error(error: WhatsappError, details: str | None = None, **kwargs: Any) -> JSONResponse:
    return JSONResponse(graph_error_body(error, details, **kwargs), status_code=error.http_status)


def _validation_details(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query_params.get("access_token")


def cloud_router(simulator: Simulator) -> APIRouter:
    router = APIRouter(tags=["Cloud API"])

    @router.post("/{version}/{phone_number_id}/messages", response_model=None)
    async def send_message(version: str, phone_number_id: str, request: Request) -> JSONResponse:
        """Send a message from ``phone_number_id`` (or mark an inbound one as read)."""
        number = simulator.numbers.get(phone_number_id)
        if number is None:
            return graph_error(
                INVALID_PARAMETER,
                f"Unsupported post request. Object with ID '{phone_number_id}' does not exist,"
                " cannot be loaded due to missing permissions, or does not support this"
                " operation.",
                subcode=33,
            )
        if _token(request) != number.access_token:
            return graph_error(ACCESS_TOKEN)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return graph_error(INVALID_PARAMETER, "The request body is not valid JSON.")
        if isinstance(body, dict) and "status" in body:
            try:
                MarkAsRead.model_validate(body)
            except ValidationError as error:
                return graph_error(INVALID_PARAMETER, _validation_details(error))
            return JSONResponse({"success": True})
        try:
            message = CloudMessage.model_validate(body)
        except ValidationError as error:
            return graph_error(INVALID_PARAMETER, _validation_details(error))
        outcome = await simulator.submit(
            Sender(Channel.CLOUD, phone_number_id),
            OutboundMessage(
                message_id=message.biz_opaque_callback_data or "",
                to=digits(message.to),
                kind=message.type,
                free_form=message.type != "template",
            ),
        )
        if outcome.error is not None or outcome.provider_message_id is None:
            return graph_error(outcome.error or INVALID_PARAMETER, outcome.details)
        sent: dict[str, str] = {"id": outcome.provider_message_id}
        if message.type == "template":
            sent["message_status"] = "accepted"
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": message.to, "wa_id": digits(message.to)}],
                "messages": [sent],
            }
        )

    return router
