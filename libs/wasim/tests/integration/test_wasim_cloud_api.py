"""The Cloud API send endpoint over real HTTP: Graph's shapes, auth, and Meta's error codes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from esquadrao_wasim.client import SimulatorControl
from esquadrao_wasim.server import RunningSimulator

pytestmark = pytest.mark.integration

TOKEN = "test-access-token"


def text(to: str, message_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"preview_url": False, "body": "Olá!"},
    }
    if message_id is not None:
        body["biz_opaque_callback_data"] = message_id
    return body


@pytest.fixture
async def send_url(simulator: RunningSimulator, control: SimulatorControl) -> str:
    await control.register_number(
        "1001", display_phone_number="+55 11 4000-1001", access_token=TOKEN
    )
    return f"{simulator.url}/v21.0/1001/messages"


async def post(
    http: httpx.AsyncClient, url: str, body: Any, token: str | None = TOKEN
) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return await http.post(url, json=body, headers=headers)


def assert_graph_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["type"] == "OAuthException"
    assert error["message"].startswith(f"(#{code}) ")
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert error["error_data"]["details"]
    assert error["fbtrace_id"]
    return error


async def test_a_text_send_answers_graph_s_success_shape(
    http: httpx.AsyncClient, send_url: str, control: SimulatorControl
) -> None:
    response = await post(http, send_url, text("+55 (11) 98888-7777", "msg-1"))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": "+55 (11) 98888-7777", "wa_id": "5511988887777"}]
    (message,) = body["messages"]
    assert message["id"].startswith("wamid.")
    history = await control.message("msg-1")
    assert history["accepted_count"] == 1
    assert history["accepted"][0]["provider_message_id"] == message["id"]
    assert history["accepted"][0]["recipient"] == "5511988887777"


async def test_templates_and_media_are_accepted(http: httpx.AsyncClient, send_url: str) -> None:
    template = {
        "messaging_product": "whatsapp",
        "to": "5511988887777",
        "type": "template",
        "template": {
            "name": "boas_vindas",
            "language": {"code": "pt_BR"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}],
        },
    }
    image = {
        "messaging_product": "whatsapp",
        "to": "5511988887776",
        "type": "image",
        "image": {"link": "https://example.com/a.png", "caption": "veja"},
    }

    template_response = await post(http, send_url, template)
    image_response = await post(http, send_url, image)

    assert template_response.status_code == 200, template_response.text
    assert template_response.json()["messages"][0]["message_status"] == "accepted"
    assert image_response.status_code == 200, image_response.text


async def test_each_send_gets_a_new_provider_id(http: httpx.AsyncClient, send_url: str) -> None:
    ids = {
        (await post(http, send_url, text(f"+551198888{n:04d}"))).json()["messages"][0]["id"]
        for n in range(20)
    }

    assert len(ids) == 20


@pytest.mark.parametrize("token", ["wrong-token", None])
async def test_a_wrong_or_missing_token_gets_190(
    http: httpx.AsyncClient, send_url: str, control: SimulatorControl, token: str | None
) -> None:
    response = await post(http, send_url, text("+5511988887777", "m-auth"), token=token)

    assert_graph_error(response, 401, 190)
    assert await control.accepted_count("m-auth") == 0


async def test_the_token_may_come_as_the_access_token_parameter(
    http: httpx.AsyncClient, send_url: str
) -> None:
    response = await http.post(
        send_url, params={"access_token": TOKEN}, json=text("+5511988887777")
    )

    assert response.status_code == 200, response.text


async def test_an_unknown_phone_number_id_gets_100_with_subcode_33(
    http: httpx.AsyncClient, simulator: RunningSimulator
) -> None:
    response = await post(http, f"{simulator.url}/v21.0/999/messages", text("+5511988887777"))

    error = assert_graph_error(response, 400, 100)
    assert error["error_subcode"] == 33
    assert "999" in error["error_data"]["details"]


@pytest.mark.parametrize(
    "body",
    [
        {"to": "+5511988887777", "type": "text", "text": {"body": "x"}},
        {**text("+5511988887777"), "messaging_product": "sms"},
        {**text("+5511988887777"), "type": "template"},
        {**text("+5511988887777"), "text": {"body": ""}},
        {**text("+5511988887777"), "unexpected": True},
        {**text("+5511988887777"), "to": "abc-def"},
        {
            "messaging_product": "whatsapp",
            "to": "5511988887777",
            "type": "image",
            "image": {"caption": "no link nor id"},
        },
        ["not", "an", "object"],
    ],
)
async def test_a_malformed_body_gets_100(
    http: httpx.AsyncClient, send_url: str, control: SimulatorControl, body: Any
) -> None:
    response = await post(http, send_url, body)

    assert_graph_error(response, 400, 100)
    assert (await control.stats())["accepted_total"] == 0


async def test_a_body_that_is_not_json_gets_100(http: httpx.AsyncClient, send_url: str) -> None:
    response = await http.post(
        send_url, content=b"{not json", headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert_graph_error(response, 400, 100)


async def test_marking_an_inbound_message_read_answers_success(
    http: httpx.AsyncClient, send_url: str, control: SimulatorControl
) -> None:
    body = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN"}

    response = await post(http, send_url, body)

    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert (await control.stats())["accepted_total"] == 0


@pytest.mark.parametrize(
    ("knobs", "status", "code"),
    [
        ({"throttle_rate": 1.0}, 400, 130429),
        ({"spam_rate": 1.0}, 400, 131048),
        ({"undeliverable_rate": 1.0}, 400, 131026),
        ({"not_on_whatsapp": ["+55 11 98888-7777"]}, 400, 131026),
        ({"failure_rate": 1.0}, 500, 131000),
        ({"enforce_service_window": True}, 400, 131047),
    ],
)
async def test_knobs_produce_meta_s_errors_and_nothing_is_accepted(
    http: httpx.AsyncClient,
    send_url: str,
    control: SimulatorControl,
    knobs: dict[str, Any],
    status: int,
    code: int,
) -> None:
    await control.set_number_knobs("1001", **knobs)

    response = await post(http, send_url, text("+5511988887777", "m-refused"))

    assert_graph_error(response, status, code)
    history = await control.message("m-refused")
    assert history["accepted_count"] == 0
    assert [r["code"] for r in history["rejected"]] == [code]
    assert (await control.stats())["rejected_by_code"] == {str(code): 1}


async def test_the_throughput_limit_refuses_what_exceeds_it(
    http: httpx.AsyncClient, send_url: str, control: SimulatorControl
) -> None:
    await control.set_number_knobs("1001", max_mps=0.001, pair_rate_limit=None)

    first = await post(http, send_url, text("+5511988880001"))
    second = await post(http, send_url, text("+5511988880002"))

    assert first.status_code == 200
    assert_graph_error(second, 400, 130429)


async def test_the_pair_rate_limit_applies_per_recipient(
    http: httpx.AsyncClient, send_url: str, control: SimulatorControl
) -> None:
    await control.set_number_knobs("1001", pair_rate_limit={"burst": 2, "per_seconds": 3600})

    same = [await post(http, send_url, text("+5511988887777")) for _ in range(3)]
    other = await post(http, send_url, text("+5511988886666"))

    assert [r.status_code for r in same[:2]] == [200, 200]
    assert_graph_error(same[2], 400, 131056)
    assert other.status_code == 200


async def test_a_template_is_allowed_outside_the_service_window_and_a_reply_opens_it(
    http: httpx.AsyncClient, send_url: str, control: SimulatorControl
) -> None:
    await control.set_number_knobs("1001", enforce_service_window=True)
    template = {
        "messaging_product": "whatsapp",
        "to": "5511988887777",
        "type": "template",
        "template": {"name": "reengajar", "language": {"code": "pt_BR"}},
    }

    assert (await post(http, send_url, template)).status_code == 200
    assert_graph_error(await post(http, send_url, text("+5511988887777")), 400, 131047)
    await control.inject_inbound(
        phone_number_id="1001", from_phone="+5511988887777", text="Oi, quero saber mais"
    )
    assert (await post(http, send_url, text("+5511988887777"))).status_code == 200


async def test_a_seed_makes_random_outcomes_reproducible(
    http: httpx.AsyncClient, send_url: str, control: SimulatorControl
) -> None:
    async def outcomes() -> list[int]:
        await control.set_knobs(seed=7, spam_rate=0.5, pair_rate_limit=None)
        return [
            (await post(http, send_url, text(f"+551198888{n:04d}"))).status_code for n in range(30)
        ]

    first = await outcomes()
    await control.set_knobs(seed=8)
    await control.set_knobs(seed=7)
    second = await outcomes()

    assert first == second
    assert 200 in first
    assert 400 in first
