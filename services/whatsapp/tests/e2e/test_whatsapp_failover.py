"""A send worker killed mid-stream: two ``python -m whatsapp worker`` processes send for
200 ``sim`` sessions, one is SIGKILLed while the messages go out, and the simulator — the
independent witness — shows that no message was accepted twice; every message ends sent
exactly once, or ``unknown`` only if it was in flight in the killed worker; the killed
worker's sessions move to the survivor.

The figures (sent, unknown, time to failover) are printed; nothing is asserted on time:
the waits are bounded only so that a broken build fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
from esquadrao_common.db import Database
from esquadrao_common.kafka.producer import KafkaPublisher
from esquadrao_wasim.client import SimulatorControl
from whatsapp.config import WhatsappSettings
from whatsapp.domain.events import INTERACTIVE_TOPIC
from whatsapp.domain.messages import MessageStatus
from whatsapp.domain.sessions import SessionState
from whatsapp.testing import (
    SessionRow,
    ledger_rows,
    ledger_summary,
    new_company_id,
    plan_sends,
    publish_records,
    seed_sim_sessions,
    session_rows,
    wait_until,
)

if TYPE_CHECKING:
    from conftest import StartWorker, WorkerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SESSIONS = 200
#: Messages per session (4,000 in all); ``WHATSAPP_FAILOVER_PER_SESSION`` changes it, e.g.
#: for a quicker look on a busy machine.
PER_SESSION = int(os.environ.get("WHATSAPP_FAILOVER_PER_SESSION", "20"))
MESSAGES = SESSIONS * PER_SESSION
#: Messages sent (as the ledger records it) before the kill: about a third.
KILL_AFTER = MESSAGES // 3
#: Entries a driver claims per round at most: what one session can leave in flight.
MAX_CLAIM: int = WhatsappSettings.model_fields["whatsapp_send_batch"].default
#: Simulator knobs of every session: pair at once, no throughput or pair limits, and a
#: provider that takes a while to acknowledge, as WhatsApp does: sends stay in flight long
#: enough for the kill to catch some.
SIM_KNOBS: dict[str, Any] = {
    "pairing_delay_s": 0,
    "pair_rate_limit": None,
    "max_mps": None,
    "latency_ms": 250,
    "latency_jitter_ms": 100,
}
#: Simulator calls made at once.
SIM_CONCURRENCY = 16
#: Time after the kill for what the killed worker had on the wire to reach Postgres (a
#: commit it wrote just before dying) before the ledger is read; the group reassigns its
#: partitions only after the consumer session timeout (10 s).
SETTLE_S = 2.0

SENT_OR_LATER = frozenset({MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ})


async def bounded(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run ``calls`` with at most SIM_CONCURRENCY at a time; their results in order."""
    gate = asyncio.Semaphore(SIM_CONCURRENCY)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


def any_exited(*workers: WorkerProcess) -> Callable[[], str | None]:
    """For ``wait_until(abort=...)``: why one of ``workers`` is gone, if one is."""

    def reason() -> str | None:
        for worker in workers:
            if (why := worker.exited()) is not None:
                return why
        return None

    return reason


def owners(rows: dict[str, SessionRow]) -> Counter[str]:
    return Counter(row.owner for row in rows.values())


