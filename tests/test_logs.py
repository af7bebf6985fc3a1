"""What an operator reads in a server's log: one line per event, the stack of a real fault
kept, a flood told in a few lines that say its size, JSON lines for a log shipper."""

from __future__ import annotations

import json
import logging

from aiohttp.http_exceptions import BadHttpMessage

from agent.logs import (
    FLOOD_BURST,
    FloodFilter,
    JsonFormatter,
    MalformedHttpFilter,
    TextFormatter,
    conversation_id,
    tag_records,
)


def record(
    level: int, message: str, *args: object, error: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(error), error, error.__traceback__) if error is not None else None
    return logging.getLogger("test").makeRecord("test", level, __file__, 1, message, args, exc_info)


def raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:
        return caught


def test_a_real_fault_keeps_its_stack_and_a_warning_is_one_line():
    fault = record(logging.ERROR, "conversation %s failed", "abc", error=raised(KeyError("x")))
    shown = TextFormatter("%(message)s").format(fault)
    assert shown.startswith("conversation abc failed") and "Traceback" in shown
    warning = record(logging.WARNING, "a bad packet", error=raised(ValueError("garbage")))
    assert TextFormatter("%(message)s").format(warning) == "a bad packet"


def test_json_lines_carry_the_conversation_and_a_faults_stack():
    tag_records()
    token = conversation_id.set("c0ffee")
    try:
        fault = record(logging.ERROR, "failed", error=raised(RuntimeError("boom")))
    finally:
        conversation_id.reset(token)
    line = json.loads(JsonFormatter().format(fault))
    assert line["conversation_id"] == "c0ffee" and line["level"] == "error"
    assert "RuntimeError: boom" in line["stack"] and line["time"].endswith("+00:00")
    quiet = json.loads(JsonFormatter().format(record(logging.INFO, "started")))
    assert "conversation_id" not in quiet and "stack" not in quiet


def test_a_flood_is_told_in_a_few_lines_that_say_its_size():
    flood = FloodFilter()
    shown = [
        r.getMessage()
        for n in range(1000)
        if flood.filter(
            r := record(logging.WARNING, "a datagram from %s was dropped", f"10.0.0.{n % 250}")
        )
    ]
    assert len(shown) == FLOOD_BURST + 2
    assert shown[-2].endswith("(100 like it in 0.0 s)") and shown[-1].startswith("a datagram from")
    assert flood.filter(record(logging.WARNING, "another kind of line"))


def test_a_malformed_http_request_is_a_warning_not_an_error():
    refused = record(
        logging.ERROR,
        "Error handling request from %s",
        "192.0.2.7",
        error=raised(BadHttpMessage("Bad header\nmore")),
    )
    assert MalformedHttpFilter().filter(refused)
    assert refused.levelno == logging.WARNING and refused.exc_info is None
    assert (
        refused.getMessage()
        == "a malformed HTTP request from 192.0.2.7 was refused (400): Bad header"
    )
    ours = record(
        logging.ERROR, "Error handling request from %s", "192.0.2.7", error=raised(KeyError("x"))
    )
    assert MalformedHttpFilter().filter(ours) and ours.levelno == logging.ERROR and ours.exc_info
