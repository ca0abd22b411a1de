"""Wiring of the send worker: real providers, limits and credentials for the drivers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from esquadrao_common.service import Platform
from redis.asyncio import BlockingConnectionPool, Redis

from whatsapp.adapters.cloud_api import CloudApiProvider
from whatsapp.adapters.cloud_session import CloudConnection
from whatsapp.adapters.credentials import (
    CloudCredentials,
    CredentialCipher,
    UnreadableCredentials,
    saved_credentials,
)
from whatsapp.adapters.limits import SessionLimiter, shared_rate_limiter
from whatsapp.adapters.sim_session import SimConnection
from whatsapp.config import WhatsappSettings
from whatsapp.domain.provider import ConnectionListener, SessionConnection
from whatsapp.domain.sessions import ProviderKind, ReconnectPolicy, Session
from whatsapp.entrypoints.sender import DriverFactory, ReceiptWriter, SendWorker
from whatsapp.service_layer.driver import DriverPolicy, SessionDriver
from whatsapp.service_layer.messages import RetryPolicy
from whatsapp.service_layer.unit_of_work import WhatsappUnitOfWork


def driver_policy(settings: WhatsappSettings) -> DriverPolicy:
    return DriverPolicy(
        reconnect=ReconnectPolicy(
            base_delay_s=settings.reconnect_base_s,
            max_delay_s=settings.reconnect_max_s,
            max_retries=settings.whatsapp_reconnection_max_retries,
        ),
        breaker_threshold=settings.whatsapp_circuit_breaker_threshold,
        breaker_timeout_s=settings.breaker_timeout_s,
        retry=RetryPolicy(max_attempts=settings.whatsapp_send_max_attempts),
        max_claim=settings.whatsapp_send_batch,
        default_profile=settings.whatsapp_default_profile,
        metrics_flush_s=settings.health_check_interval_s,
    )


def connection_factory(
    settings: WhatsappSettings, http: httpx.AsyncClient
) -> Callable[[Session, dict[str, Any], ConnectionListener], SessionConnection]:
    """Makes a session's connection from its provider and (decrypted) secrets. Raises
    KeyError or ValueError when the secrets lack what the provider needs."""

    def connect(
        session: Session, secrets: dict[str, Any], listener: ConnectionListener
    ) -> SessionConnection:
        if session.provider is ProviderKind.SIM:
            return SimConnection(
                settings.whatsapp_simulator_url, session.id, saved_credentials(secrets), listener
            )
        try:
            credentials = CloudCredentials.of(secrets)
        except UnreadableCredentials as error:
            raise ValueError(str(error)) from None
        provider = CloudApiProvider(
            http,
            base_url=settings.whatsapp_graph_url,
            api_version=settings.whatsapp_graph_version,
            phone_number_id=credentials.phone_number_id,
            access_token=credentials.access_token,
        )
        return CloudConnection(provider, listener, session.phone_e164)

    return connect


def send_worker(
    platform: Platform, settings: WhatsappSettings, *, clock: Callable[[], datetime]
) -> SendWorker:
    """The worker of ``platform``: drivers on Redis-shared limits and real providers."""

    def uow() -> WhatsappUnitOfWork:
        return WhatsappUnitOfWork(platform.database)

    # Its own pool: every send takes tokens, and a pool that refused connections when
    # exhausted would push the limiter to its per-process fallback under load.
    limits_redis = Redis(
        connection_pool=BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=64, timeout=5, socket_timeout=2
        )
    )
    limiter = SessionLimiter(shared_rate_limiter(limits_redis))
    vault = CredentialCipher.from_settings(settings)
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=200))
    connect = connection_factory(settings, http)
    policy = driver_policy(settings)

    starts = asyncio.Semaphore(policy.parallel_starts)

    def make_driver(receipts: ReceiptWriter) -> DriverFactory:
        def driver(session: Session) -> SessionDriver:
            return SessionDriver(
                session,
                owner=worker.supervisor.owner,
                uow=uow,
                connect=connect,
                vault=vault,
                limiter=limiter,
                receipts=receipts.add,
                policy=policy,
                starts=starts,
                clock=clock,
            )

        return driver

    worker = SendWorker(
        bootstrap=settings.kafka_bootstrap,
        uow=uow,
        publisher=platform.publisher,
        make_driver=make_driver,
        clock=clock,
        bulk_backlog_limit=settings.whatsapp_bulk_backlog_limit,
        client_id=f"{settings.service_name}-sender",
    )
    return worker
