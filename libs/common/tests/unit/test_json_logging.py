"""configure_logging: JSON lines on stdout from structlog and stdlib, with trace and context."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import structlog
from esquadrao_common.logging import HANDLER_NAME, configure_logging, get_logger
from esquadrao_common.tracing import configure_tracing, tracer

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave the process's logging as it was: root handlers and level, structlog, context."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def tracing() -> None:
    configure_tracing("test")


def json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_line_has_the_standard_fields_and_the_call_keywords(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("contacts")

    get_logger("contacts.api").info("contact created", contact_id="c-1", attempts=2)

    [line] = json_lines(capsys)
    assert line["event"] == "contact created"
    assert line["level"] == "info"
    assert line["logger"] == "contacts.api"
    assert line["service"] == "contacts"
    assert (line["contact_id"], line["attempts"]) == ("c-1", 2)
    assert datetime.fromisoformat(line["timestamp"]).utcoffset() == timedelta(0)
    assert "trace_id" not in line
    assert "span_id" not in line


def test_lines_inside_a_span_carry_its_trace_and_span_ids(
    capsys: pytest.CaptureFixture[str], tracing: None
) -> None:
    configure_logging("contacts")

    with tracer().start_as_current_span("handle request") as span:
        get_logger("contacts.api").info("inside")
        logging.getLogger("sqlalchemy.engine").warning("stdlib inside")
    context = span.get_span_context()

    lines = json_lines(capsys)
    assert [line["event"] for line in lines] == ["inside", "stdlib inside"]
    for line in lines:
        assert line["trace_id"] == format(context.trace_id, "032x")
        assert line["span_id"] == format(context.span_id, "016x")


def test_bound_contextvars_appear_in_every_line_until_unbound(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("tickets")

    structlog.contextvars.bind_contextvars(request_id="req-7", company_id="acme")
    get_logger("tickets.api").info("first")
    logging.getLogger("aiokafka").info("second")
    structlog.contextvars.unbind_contextvars("request_id")
    get_logger("tickets.api").info("third")

    first, second, third = json_lines(capsys)
    for line in (first, second):
        assert (line["request_id"], line["company_id"]) == ("req-7", "acme")
    assert "request_id" not in third
    assert third["company_id"] == "acme"


def test_stdlib_records_are_rendered_the_same_way(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("whatsapp")

    logging.getLogger("aiokafka.consumer").warning("rebalance of %s in %d ms", "group-a", 12)

    [line] = json_lines(capsys)
    assert line["event"] == "rebalance of group-a in 12 ms"
    assert line["level"] == "warning"
    assert line["logger"] == "aiokafka.consumer"
    assert line["service"] == "whatsapp"
    assert datetime.fromisoformat(line["timestamp"]).utcoffset() == timedelta(0)


def test_uvicorn_own_handlers_are_replaced_by_the_json_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    access = logging.getLogger("uvicorn.access")
    own_handler = logging.StreamHandler()
    access.addHandler(own_handler)
    access.propagate = False

    configure_logging("contacts")
    access.info('%s - "%s %s"', "127.0.0.1:5000", "GET", "/healthz")

    [line] = json_lines(capsys)
    assert line["event"] == '127.0.0.1:5000 - "GET /healthz"'
    assert line["logger"] == "uvicorn.access"
    assert own_handler not in access.handlers


def test_exceptions_become_an_exception_string_field(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("campaigns")

    try:
        raise ValueError("bad template")
    except ValueError:
        get_logger("campaigns.worker").exception("send failed", campaign_id="k-1")
        logging.getLogger("campaigns.stdlib").exception("stdlib send failed")

    structlog_line, stdlib_line = json_lines(capsys)
    for line in (structlog_line, stdlib_line):
        assert line["level"] == "error"
        assert isinstance(line["exception"], str)
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert line["exception"].endswith("ValueError: bad template")
    assert structlog_line["campaign_id"] == "k-1"


def test_level_filters_structlog_and_stdlib(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("contacts", level="warning")

    get_logger("contacts").info("dropped")
    logging.getLogger("aiokafka").info("dropped too")
    get_logger("contacts").warning("kept")

    assert [line["event"] for line in json_lines(capsys)] == ["kept"]


def test_configuring_twice_replaces_the_handler(capsys: pytest.CaptureFixture[str]) -> None:
    logger = get_logger("contacts")
    configure_logging("first")
    configure_logging("second")

    logger.info("once")

    [line] = json_lines(capsys)
    assert line["service"] == "second"
    ours = [h for h in logging.getLogger().handlers if h.get_name() == HANDLER_NAME]
    assert len(ours) == 1


def test_console_format_is_text_with_the_same_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("contacts", fmt="console")

    get_logger("contacts.api").info("contact created", contact_id="c-1")

    out = capsys.readouterr().out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)
    assert "contact created" in out
    assert "contact_id=c-1" in out
    assert "service=contacts" in out
