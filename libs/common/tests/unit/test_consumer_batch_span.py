"""The ``process`` span of a batch handler's call: one record continues its trace; several
get a span of their own linked to each record's trace context."""

from __future__ import annotations

import uuid
from typing import Any

from esquadrao.common.v1.envelope_pb2 import Envelope
from esquadrao_common.kafka.catalog import ConsumerGroupSpec
from esquadrao_common.kafka.consumer import BATCH_COUNT_ATTRIBUTE, ConsumerRuntime, IncomingRecord
from esquadrao_common.tracing import configure_tracing
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()


def incoming(offset: int, trace_id: str) -> IncomingRecord:
    traceparent = f"00-{trace_id}-{'1' * 16}-01".encode()
    return IncomingRecord(
        topic="t",
        partition=2,
        offset=offset,
        key=b"k",
        value=b"",
        headers=[("traceparent", traceparent)],
        timestamp=0,
        envelope=Envelope(event_id=str(uuid.uuid4())),
        attempt=0,
        source_topic="t",
    )


def runtime() -> ConsumerRuntime[Any]:
    async def batch_handler(records: Any, uow: Any) -> None: ...

    return ConsumerRuntime(
        bootstrap="unused:9092",
        group=ConsumerGroupSpec(name="g", topics=("t",), retry_delays_ms=(100,)),
        batch_handler=batch_handler,
        uow_factory=lambda: None,
        publisher=None,  # type: ignore[arg-type]
    )


def test_one_span_per_batch_linked_to_the_records_or_continuing_a_lone_record() -> None:
    configure_tracing("test", processors=(SimpleSpanProcessor(exporter),))
    exporter.clear()
    trace_ids = [uuid.uuid4().hex for _ in range(3)]
    consumer = runtime()

    with consumer._batch_span([incoming(10 + n, t) for n, t in enumerate(trace_ids)]):
        pass
    with consumer._batch_span([incoming(20, trace_ids[0])]):
        pass

    batch, alone = exporter.get_finished_spans()
    assert batch.name == "process t"
    assert batch.attributes is not None and batch.attributes[BATCH_COUNT_ATTRIBUTE] == 3
    assert batch.attributes["messaging.kafka.offset"] == 10
    assert batch.parent is None
    assert [format(link.context.trace_id, "032x") for link in batch.links] == trace_ids
    assert alone.attributes is not None and alone.attributes[BATCH_COUNT_ATTRIBUTE] == 1
    assert format(alone.context.trace_id, "032x") == trace_ids[0]
    assert alone.parent is not None
