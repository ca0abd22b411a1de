"""The simulator as a process of its own: readiness, restarts, crashes and no orphans."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import textwrap
from pathlib import Path

import httpx
import psutil
import pytest
from esquadrao_wasim.client import SimSession, SimulatorControl
from esquadrao_wasim.process import SimulatorProcess
from esquadrao_wasim.testing import register_cloud_number, text_message

pytestmark = pytest.mark.e2e


async def test_acknowledged_sends_are_counted_after_the_simulator_is_killed(
    tmp_path: Path,
) -> None:
    simulator = SimulatorProcess(
        tmp_path / "wasim", knobs={"pairing_delay_s": 0, "pair_rate_limit": None}
    )
    await simulator.start()
    try:
        async with SimulatorControl(simulator.url) as control, httpx.AsyncClient() as http:
            number = await register_cloud_number(control, "5005")
            for n in range(40):
                response = await number.send(http, text_message(f"+55119{n:08d}", f"m-{n}"))
                assert response.status_code == 200
            session = await SimSession.open(simulator.url, "s-crash")
            await session.connected()
            for n in range(10):
                await session.send_text(f"m-session-{n}", f"+55119{n:08d}", "oi")
            acks = [await session.expect("ack") for _ in range(10)]
            credentials = session.credentials
        first_url = simulator.url
    finally:
        simulator.kill()
    await session.close()
    assert simulator.returncode == -signal.SIGKILL

    await simulator.start()
    try:
        async with SimulatorControl(simulator.url) as control:
            stats = await control.stats()
            histories = [await control.message(f"m-session-{n}") for n in range(10)]
        again = await SimSession.open(simulator.url, "s-crash", credentials=credentials)
        try:
            assert (await again.recv())["type"] == "connected"
        finally:
            await again.close()
    finally:
        await simulator.stop()

    assert stats["accepted_total"] == 50
    assert stats["accepted_by_number"] == {"5005": 40}
    assert stats["accepted_by_session"] == {"s-crash": 10}
    assert stats["duplicate_acceptances"] == 0
    assert [h["accepted"][0]["provider_message_id"] for h in histories] == [
        ack["provider_message_id"] for ack in acks
    ]
    assert simulator.url.startswith("http://127.0.0.1:")
    assert first_url.startswith("http://127.0.0.1:")


async def test_knobs_given_at_start_apply_and_a_stop_is_clean(tmp_path: Path) -> None:
    async with SimulatorProcess(tmp_path / "wasim", knobs={"seed": 5, "max_mps": None}) as sim:
        async with SimulatorControl(sim.url) as control:
            knobs = await control.knobs()
        pid = sim.pid

    assert (knobs["seed"], knobs["max_mps"]) == (5, None)
    assert sim.returncode == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_a_simulator_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    first = SimulatorProcess(tmp_path / "wasim")
    await first.start()
    try:
        second = SimulatorProcess(tmp_path / "wasim")
        with pytest.raises(RuntimeError, match="used by another simulator"):
            await second.start()
    finally:
        await first.stop()


PARENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from esquadrao_wasim.process import SimulatorProcess

    async def main():
        simulator = SimulatorProcess(Path(sys.argv[1]))
        await simulator.start()
        print(json.dumps({"pid": simulator.pid, "url": simulator.url}), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_the_simulator_dies_with_a_killed_parent(tmp_path: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, str(tmp_path / "wasim"), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(parent.stdout.readline(), 30)
        child = psutil.Process(json.loads(line)["pid"])
        assert child.is_running()

        parent.kill()
        await parent.wait()

        gone, alive = await asyncio.to_thread(psutil.wait_procs, [child], 10)
        assert alive == []
        assert [process.pid for process in gone] == [child.pid]
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
