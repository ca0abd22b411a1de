"""Fixtures of the simulator's tests: a simulator served in this process, its control
client, a webhook receiver standing in for our whatsapp service, and a registered number."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from esquadrao_wasim.client import SimulatorControl
from esquadrao_wasim.server import RunningSimulator, running_simulator
from esquadrao_wasim.testing import (
    CloudNumber,
    WebhookReceiver,
    register_cloud_number,
    webhook_receiver,
)


@pytest.fixture
async def simulator(tmp_path: Path) -> AsyncIterator[RunningSimulator]:
    """A fresh simulator (data under ``tmp_path``); webhook retries start at 50 ms so
    that retry tests stay short."""
    async with running_simulator(tmp_path / "wasim", webhook_retry_base_s=0.05) as running:
        yield running


@pytest.fixture
async def control(simulator: RunningSimulator) -> AsyncIterator[SimulatorControl]:
    async with SimulatorControl(simulator.url) as client:
        yield client


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as served:
        yield served


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
async def number(control: SimulatorControl, receiver: WebhookReceiver) -> CloudNumber:
    """A Cloud API number whose webhooks go to the receiver."""
    return await register_cloud_number(control, "106540352242922", webhook_url=receiver.url)
