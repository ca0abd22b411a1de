"""The witness: exact counts by message id, duplicates, listings, reset, persistence."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from esquadrao_wasim.app import DataDirectoryBusyError, SimulatorRuntime
from esquadrao_wasim.client import SimSession, SimulatorControl
from esquadrao_wasim.server import RunningSimulator, running_simulator
from esquadrao_wasim.testing import CloudNumber, register_cloud_number, text_message

pytestmark = pytest.mark.integration


@pytest.fixture
async def plain_number(control: SimulatorControl) -> CloudNumber:
    """A number without webhooks and without throughput or pair limits."""
    await control.set_knobs(max_mps=None, pair_rate_limit=None)
    return await register_cloud_number(control, "3003")


async def send_ok(http: httpx.AsyncClient, number: CloudNumber, to: str, message_id: str) -> None:
    response = await number.send(http, text_message(to, message_id))
    assert response.status_code == 200, response.text


async def test_n_sends_are_n_acceptances(
    http: httpx.AsyncClient, control: SimulatorControl, plain_number: CloudNumber
) -> None:
    gate = asyncio.Semaphore(20)

    async def send(n: int) -> None:
        async with gate:
            await send_ok(http, plain_number, f"+55119{n:08d}", f"m-{n}")

    await asyncio.gather(*(send(n) for n in range(300)))

    stats = await control.stats()
    assert stats["accepted_total"] == 300
    assert stats["distinct_message_ids"] == 300
    assert stats["accepted_by_number"] == {"3003": 300}
    assert stats["duplicated_message_ids"] == 0
    assert stats["duplicates"] == {}
    assert [await control.accepted_count(f"m-{n}") for n in (0, 150, 299)] == [1, 1, 1]


async def test_a_message_id_sent_twice_is_counted_twice_as_a_duplicate(
    http: httpx.AsyncClient, control: SimulatorControl, plain_number: CloudNumber
) -> None:
    await send_ok(http, plain_number, "+5511988887777", "m-twice")
    await send_ok(http, plain_number, "+5511988887777", "m-twice")
    await send_ok(http, plain_number, "+5511988887777", "m-once")

    history = await control.message("m-twice")
    stats = await control.stats()

    assert history["accepted_count"] == 2
    first, second = history["accepted"]
    assert first["provider_message_id"] != second["provider_message_id"]
    assert first["accepted_at"] <= second["accepted_at"]
    assert stats["duplicates"] == {"m-twice": 2}
    assert stats["duplicated_message_ids"] == 1
    assert stats["duplicate_acceptances"] == 1


async def test_an_unknown_message_id_has_no_acceptance(control: SimulatorControl) -> None:
    assert await control.message("never-sent") == {
        "message_id": "never-sent",
        "accepted_count": 0,
        "accepted": [],
        "rejected": [],
    }


async def test_sends_without_message_id_are_counted_apart(
    http: httpx.AsyncClient, control: SimulatorControl, plain_number: CloudNumber
) -> None:
    response = await plain_number.send(http, text_message("+5511988887777"))
    assert response.status_code == 200

    stats = await control.stats()
    assert stats["accepted_total"] == 1
    assert stats["accepted_without_message_id"] == 1
    assert stats["distinct_message_ids"] == 0


async def test_accepted_messages_are_listed_page_by_page_per_sender(
    http: httpx.AsyncClient,
    simulator: RunningSimulator,
    control: SimulatorControl,
    plain_number: CloudNumber,
) -> None:
    for n in range(25):
        await send_ok(http, plain_number, f"+55119{n:08d}", f"m-list-{n}")
    await control.set_knobs(pairing_delay_s=0)
    session = await SimSession.open(simulator.url, "s-list")
    try:
        await session.connected()
        await session.send_text("m-list-session", "+5511988887777", "oi")
        await session.expect("ack")
    finally:
        await session.close()

    first = await control.messages(phone_number_id="3003", limit=10)
    every = await control.all_messages(phone_number_id="3003")
    of_session = await control.all_messages(session_id="s-list")

    assert [item["message_id"] for item in first["items"]] == [f"m-list-{n}" for n in range(10)]
    assert first["next_after"] == first["items"][-1]["seq"]
    assert [item["message_id"] for item in every] == [f"m-list-{n}" for n in range(25)]
    assert [item["message_id"] for item in of_session] == ["m-list-session"]
    assert len(await control.all_messages()) == 26


async def test_reset_forgets_traffic_and_keeps_numbers_unless_everything(
    http: httpx.AsyncClient, control: SimulatorControl, plain_number: CloudNumber
) -> None:
    await send_ok(http, plain_number, "+5511988887777", "m-reset")

    after_reset = await control.reset()
    await send_ok(http, plain_number, "+5511988887777", "m-after-reset")
    await control.reset(everything=True)

    assert after_reset["accepted_total"] == 0
    assert await control.accepted_count("m-reset") == 0
    response = await plain_number.send(http, text_message("+5511988887777", "m-gone"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 100
    assert (await control.knobs())["max_mps"] == 80


async def test_counts_numbers_knobs_and_sessions_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "wasim"
    async with running_simulator(data_dir) as first, SimulatorControl(first.url) as control:
        await control.set_knobs(pair_rate_limit=None, pairing_delay_s=0, read_rate=0.25)
        number = await register_cloud_number(control, "4004")
        async with httpx.AsyncClient() as http:
            for n in range(5):
                await send_ok(http, number, "+5511988887777", f"m-kept-{n}")
        session = await SimSession.open(first.url, "s-kept")
        await session.connected()
        credentials = session.credentials
        await session.close()

    async with running_simulator(data_dir) as second, SimulatorControl(second.url) as control:
        stats = await control.stats()
        knobs = await control.knobs()
        registered = await control.number("4004")
        session = await SimSession.open(second.url, "s-kept", credentials=credentials)
        try:
            assert (await session.recv())["type"] == "connected"
        finally:
            await session.close()

    assert stats["accepted_total"] == 5
    assert stats["accepted_by_number"] == {"4004": 5}
    assert registered["access_token"] == number.access_token
    assert knobs["read_rate"] == 0.25
    assert knobs["pair_rate_limit"] is None


async def test_two_simulators_cannot_share_a_data_directory(
    simulator: RunningSimulator,
) -> None:
    other = SimulatorRuntime(simulator.runtime.data_dir)

    with pytest.raises(DataDirectoryBusyError):
        await other.start()
