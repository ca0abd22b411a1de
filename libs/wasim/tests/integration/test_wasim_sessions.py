"""Session mode over real WebSockets: pairing, credentials, keep-alive, disconnects, bans,
logout, sends with Meta's errors, receipts and inbound frames, many sessions at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from esquadrao_wasim.client import SimSession, SimulatorControl
from esquadrao_wasim.server import RunningSimulator
from esquadrao_wasim.sessions import CloseCode

pytestmark = pytest.mark.integration

FAST = {
    "pairing_delay_s": 0.05,
    "receipt_delays": {"sent": 0.0, "delivered": 0.02, "read": 0.04},
}


@pytest.fixture
async def fast(control: SimulatorControl) -> SimulatorControl:
    """The control client, with pairing and receipts sped up."""
    await control.set_knobs(**FAST)
    return control


@pytest.fixture
async def opened() -> AsyncIterator[list[SimSession]]:
    """Sessions a test opens (append them); all closed at the end."""
    sessions: list[SimSession] = []
    yield sessions
    await asyncio.gather(*(session.close() for session in sessions))


async def open_session(
    simulator: RunningSimulator,
    opened: list[SimSession],
    session_id: str,
    credentials: str | None = None,
) -> SimSession:
    session = await SimSession.open(simulator.url, session_id, credentials=credentials)
    opened.append(session)
    return session


async def paired(
    simulator: RunningSimulator, opened: list[SimSession], session_id: str
) -> SimSession:
    session = await open_session(simulator, opened, session_id)
    await session.connected()
    return session


async def test_a_new_session_pairs_then_connects(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    await fast.configure_session("s-pair", phone_e164="+5511912345678")

    session = await open_session(simulator, opened, "s-pair")
    pairing = await session.recv()
    paired_frame = await session.recv()
    connected = await session.recv()

    assert pairing["type"] == "pairing"
    assert pairing["qr"].startswith("2@")
    assert len(pairing["code"]) == 9
    assert pairing["expires_in"] == 60
    assert pairing["keepalive"]["timeout_s"] == 30
    assert paired_frame["type"] == "paired"
    assert paired_frame["credentials"]
    assert connected == {
        "type": "connected",
        "phone_e164": "+5511912345678",
        "keepalive": {"interval_s": 10.0, "timeout_s": 30.0},
    }
    state = await fast.session("s-pair")
    assert state["state"] == "connected"
    assert state["paired"] is True


async def test_saved_credentials_connect_without_pairing(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    first = await paired(simulator, opened, "s-creds")
    await first.close()

    again = await open_session(simulator, opened, "s-creds", credentials=first.credentials)
    frame = await again.recv()

    assert frame["type"] == "connected"
    assert (await fast.session("s-creds"))["connects"] == 2


async def test_unknown_credentials_are_logged_out(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    session = await open_session(simulator, opened, "s-bad-creds", credentials="simcred.forged")

    code = await session.wait_closed()

    assert code == CloseCode.LOGGED_OUT
    assert session.frames[0]["type"] == "logged_out"


async def test_pairing_waits_for_the_admin_when_it_does_not_complete_by_itself(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    await fast.set_knobs(pairing_delay_s=None)
    session = await open_session(simulator, opened, "s-admin-pair")
    await session.expect("pairing")
    assert (await fast.session("s-admin-pair"))["state"] == "pairing"

    await fast.pair("s-admin-pair")

    assert (await session.recv())["type"] == "paired"
    assert (await session.recv())["type"] == "connected"


async def test_a_new_pairing_code_replaces_an_expired_one(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    await fast.set_knobs(pairing_delay_s=None, pairing_code_ttl_s=0.05)
    session = await open_session(simulator, opened, "s-codes")

    first = await session.expect("pairing")
    second = await session.expect("pairing")

    assert first["code"] != second["code"]


async def test_pings_are_answered_and_keep_the_session_alive(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    await fast.set_knobs(keepalive_timeout_s=1.0)
    session = await paired(simulator, opened, "s-ping")

    for n in range(8):
        await session.ping(f"p{n}")
        assert await session.expect("pong") == {"type": "pong", "id": f"p{n}"}
        await asyncio.sleep(0.2)

    assert (await fast.session("s-ping"))["state"] == "connected"


async def test_a_silent_session_is_dropped_at_its_keepalive_timeout(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    await fast.set_knobs(keepalive_timeout_s=0.3)
    session = await paired(simulator, opened, "s-silent")

    code = await session.wait_closed()

    assert code == CloseCode.KEEPALIVE_TIMEOUT
    assert (await fast.session("s-silent"))["state"] == "offline"


async def test_a_forced_disconnect_closes_and_the_session_can_reconnect(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    session = await paired(simulator, opened, "s-drop")

    await fast.disconnect("s-drop")

    assert await session.wait_closed() == CloseCode.DISCONNECTED
    again = await open_session(simulator, opened, "s-drop", credentials=session.credentials)
    assert (await again.recv())["type"] == "connected"


async def test_a_ban_closes_the_session_and_blocks_it_until_unbanned(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    session = await paired(simulator, opened, "s-ban")

    await fast.ban("s-ban", reason="spam reports")

    assert await session.wait_closed() == CloseCode.BANNED
    assert session.frames[-1] == {"type": "banned", "reason": "spam reports"}
    retry = await open_session(simulator, opened, "s-ban", credentials=session.credentials)
    assert await retry.wait_closed() == CloseCode.BANNED
    assert retry.frames == [{"type": "banned", "reason": "spam reports"}]
    assert (await fast.session("s-ban"))["state"] == "banned"

    await fast.unban("s-ban")

    back = await open_session(simulator, opened, "s-ban", credentials=session.credentials)
    assert (await back.recv())["type"] == "connected"


async def test_a_logout_from_the_phone_means_pairing_again(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    session = await paired(simulator, opened, "s-logout")

    await fast.logout("s-logout")

    assert await session.wait_closed() == CloseCode.LOGGED_OUT
    stale = await open_session(simulator, opened, "s-logout", credentials=session.credentials)
    assert await stale.wait_closed() == CloseCode.LOGGED_OUT
    fresh = await open_session(simulator, opened, "s-logout")
    assert (await fresh.recv())["type"] == "pairing"
    await fresh.connected()
    assert fresh.credentials != session.credentials


async def test_a_second_connection_replaces_the_first(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    first = await paired(simulator, opened, "s-twice")

    second = await open_session(simulator, opened, "s-twice", credentials=first.credentials)

    assert (await second.recv())["type"] == "connected"
    assert await first.wait_closed() == CloseCode.REPLACED
    assert first.frames[-1] == {"type": "replaced"}


async def test_frames_before_hello_or_malformed_close_the_connection(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    early = await SimSession.open(simulator.url, "s-early", hello=False)
    opened.append(early)
    await early.send({"type": "send", "message_id": "m", "to": "+5511988887777", "text": "x"})

    assert await early.wait_closed() == CloseCode.PROTOCOL_ERROR
    assert early.frames[0]["code"] == 100

    garbage = await SimSession.open(simulator.url, "s-garbage", hello=False)
    opened.append(garbage)
    await garbage.websocket.send("not json")
    assert await garbage.wait_closed() == CloseCode.PROTOCOL_ERROR


async def test_a_send_is_acked_then_its_receipts_follow(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    await fast.set_knobs(read_rate=1.0)
    session = await paired(simulator, opened, "s-send")

    await session.send_text("m-session-1", "+5511988887777", "Olá!")
    ack = await session.expect("ack")
    statuses = [await session.expect("status") for _ in range(3)]

    assert ack["message_id"] == "m-session-1"
    assert ack["provider_message_id"].startswith("wamid.")
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    for status in statuses:
        assert status["message_id"] == "m-session-1"
        assert status["provider_message_id"] == ack["provider_message_id"]
        assert status["recipient"] == "+5511988887777"
    history = await fast.message("m-session-1")
    assert history["accepted_count"] == 1
    assert history["accepted"][0]["channel"] == "session"
    assert history["accepted"][0]["sender"] == "s-send"


async def test_a_send_before_connected_is_refused(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    await fast.set_knobs(pairing_delay_s=None)
    session = await open_session(simulator, opened, "s-not-yet")
    await session.expect("pairing")

    await session.send_text("m-early", "+5511988887777", "Olá!")

    error = await session.expect("error")
    assert error["message_id"] == "m-early"
    assert error["code"] == 9001
    assert await fast.accepted_count("m-early") == 0


async def test_throttle_and_pair_rate_errors_in_session_mode(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    session = await paired(simulator, opened, "s-limits")
    await fast.set_session_knobs("s-limits", pair_rate_limit={"burst": 1, "per_seconds": 3600})

    await session.send_text("m-1", "+5511988887777", "um")
    first = await session.expect("ack", "error")
    await session.send_text("m-2", "+5511988887777", "dois")
    second = await session.expect("ack", "error")
    await fast.set_session_knobs("s-limits", throttle_rate=1.0)
    await session.send_text("m-3", "+5511988886666", "três")
    third = await session.expect("ack", "error")

    assert first["type"] == "ack"
    assert (second["type"], second["code"], second["message_id"]) == ("error", 131056, "m-2")
    assert (third["type"], third["code"]) == ("error", 130429)
    assert second["title"] == "(Business Account, Consumer Account) pair rate limit hit"
    stats = await fast.stats()
    assert stats["rejected_by_code"] == {"130429": 1, "131056": 1}
    assert stats["accepted_by_session"] == {"s-limits": 1}


async def test_spam_and_undeliverable_errors_in_session_mode(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    session = await paired(simulator, opened, "s-quality")
    await fast.set_session_knobs("s-quality", not_on_whatsapp=["+5511900000000"])

    await session.send_text("m-nowa", "+5511900000000", "oi")
    undeliverable = await session.expect("error")
    await fast.set_session_knobs("s-quality", spam_rate=1.0)
    await session.send_text("m-spam", "+5511988887777", "oi")
    spam = await session.expect("error")

    assert undeliverable["code"] == 131026
    assert spam["code"] == 131048


async def test_an_invalid_send_is_refused_with_100(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    session = await paired(simulator, opened, "s-invalid")

    await session.send({"type": "send", "message_id": "m-bad", "to": "+5511988887777"})

    error = await session.expect("error")
    assert (error["code"], error["message_id"]) == (100, "m-bad")


async def test_inbound_messages_arrive_as_frames(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    session = await paired(simulator, opened, "s-inbound")

    provider_id = await fast.inject_inbound(
        session_id="s-inbound", from_phone="+5511977776666", text="SAIR", profile_name="Maria"
    )

    frame = await session.expect("inbound")
    assert frame["provider_message_id"] == provider_id
    assert frame["from"] == "+5511977776666"
    assert frame["text"] == "SAIR"
    assert frame["profile_name"] == "Maria"
    assert isinstance(frame["timestamp"], int)


async def test_what_arrives_while_offline_follows_the_next_connect(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    session = await paired(simulator, opened, "s-offline")
    await session.close()

    await fast.inject_inbound(session_id="s-offline", from_phone="+5511977776666", text="oi")
    await fast.inject_inbound(session_id="s-offline", from_phone="+5511977776666", text="tem?")
    again = await open_session(simulator, opened, "s-offline", credentials=session.credentials)

    await again.expect("connected")
    texts = [(await again.expect("inbound"))["text"] for _ in range(2)]
    assert texts == ["oi", "tem?"]


async def test_a_random_disconnect_rate_drops_connections(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    session = await paired(simulator, opened, "s-flaky")
    await fast.set_session_knobs("s-flaky", disconnect_rate=1.0)

    await session.ping()

    assert await session.wait_closed() == CloseCode.STREAM_ERROR


async def test_a_thousand_sessions_connect_and_send_at_once(
    simulator: RunningSimulator, fast: SimulatorControl, opened: list[SimSession]
) -> None:
    await fast.set_knobs(pairing_delay_s=0, pair_rate_limit=None)
    gate = asyncio.Semaphore(200)

    async def one(n: int) -> str:
        async with gate:
            session = await open_session(simulator, opened, f"s-many-{n}")
            await session.connected(within=60)
        await session.send_text(f"m-many-{n}", f"+55119{n:08d}", "Olá!")
        ack = await session.expect("ack", "error", within=60)
        assert ack["type"] == "ack", ack
        provider_id: str = ack["provider_message_id"]
        return provider_id

    provider_ids = await asyncio.gather(*(one(n) for n in range(1000)))

    stats = await fast.stats()
    assert stats["sessions"]["connected"] == 1000
    assert stats["sessions"]["open_connections"] == 1000
    assert stats["accepted_total"] == 1000
    assert len(stats["accepted_by_session"]) == 1000
    assert len(set(provider_ids)) == 1000
