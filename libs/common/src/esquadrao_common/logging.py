"""Structured logs: one JSON object per line on stdout, from structlog and stdlib alike.

Every line carries ``timestamp`` (ISO 8601, UTC), ``level``, ``event``, ``logger`` and
``service``; ``trace_id`` and ``span_id`` when a span is current (so a line can be joined
with its trace); whatever was bound with :func:`structlog.contextvars.bind_contextvars`
(request id, company id, ...) in the current context; and ``exception``, the formatted
traceback, when one is logged. Keyword arguments of a structlog call become fields.

Libraries that log through :mod:`logging` (uvicorn, aiokafka, SQLAlchemy) go through the
same processors and renderer, so their lines have the same shape. Run uvicorn with
``log_config=None`` so that it does not install its own handlers; those it installed
before :func:`configure_logging` runs are removed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from esquadrao_common.tracing import current_ids

LogFormat = Literal["json", "console"]

#: Name of the root handler :func:`configure_logging` installs (and replaces when called
#: again).
HANDLER_NAME = "esquadrao"

#: Loggers that servers configure with their own handlers; their records are sent to the
#: root handler instead.
_ROUTED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add the current span's ``trace_id`` and ``span_id`` (nothing outside a span)."""
    ids = current_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


class _AddService:
    """Add ``service``: the name of the process's service."""

    def __init__(self, service_name: str) -> None:
        self.service_name = service_name

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", self.service_name)
        return event_dict


class _StdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stdout`` is when a record is emitted.

    A handler bound to the stream object of its creation would keep writing to a stream
    that was replaced (test output capture) and possibly closed since.
    """

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def _shared_processors() -> list[Processor]:
    """Processors applied to structlog events and stdlib records alike, in the caller's
    context (so contextvars and the current span are the caller's)."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        structlog.processors.StackInfoRenderer(),
    ]


def _renderers(fmt: LogFormat) -> Sequence[Processor]:
    if fmt == "console":
        return [structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())]
    return [
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(ensure_ascii=False),
    ]


def configure_logging(
    service_name: str, level: str | int = "INFO", fmt: LogFormat = "json"
) -> None:
    """Send every log of this process to stdout as ``fmt`` (JSON lines or console text).

    Sets the root logger's level to ``level``. Safe to call again (tests, reloads): the
    handler installed by a previous call is replaced, never duplicated; handlers others
    added to the root logger are left alone.
    """
    shared = _shared_processors()
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger first used before this call must still follow it.
        cache_logger_on_first_use=False,
    )
    handler = _StdoutHandler()
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                _AddService(service_name),
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_renderers(fmt),
            ],
        )
    )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(previous)
        previous.close()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in _ROUTED_LOGGERS:
        routed = logging.getLogger(name)
        routed.handlers.clear()
        routed.propagate = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name`` (conventionally ``__name__``)."""
    return structlog.stdlib.get_logger(name)
