"""Sessions through the API on Postgres: create (credentials sealed, never returned),
validation, numbers unique among live sessions, change, soft delete and restore, tenant
isolation, pagination and filters, roles, and the operational endpoints, whose
``SessionControl`` commands are read back from the outbox."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from esquadrao.whatsapp.v1 import commands_pb2
from esquadrao_common.auth import Role
from whatsapp.domain.events import INTERACTIVE_TOPIC
from whatsapp.domain.ledger import LedgerEntry, Priority
from whatsapp.domain.messages import MessageStatus
from whatsapp.domain.sessions import SessionState

if TYPE_CHECKING:
    from conftest import WhatsappApi

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def cloud_credentials(number: str = "106540352242922", **changes: str) -> dict[str, str]:
    return {
        "access_token": "EAAG-secret-access-token-1",
        "phone_number_id": number,
        "app_secret": "app-secret-never-shown",
        "verify_token": "verify-token-never-shown",
        **changes,
    }


def field_errors(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    return {error["field"]: error["message"] for error in response.json()["errors"]}


async def controls(api: WhatsappApi, session_id: str) -> list[commands_pb2.SessionControl]:
    """The SessionControl commands staged for ``session_id``, checking where they go."""
    found = []
    for staged in await api.outbox(topic=INTERACTIVE_TOPIC):
        if staged.payload == "session_control" and staged.key == session_id:
            assert staged.record.envelope.producer == "whatsapp"
            assert staged.record.envelope.event_type == "esquadrao.whatsapp.v1.SessionControl"
            found.append(staged.record.session_control)
    return found


async def test_a_sim_session_is_created_stopped(whatsapp_api: WhatsappApi) -> None:
    company = whatsapp_api.new_company()
    response = await whatsapp_api.client.post(
        "/v1/sessions",
        json={"name": "  Atendimento  ", "provider": "sim", "phone_e164": "55 11 98765-4321"},
        headers=whatsapp_api.headers(company),
    )

    assert response.status_code == 201, response.text
    session = response.json()
    assert response.headers["Location"] == f"/v1/sessions/{session['id']}"
    assert session["name"] == "Atendimento"
    assert session["provider"] == "sim"
    assert session["phone_e164"] == "+5511987654321"
    assert session["state"] == "stopped"
    assert session["desired_running"] is False
    assert session["has_credentials"] is False
    assert session["version"] == 1
    assert session["deleted_at"] is None
    assert await controls(whatsapp_api, session["id"]) == []
    fetched = await whatsapp_api.client.get(
        f"/v1/sessions/{session['id']}", headers=whatsapp_api.headers(company, Role.AGENT)
    )
    assert fetched.json() == session


async def test_cloud_credentials_are_sealed_and_never_returned(whatsapp_api: WhatsappApi) -> None:
    company = whatsapp_api.new_company()
    credentials = cloud_credentials()
    response = await whatsapp_api.client.post(
        "/v1/sessions",
        json={"name": "Oficial", "provider": "cloud", "credentials": credentials, "start": True},
        headers=whatsapp_api.headers(company),
    )

    assert response.status_code == 201, response.text
    session = response.json()
    assert session["has_credentials"] is True
    assert session["provider_number_id"] == credentials["phone_number_id"]
    assert session["desired_running"] is True
    async with whatsapp_api.uow() as uow:
        sealed = await uow.sessions.credentials(session["id"])
    assert sealed is not None
    for secret in ("access_token", "app_secret", "verify_token"):
        assert credentials[secret].encode() not in sealed
    assert whatsapp_api.cipher.open(sealed) == credentials
    headers = whatsapp_api.headers(company)
    reads = [
        response,
        await whatsapp_api.client.get(f"/v1/sessions/{session['id']}", headers=headers),
        await whatsapp_api.client.get("/v1/sessions", headers=headers),
        await whatsapp_api.client.get(f"/v1/sessions/{session['id']}/status", headers=headers),
    ]
    for read in reads:
        assert read.status_code == 200 or read.status_code == 201
        for secret in ("access_token", "app_secret", "verify_token"):
            assert credentials[secret] not in read.text
    (start,) = await controls(whatsapp_api, session["id"])
    assert start.action == commands_pb2.SESSION_ACTION_START
    assert start.session_id == session["id"]
    assert "admin tester" in start.reason


async def test_invalid_input_is_a_422_naming_the_field(whatsapp_api: WhatsappApi) -> None:
    company = whatsapp_api.new_company()
    headers = whatsapp_api.headers(company)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": " ", "provider": "sim"}, "body.name"),
        ({"name": "x", "provider": "baileys"}, "body.provider"),
        ({"name": "x", "provider": "sim", "phone_e164": "call me"}, "body.phone_e164"),
        ({"name": "x", "provider": "sim", "phone_e164": "+0 11"}, "body.phone_e164"),
        ({"name": "x", "provider": "sim", "colour": "blue"}, "body.colour"),
        ({"name": "x", "provider": "sim", "profile": "turbo"}, "body.profile"),
        ({"name": "x", "provider": "sim", "limit_overrides": {"rate": -1}}, "body.limit_overrides"),
        ({"name": "x", "provider": "sim", "limit_overrides": {"speed": 1}}, "body.limit_overrides"),
        (
            {"name": "x", "provider": "sim", "limit_overrides": {"rate": "5"}},
            "body.limit_overrides.rate",
        ),
        ({"name": "x", "provider": "sim", "pool_priority": -1}, "body.pool_priority"),
        ({"name": "x", "provider": "cloud"}, "body.credentials"),
        (
            {"name": "x", "provider": "sim", "credentials": {"saved": "x", "token": "y"}},
            "body.credentials.token",
        ),
    ]
    for body, field in cases:
        response = await whatsapp_api.client.post("/v1/sessions", json=body, headers=headers)
        assert field in field_errors(response), (body, response.json())


async def test_refused_credentials_name_the_member_and_never_echo_values(
    whatsapp_api: WhatsappApi,
) -> None:
    company = whatsapp_api.new_company()
    credentials = cloud_credentials(app_secret="   ")
    del credentials["verify_token"]
    credentials["extra_secret"] = "do-not-echo-me"
    response = await whatsapp_api.client.post(
        "/v1/sessions",
        json={"name": "x", "provider": "cloud", "credentials": credentials},
        headers=whatsapp_api.headers(company),
    )

    assert set(field_errors(response)) == {
        "body.credentials.app_secret",
        "body.credentials.verify_token",
        "body.credentials.extra_secret",
    }
    assert "do-not-echo-me" not in response.text
    assert credentials["access_token"] not in response.text


async def test_a_cloud_number_belongs_to_one_live_session(whatsapp_api: WhatsappApi) -> None:
    company, other = whatsapp_api.new_company(), whatsapp_api.new_company()
    body = {"name": "a", "provider": "cloud", "credentials": cloud_credentials("111")}
    first = await whatsapp_api.create_session(company, **body)

    same = await whatsapp_api.client.post(
        "/v1/sessions", json=body, headers=whatsapp_api.headers(company)
    )
    foreign = await whatsapp_api.client.post(
        "/v1/sessions", json=body, headers=whatsapp_api.headers(other)
    )

    assert same.status_code == 409
    assert same.json()["existing_id"] == first["id"]
    assert foreign.status_code == 409
    assert "existing_id" not in foreign.json()
    deleted = await whatsapp_api.client.delete(
        f"/v1/sessions/{first['id']}", headers=whatsapp_api.headers(company)
    )
    assert deleted.status_code == 204
    second = await whatsapp_api.create_session(other, **body)
    restore = await whatsapp_api.client.post(
        f"/v1/sessions/{first['id']}/restore", headers=whatsapp_api.headers(company)
    )
    assert restore.status_code == 409, restore.text
    moved = await whatsapp_api.client.patch(
        f"/v1/sessions/{second['id']}",
        json={"credentials": cloud_credentials("222")},
        headers=whatsapp_api.headers(other),
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["provider_number_id"] == "222"
    restored = await whatsapp_api.client.post(
        f"/v1/sessions/{first['id']}/restore", headers=whatsapp_api.headers(company)
    )
    assert restored.status_code == 200, restored.text
    assert restored.json()["deleted_at"] is None
    assert restored.json()["desired_running"] is False


async def test_patch_changes_what_it_names(whatsapp_api: WhatsappApi) -> None:
    company = whatsapp_api.new_company()
    headers = whatsapp_api.headers(company)
    session = await whatsapp_api.create_session(company, pool_id="vendas", profile="sim")
    url = f"/v1/sessions/{session['id']}"

    response = await whatsapp_api.client.patch(
        url,
        json={"name": "Vendas 2", "pool_priority": 3, "limit_overrides": {"rate": 0.5}},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["name"], changed["pool_id"], changed["pool_priority"]) == (
        "Vendas 2",
        "vendas",
        3,
    )
    assert changed["limit_overrides"] == {"rate": 0.5}
    assert changed["version"] == 2

    cleared = (
        await whatsapp_api.client.patch(
            url, json={"pool_id": None, "profile": None, "limit_overrides": None}, headers=headers
        )
    ).json()
    assert (cleared["pool_id"], cleared["profile"], cleared["limit_overrides"]) == ("", "", {})
    assert "body.name" in field_errors(
        await whatsapp_api.client.patch(url, json={"name": None}, headers=headers)
    )
    assert "body.limit_overrides" in field_errors(
        await whatsapp_api.client.patch(
            url, json={"profile": "cloud", "limit_overrides": {"pair_burst": 0}}, headers=headers
        )
    )
    assert await controls(whatsapp_api, session["id"]) == []


async def test_new_credentials_make_a_running_session_reconnect(whatsapp_api: WhatsappApi) -> None:
    company = whatsapp_api.new_company()
    headers = whatsapp_api.headers(company)
    session = await whatsapp_api.create_session(company, credentials={"saved": "simcred.old"})
    url = f"/v1/sessions/{session['id']}"
    assert session["has_credentials"] is True

    forgotten = await whatsapp_api.client.patch(url, json={"credentials": {}}, headers=headers)
    assert forgotten.json()["has_credentials"] is False
    assert await controls(whatsapp_api, session["id"]) == []

    await whatsapp_api.client.post(f"{url}/start", headers=headers)
    replaced = await whatsapp_api.client.patch(
        url, json={"credentials": {"saved": "simcred.new"}}, headers=headers
    )
    assert replaced.json()["has_credentials"] is True
    actions = [control.action for control in await controls(whatsapp_api, session["id"])]
    assert actions == [commands_pb2.SESSION_ACTION_START, commands_pb2.SESSION_ACTION_RECONNECT]
    async with whatsapp_api.uow() as uow:
        sealed = await uow.sessions.credentials(session["id"])
    assert sealed is not None
    assert whatsapp_api.cipher.open(sealed) == {"saved": "simcred.new"}


async def test_delete_is_soft_stops_the_session_and_restore_brings_it_back(
    whatsapp_api: WhatsappApi,
) -> None:
    company = whatsapp_api.new_company()
    headers = whatsapp_api.headers(company)
    session = await whatsapp_api.create_session(company, start=True)
    url = f"/v1/sessions/{session['id']}"

    assert (await whatsapp_api.client.delete(url, headers=headers)).status_code == 204
    assert (await whatsapp_api.client.delete(url, headers=headers)).status_code == 204

    deleted = (await whatsapp_api.client.get(url, headers=headers)).json()
    assert deleted["deleted_at"] is not None
    assert deleted["desired_running"] is False
    actions = [control.action for control in await controls(whatsapp_api, session["id"])]
    assert actions == [commands_pb2.SESSION_ACTION_START, commands_pb2.SESSION_ACTION_STOP]
    live = (await whatsapp_api.client.get("/v1/sessions", headers=headers)).json()["items"]
    assert live == []
    gone = (await whatsapp_api.client.get("/v1/sessions?deleted=true", headers=headers)).json()
    assert [item["id"] for item in gone["items"]] == [session["id"]]
    for request in (
        whatsapp_api.client.patch(url, json={"name": "again"}, headers=headers),
        whatsapp_api.client.post(f"{url}/start", headers=headers),
        whatsapp_api.client.post(f"{url}/breaker/reset", headers=headers),
    ):
        refused = await request
        assert refused.status_code == 409
        assert refused.json()["type"] == "https://esquadrao.dev/problems/session-deleted"

    restored = await whatsapp_api.client.post(f"{url}/restore", headers=headers)
    assert restored.status_code == 200
    assert restored.json()["deleted_at"] is None
    assert (await whatsapp_api.client.post(f"{url}/start", headers=headers)).status_code == 202


async def test_operational_endpoints_queue_the_matching_control(whatsapp_api: WhatsappApi) -> None:
    company = whatsapp_api.new_company()
    headers = whatsapp_api.headers(company, Role.SUPERVISOR)
    session = await whatsapp_api.create_session(company)
    url = f"/v1/sessions/{session['id']}"

    refused = await whatsapp_api.client.post(f"{url}/reconnect", headers=headers)
    assert refused.status_code == 409
    assert refused.json()["type"] == "https://esquadrao.dev/problems/session-stopped"
    answers = []
    for path, body in [
        ("start", None),
        ("reconnect", {"reason": "phone was offline"}),
        ("breaker/reset", None),
        ("stop", {"reason": "end of shift"}),
    ]:
        response = await whatsapp_api.client.post(f"{url}/{path}", json=body, headers=headers)
        assert response.status_code == 202, response.text
        answers.append(response.json())

    staged = await controls(whatsapp_api, session["id"])
    assert [control.action for control in staged] == [
        commands_pb2.SESSION_ACTION_START,
        commands_pb2.SESSION_ACTION_RECONNECT,
        commands_pb2.SESSION_ACTION_RESET_BREAKER,
        commands_pb2.SESSION_ACTION_STOP,
    ]
    assert [answer["action"] for answer in answers] == [
        "start",
        "reconnect",
        "reset_breaker",
        "stop",
    ]
    assert all(control.session_id == session["id"] for control in staged)
    assert staged[1].reason == "reconnect asked by supervisor tester: phone was offline"
    assert staged[3].reason == "stopped by supervisor tester: end of shift"
    records = [
        s for s in await whatsapp_api.outbox(topic=INTERACTIVE_TOPIC) if s.key == session["id"]
    ]
    assert [s.record.envelope.event_id for s in records] == [a["command_id"] for a in answers]
    assert all(s.record.envelope.company_id == company for s in records)
    final = (await whatsapp_api.client.get(url, headers=headers)).json()
    assert final["desired_running"] is False


async def test_another_company_sees_nothing(whatsapp_api: WhatsappApi) -> None:
    owner, intruder = whatsapp_api.new_company(), whatsapp_api.new_company()
    session = await whatsapp_api.create_session(owner)
    url = f"/v1/sessions/{session['id']}"
    headers = whatsapp_api.headers(intruder)

    for response in [
        await whatsapp_api.client.get(url, headers=headers),
        await whatsapp_api.client.patch(url, json={"name": "mine"}, headers=headers),
        await whatsapp_api.client.delete(url, headers=headers),
        await whatsapp_api.client.post(f"{url}/restore", headers=headers),
        await whatsapp_api.client.post(f"{url}/start", headers=headers),
        await whatsapp_api.client.post(f"{url}/stop", headers=headers),
        await whatsapp_api.client.post(f"{url}/reconnect", headers=headers),
        await whatsapp_api.client.post(f"{url}/breaker/reset", headers=headers),
        await whatsapp_api.client.get(f"{url}/status", headers=headers),
        await whatsapp_api.client.get(f"{url}/pairing", headers=headers),
        await whatsapp_api.client.get(f"{url}/metrics", headers=headers),
    ]:
        assert response.status_code == 404, (response.request.url, response.text)
        assert response.json()["type"] == "https://esquadrao.dev/problems/not-found"
    listing = await whatsapp_api.client.get("/v1/sessions", headers=headers)
    assert listing.json() == {"items": [], "next_cursor": None}
    assert await controls(whatsapp_api, session["id"]) == []


async def test_agents_read_but_do_not_manage(whatsapp_api: WhatsappApi) -> None:
    company = whatsapp_api.new_company()
    session = await whatsapp_api.create_session(company)
    agent = whatsapp_api.headers(company, Role.AGENT)
    url = f"/v1/sessions/{session['id']}"

    assert (await whatsapp_api.client.get(url, headers=agent)).status_code == 200
    assert (await whatsapp_api.client.get(f"{url}/status", headers=agent)).status_code == 200
    for response in [
        await whatsapp_api.client.post(
            "/v1/sessions", json={"name": "x", "provider": "sim"}, headers=agent
        ),
        await whatsapp_api.client.patch(url, json={"name": "x"}, headers=agent),
        await whatsapp_api.client.delete(url, headers=agent),
        await whatsapp_api.client.post(f"{url}/start", headers=agent),
        await whatsapp_api.client.get(f"{url}/pairing", headers=agent),
    ]:
        assert response.status_code == 403, response.text
    assert (await whatsapp_api.client.get("/v1/sessions")).status_code == 401


async def test_listing_pages_and_filters(whatsapp_api: WhatsappApi) -> None:
    company = whatsapp_api.new_company()
    await whatsapp_api.unlimited(company)
    headers = whatsapp_api.headers(company)
    created = [
        await whatsapp_api.create_session(company, name=f"s{i}", pool_id="a" if i % 2 else "b")
        for i in range(5)
    ]
    cloud = await whatsapp_api.create_session(
        company, name="c", provider="cloud", credentials=cloud_credentials("999")
    )

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (
            await whatsapp_api.client.get("/v1/sessions", params=params, headers=headers)
        ).json()
        seen.extend(item["id"] for item in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [s["id"] for s in [*created, cloud]]
    assert pages == 3

    async def ids(**params: Any) -> list[str]:
        response = await whatsapp_api.client.get("/v1/sessions", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await ids(provider="cloud") == [cloud["id"]]
    assert await ids(pool_id="a") == [created[1]["id"], created[3]["id"]]
    assert await ids(state="connected") == []
    assert len(await ids(state="stopped")) == 6
    bad = await whatsapp_api.client.get("/v1/sessions", params={"cursor": "nope"}, headers=headers)
    assert "query.cursor" in field_errors(bad)
    assert "query.state" in field_errors(
        await whatsapp_api.client.get("/v1/sessions", params={"state": "sleepy"}, headers=headers)
    )


async def test_status_pairing_and_metrics_show_what_the_worker_stored(
    whatsapp_api: WhatsappApi,
) -> None:
    company = whatsapp_api.new_company()
    headers = whatsapp_api.headers(company)
    created = await whatsapp_api.create_session(company, start=True)
    url = f"/v1/sessions/{created['id']}"

    not_pairing = await whatsapp_api.client.get(f"{url}/pairing", headers=headers)
    assert not_pairing.status_code == 404
    assert not_pairing.json()["type"] == "https://esquadrao.dev/problems/not-pairing"
    metrics = (await whatsapp_api.client.get(f"{url}/metrics", headers=headers)).json()
    assert metrics["metrics"] == {}
    assert metrics["metrics_at"] is None
    assert set(metrics["messages"]) == {
        "queued",
        "sent",
        "delivered",
        "read",
        "failed",
        "unknown",
        "expired",
    }
    assert set(metrics["messages"].values()) == {0}

    now = datetime.now(UTC)
    async with whatsapp_api.uow() as uow:
        session = await uow.sessions.get(created["id"])
        assert session is not None
        await uow.sessions.set_owner([session.id], "worker-1:42")
        session.move(SessionState.STARTING, "starting", now)
        session.move(SessionState.PAIRING, "waiting for the phone to pair", now)
        session.breaker_state, session.breaker_reason = "open", "5 failures in a row"
        session.reconnect_attempts = 2
        await uow.sessions.set_state(session, now=now, owner="worker-1:42")
        await uow.sessions.set_pairing(
            session.id, {"qr": "2@qr-payload", "code": "ABCD-1234", "expires_at": now.isoformat()}
        )
        await uow.sessions.save_metrics(session.id, {"processed": 7, "errors": 1}, now)
        for status in (MessageStatus.QUEUED, MessageStatus.SENT, MessageStatus.SENT):
            entry = LedgerEntry(
                message_id=str(uuid.uuid4()),
                company_id=company,
                session_id=session.id,
                to_phone_e164="+5511900000001",
                command=b"",
                priority=Priority.INTERACTIVE,
                status=status,
                queued_at=now,
                updated_at=now,
            )
            await uow.ledger.add(entry)
        await uow.commit()

    pairing = await whatsapp_api.client.get(f"{url}/pairing", headers=headers)
    assert pairing.status_code == 200, pairing.text
    assert pairing.json()["qr"] == "2@qr-payload"
    assert pairing.json()["code"] == "ABCD-1234"
    status = (await whatsapp_api.client.get(f"{url}/status", headers=headers)).json()
    assert status["state"] == "pairing"
    assert status["reason"] == "waiting for the phone to pair"
    assert status["owner"] == "worker-1:42"
    assert status["reconnect_attempts"] == 2
    assert status["breaker"] == {"state": "open", "reason": "5 failures in a row"}
    assert status["since"] is not None
    metrics = (await whatsapp_api.client.get(f"{url}/metrics", headers=headers)).json()
    assert metrics["metrics"] == {"processed": 7, "errors": 1}
    assert metrics["metrics_at"] is not None
    assert metrics["messages"]["queued"] == 1
    assert metrics["messages"]["sent"] == 2

    async with whatsapp_api.uow() as uow:
        session = await uow.sessions.get(created["id"])
        assert session is not None
        session.move(SessionState.CONNECTED, "connected", now)
        await uow.sessions.set_state(session, now=now, owner="worker-1:42")
        await uow.commit()
    stale = await whatsapp_api.client.get(f"{url}/pairing", headers=headers)
    assert stale.status_code == 404
