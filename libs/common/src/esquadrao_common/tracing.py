"""OpenTelemetry tracing: setup, W3C context through Kafka headers, messaging spans.

One trace follows a change from the HTTP request that made it, through the outbox row
(which stores the request's ``traceparent``), the relay's publish span (a child of the
request's span, whose context travels in the record's headers) to every consumer's process
span (a child of the publish span). Span names and attributes follow the OpenTelemetry
messaging semantic conventions: ``<operation> <destination>``, ``messaging.system=kafka``,
``messaging.operation.type``, ``messaging.destination.name``, and so on.

Tracing is off (a no-op tracer) until :func:`configure_tracing` installs a provider.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from esquadrao_common.messaging import Headers

TRACER_NAME = "esquadrao"

#: Header names that carry the W3C trace context on Kafka records and in outbox rows.
TRACE_HEADERS = ("traceparent", "tracestate")


def configure_tracing(
    service_name: str,
    *,
    otlp_endpoint: str | None = None,
    console: bool = False,
    processors: tuple[SpanProcessor, ...] = (),
) -> TracerProvider:
    """Install the global tracer provider of this process and return it.

    Spans go to the OTLP/HTTP exporter at ``otlp_endpoint`` when given (e.g. from
    ``OTEL_EXPORTER_OTLP_ENDPOINT``), to stdout when ``console``, and to any extra
    ``processors`` (tests pass an in-memory exporter's). With none of them spans are still
    created, so trace ids reach the logs, but nothing is exported.

    OpenTelemetry lets a process set its provider once: a later call adds its exporters
    to the provider already installed (keeping that provider's ``service.name``).
    """
    installed = trace.get_tracer_provider()
    if isinstance(installed, TracerProvider):
        provider = installed
    else:
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        trace.set_tracer_provider(provider)
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if console:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


@functools.cache
def tracer() -> trace.Tracer:
    """The platform's tracer, looked up once: each lookup builds a new tracer, which costs
    more than the span it is for (the relay starts one per record). One looked up before
    the provider is installed delegates to it once it is."""
    return trace.get_tracer(TRACER_NAME)


def current_trace_headers() -> dict[str, str]:
    """The current span's W3C context as text headers (empty when no span is recording)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {name: value for name, value in carrier.items() if name in TRACE_HEADERS}


def context_from(headers: Mapping[str, str] | Headers | None) -> otel_context.Context:
    """The trace context carried by ``headers`` (text mapping or Kafka header list)."""
    if headers is None:
        return otel_context.Context()
    if isinstance(headers, Mapping):
        carrier = {k: v for k, v in headers.items() if k in TRACE_HEADERS}
    else:
        carrier = {k: v.decode("latin-1") for k, v in headers if k in TRACE_HEADERS}
    return propagate.extract(carrier, context=otel_context.Context())


def with_trace_headers(headers: Headers) -> Headers:
    """``headers`` without any previous trace context, plus the current span's."""
    kept = [(k, v) for k, v in headers if k not in TRACE_HEADERS]
    return kept + [(k, v.encode()) for k, v in current_trace_headers().items()]


MessagingOperation = Literal["publish", "process", "receive", "settle"]

_SPAN_KIND: dict[str, SpanKind] = {
    "publish": SpanKind.PRODUCER,
    "process": SpanKind.CONSUMER,
    "receive": SpanKind.CONSUMER,
    "settle": SpanKind.CLIENT,
}


def messaging_attributes(
    operation: MessagingOperation,
    destination: str,
    *,
    key: bytes | None = None,
    message_id: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    consumer_group: str | None = None,
) -> dict[str, Any]:
    """Span attributes of one Kafka record per the messaging semantic conventions."""
    attrs: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": destination,
    }
    if key is not None:
        attrs["messaging.kafka.message.key"] = key.decode("utf-8", "replace")
    if message_id:
        attrs["messaging.message.id"] = message_id
    if partition is not None:
        attrs["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attrs["messaging.kafka.offset"] = offset
    if consumer_group:
        attrs["messaging.consumer.group.name"] = consumer_group
    return attrs


def start_messaging_span(
    operation: MessagingOperation,
    destination: str,
    *,
    parent: otel_context.Context | None = None,
    **attributes: Any,
) -> Span:
    """Start (without making it current) a span for one record; the caller ends it.

    For work that spans many records at once, such as the relay's batched publish: each
    record gets its own span, whose context goes into that record's headers
    (:func:`headers_of`), and all of them end when the batch is acknowledged.
    """
    return tracer().start_span(
        f"{operation} {destination}",
        context=parent,
        kind=_SPAN_KIND[operation],
        attributes=messaging_attributes(operation, destination, **attributes),
    )


def headers_of(span: Span) -> Headers:
    """The W3C trace context of ``span`` as Kafka headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return [(k, v.encode()) for k, v in carrier.items() if k in TRACE_HEADERS]


@contextmanager
def messaging_span(
    operation: MessagingOperation,
    destination: str,
    *,
    parent: otel_context.Context | None = None,
    key: bytes | None = None,
    message_id: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    consumer_group: str | None = None,
) -> Iterator[Span]:
    """The current span while one Kafka record is handled, per the messaging conventions.

    ``parent`` is the context the span continues (the record's headers); the current
    context is used when it is None. An exception escaping the block is recorded on the
    span and marks it as an error.
    """
    with tracer().start_as_current_span(
        f"{operation} {destination}",
        context=parent,
        kind=_SPAN_KIND[operation],
        attributes=messaging_attributes(
            operation,
            destination,
            key=key,
            message_id=message_id,
            partition=partition,
            offset=offset,
            consumer_group=consumer_group,
        ),
        record_exception=True,
        set_status_on_exception=True,
    ) as span:
        yield span


def mark_error(span: Span, error: BaseException) -> None:
    """Record ``error`` on ``span`` without raising it (a handled failure: retry, DLQ)."""
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span as hex, or None outside any valid span."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")