async def test_killing_a_send_worker_loses_and_doubles_nothing(
    whatsapp_database: str,
    private_kafka: str,
    whatsapp_simulator: str,
    whatsapp_workers: StartWorker,
) -> None:
    company = new_company_id("co-failover")
    database = Database(whatsapp_database, pool_size=4)
    wasim = SimulatorControl(whatsapp_simulator, timeout=30.0)

    async def sessions_now() -> str:
        rows = await session_rows(database, company)
        states = Counter((row.state.value, row.owner or "nobody") for row in rows.values())
        return f"sessions by (state, owner): {dict(states)}"

    async def ledger_now() -> str:
        return f"ledger: {await ledger_summary(database, company)}"

    try:
        # --- 200 sessions, paired by two workers ---------------------------------------
        session_ids = await seed_sim_sessions(database, SESSIONS, company, profile="lifted")
        ours = set(session_ids)
        await bounded(
            [
                partial(wasim.set_session_knobs, session_id, **SIM_KNOBS)
                for session_id in session_ids
            ]
        )
        workers = [whatsapp_workers(), whatsapp_workers()]
        names = {worker.name for worker in workers}
        crashed = any_exited(*workers)

        async def all_connected_on_both() -> bool:
            rows = await session_rows(database, company)
            return set(owners(rows)) == names and all(
                row.state is SessionState.CONNECTED for row in rows.values()
            )

        startup_s = await wait_until(
            all_connected_on_both,
            what=f"{SESSIONS} sessions connected, driven by both workers",
            timeout_s=150,
            abort=crashed,
            describe=sessions_now,
        )

        # --- the messages: every fourth of each session interactive, the others bulk ---
        plan = plan_sends(session_ids, company, PER_SESSION, interactive_every=4)
        session_of = {send.message_id: send.session_id for send in plan}
        async with KafkaPublisher(private_kafka, client_id="failover-test") as publisher:
            await publish_records(publisher, [send.record for send in plan])
        published_mono = time.monotonic()

        async def a_third_sent() -> bool:
            return (await ledger_summary(database, company)).sent >= KILL_AFTER

        await wait_until(
            a_third_sent,
            what=f"{KILL_AFTER} messages sent",
            timeout_s=180,
            interval_s=0.1,
            abort=crashed,
            describe=ledger_now,
        )

        # --- SIGKILL one worker while it has sends in flight ----------------------------
        before_kill = await session_rows(database, company)
        victim, survivor = workers
        victim_sessions = {sid for sid, row in before_kill.items() if row.owner == victim.name}

        async def victim_sending() -> bool:
            summary = await ledger_summary(database, company, session_ids=victim_sessions)
            return summary.awaiting_answer > 0

        await wait_until(
            victim_sending,
            what="sends in flight on the worker to kill",
            timeout_s=60,
            interval_s=0.02,
            abort=crashed,
            describe=ledger_now,
        )
        killed_at = datetime.now(UTC)
        killed_mono = time.monotonic()
        victim.kill()
        by_session: dict[str, int] = (await wasim.stats())["accepted_by_session"]
        accepted_at_kill = sum(n for session_id, n in by_session.items() if session_id in ours)
        await asyncio.sleep(SETTLE_S)
        at_kill = await ledger_rows(database, company)
        still_victims = {
            session_id
            for session_id, row in (await session_rows(database, company)).items()
            if row.owner == victim.name
        }
        in_flight_at_kill = {
            message_id
            for message_id, row in at_kill.items()
            if row.session_id in victim_sessions and row.in_flight
        }
        # Of those, the ones no receipt had reached yet: the killed worker's receipt writer
        # may have stored a "sent" or "delivered" pushed before the ack was recorded, and
        # that receipt is the provider's word that the message went (it stays sent).
        unresolved_at_kill = {m for m in in_flight_at_kill if at_kill[m].pending}
        left_to_victim = sum(
            1
            for message_id, session_id in session_of.items()
            if session_id in victim_sessions
            and (message_id not in at_kill or at_kill[message_id].pending)
        )
        # The kill landed mid-stream, on a worker with sessions and work left: otherwise
        # the rest would prove nothing about failover.
        assert victim_sessions and victim_sessions != ours, (
            f"the killed worker drove {len(victim_sessions)} of {SESSIONS} sessions"
        )
        assert still_victims == victim_sessions, (
            "the survivor adopted sessions before the ledger was read at the kill"
        )
        assert accepted_at_kill < MESSAGES, "every message was accepted before the kill"
        assert left_to_victim > 0, "the killed worker had nothing left to send"
        assert unresolved_at_kill, "the kill caught no send awaiting its answer"

        # --- the survivor takes every session over and sends the rest ------------------
        survivor_crashed = any_exited(survivor)

        async def all_on_survivor() -> bool:
            rows = await session_rows(database, company)
            return all(
                row.owner == survivor.name
                and row.state is SessionState.CONNECTED
                and (
                    row.id not in victim_sessions
                    or (row.state_changed_at is not None and row.state_changed_at > killed_at)
                )
                for row in rows.values()
            )

        await wait_until(
            all_on_survivor,
            what=f"the {len(victim_sessions)} killed worker's sessions connected by the survivor",
            timeout_s=120,
            abort=survivor_crashed,
            describe=sessions_now,
        )
        failover_s = time.monotonic() - killed_mono

        async def drained() -> bool:
            summary = await ledger_summary(database, company)
            return summary.total == MESSAGES and summary.pending == 0

        await wait_until(
            drained,
            what=f"all {MESSAGES} messages in the ledger, none queued or in flight",
            timeout_s=240,
            abort=survivor_crashed,
            describe=ledger_now,
        )
        drained_s = time.monotonic() - published_mono
        ledger = await ledger_rows(database, company)
        final_sessions = await session_rows(database, company)

        # --- what the witness saw ------------------------------------------------------
        listings = await bounded(
            [partial(wasim.all_messages, session_id=session_id) for session_id in session_ids]
        )
        sim_sessions = await bounded([partial(wasim.session, sid) for sid in session_ids])
        stats = await wasim.stats()
    finally:
        await wasim.aclose()
        await database.dispose()

    accepted: Counter[str] = Counter()
    misplaced: list[tuple[str, str]] = []
    for session_id, listing in zip(session_ids, listings, strict=True):
        for item in listing:
            accepted[item["message_id"]] += 1
            if session_of.get(item["message_id"]) != session_id:
                misplaced.append((item["message_id"], session_id))
    statuses = Counter(row.status for row in ledger.values())
    unknown = {
        message_id for message_id, row in ledger.items() if row.status is MessageStatus.UNKNOWN
    }
    unknown_of_victim = {m for m in unknown if session_of[m] in victim_sessions}
    unknown_of_survivor = unknown - unknown_of_victim
    bound = len(victim_sessions) * MAX_CLAIM
    interactive = sum(1 for send in plan if send.topic == INTERACTIVE_TOPIC)
    print(
        f"\n{SESSIONS} sessions, {MESSAGES} messages ({interactive} interactive), 2 workers: "
        f"all connected after {startup_s:.1f} s, split {sorted(owners(before_kill).values())}"
        f"\nSIGKILL of the worker driving {len(victim_sessions)} sessions, with "
        f"{accepted_at_kill} messages accepted by the simulator; {len(in_flight_at_kill)} of "
        f"its entries in flight ({len(in_flight_at_kill - unresolved_at_kill)} with a receipt "
        f"already), {left_to_victim} of its messages not sent yet"
        f"\nfailover: every session connected by the survivor {failover_s:.1f} s after the "
        f"kill; all messages resolved {drained_s:.1f} s after publishing "
        f"({time.monotonic() - killed_mono:.1f} s after the kill)"
        f"\nledger: {', '.join(f'{s.name.lower()} {n}' for s, n in statuses.most_common())}"
        f"\nwitness: {sum(accepted.values())} acceptances of {len(accepted)} message ids"
        f"\nunknown: {len(unknown)} (killed worker's sessions: {len(unknown_of_victim)}, "
        f"{sum(1 for m in unknown_of_victim if accepted[m])} of them accepted; survivor's: "
        f"{len(unknown_of_survivor)}); bound {len(victim_sessions)} sessions × {MAX_CLAIM} "
        f"= {bound}"
    )

    # Never twice at the provider, and only what was asked for, from the right session.
    doubled = {message_id: n for message_id, n in accepted.items() if n > 1}
    assert doubled == {}, f"messages accepted more than once: {list(doubled.items())[:10]}"
    assert not set(stats["duplicates"]) & set(session_of), "the witness reports duplicates"
    assert misplaced == [], f"accepted from another session, or never planned: {misplaced[:10]}"

    # Every command is in the ledger and resolved: sent exactly once, or unknown.
    assert set(ledger) == set(session_of)
    assert set(statuses) <= SENT_OR_LATER | {MessageStatus.UNKNOWN}, (
        f"messages neither sent nor unknown: {statuses}"
    )
    sent_not_once = [
        (row.message_id, accepted[row.message_id])
        for row in ledger.values()
        if row.status in SENT_OR_LATER and accepted[row.message_id] != 1
    ]
    assert sent_not_once == [], f"recorded as sent, accepted n times: {sent_not_once[:10]}"
    lost = set(session_of) - set(accepted) - unknown
    assert lost == set(), f"{len(lost)} messages neither accepted nor unknown"

    # Unknown is what the killed worker had in flight with no word from the provider yet,
    # within the bound of its claims.
    assert unknown_of_victim == unresolved_at_kill, (
        f"{len(unknown_of_victim - unresolved_at_kill)} unknown but not in flight at the kill, "
        f"{len(unresolved_at_kill - unknown_of_victim)} in flight at the kill but not unknown"
    )
    assert len(unknown) <= bound, f"{len(unknown)} unknown, more than {bound}"

    # Every session ends with the survivor, connected: its row and the simulator agree.
    assert {row.owner for row in final_sessions.values()} == {survivor.name}
    assert all(row.state is SessionState.CONNECTED for row in final_sessions.values())
    not_connected = [info["session_id"] for info in sim_sessions if info["state"] != "connected"]
    assert not_connected == [], f"not connected at the simulator: {not_connected[:10]}"

    # The survivor was never killed: it only handed its sessions over to itself in the
    # rebalance, which must finish recording what it was sending (``SessionDriver.stop``),
    # so none of its messages may be unknown — least of all one never handed over.
    never_sent = sorted(m for m in unknown_of_survivor if not accepted[m])
    assert unknown_of_survivor == set(), (
        f"{len(unknown_of_survivor)} messages of the survivor's own sessions are unknown, "
        f"{len(never_sent)} of them never accepted by the simulator (lost): {never_sent[:5]}"
    )
