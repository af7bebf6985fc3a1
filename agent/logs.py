"""What the process logs, and how: one line per event, a stack only for real faults, floods told
once, and JSON lines for a log shipper.

A server faces clients that send garbage (malformed HTTP, RTP or SIP by the thousand); each is
worth a warning, not a traceback, and a flood of them is worth a few lines, not thousands.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import warnings
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp.http_exceptions import HttpProcessingError

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
FLOOD_WINDOW_S = 10.0
FLOOD_BURST = 10
"""Lines of one kind let through in a window; the rest are counted in the next one let out."""
MAX_KINDS = 1000

conversation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "conversation_id", default=None
)
"""The conversation the running task belongs to: set by its transport, written on each line."""


class FloodFilter(logging.Filter):
    """At most ``FLOOD_BURST`` lines of one kind (logger and message template) a window, then
    one at the 100th, 1,000th, … of the window, with its count: a flood (2,000 busy INVITEs, a
    stream of garbage RTP) shows as a few lines that say how big it was."""

    def __init__(self) -> None:
        super().__init__()
        self._kinds: dict[tuple[str, str], tuple[float, int]] = {}
        """(window start, lines so far) by kind."""

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, str(record.msg))
        start, seen = self._kinds.get(kind, (record.created, 0))
        if record.created - start >= FLOOD_WINDOW_S:
            start, seen = record.created, 0
        if len(self._kinds) >= MAX_KINDS:
            self._kinds.clear()
        seen += 1
        self._kinds[kind] = (start, seen)
        if seen <= FLOOD_BURST:
            return True
        if str(seen).rstrip("0") != "1":  # not the 100th, 1,000th, …
            return False
        took = record.created - start
        record.msg, record.args = f"{record.getMessage()} ({seen} like it in {took:.1f} s)", None
        return True


class MalformedHttpFilter(logging.Filter):
    """aiohttp logs each malformed request it refused with a 400 as an error with a stack:
    it is the client's fault, so one warning line (a fault of ours keeps its stack)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "a malformed HTTP request from %s was refused (%s): %s"
            record.args = (*(record.args or ()), error.code, error.message.splitlines()[0])
            record.exc_info = record.exc_text = None
        return True


def tag_records() -> None:
    """Every record made from now on carries ``conversation_id`` (LiveKit's JSON lines, in a
    worker, print it too)."""
    make = logging.getLogRecordFactory()
    if getattr(make, "tags_conversations", False):
        return

    def tagged(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.conversation_id = conversation_id.get()
        return record

    tagged.tags_conversations = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(tagged)


class TextFormatter(logging.Formatter):
    """Warnings in one line (libraries attach stacks to what a client did wrong); an error's
    stack is kept, since it is a fault to fix."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno < logging.ERROR and record.exc_info:
            record.exc_info = record.exc_text = None
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message, the conversation, a
    stack."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (conversation := getattr(record, "conversation_id", None)) is not None:
            line["conversation_id"] = conversation
        if record.exc_info and record.levelno >= logging.ERROR:
            line["stack"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(*, verbose: bool, log_format: LogFormat = "text") -> None:
    """Our lines at INFO; libraries' warnings (``--verbose``: everything, named)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        fmt = "%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"
        handler.setFormatter(TextFormatter(fmt))
    handler.addFilter(FloodFilter())
    tag_records()
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("voice_agent").setLevel(logging.INFO)
    logging.getLogger("aiohttp.server").addFilter(MalformedHttpFilter())
    if not verbose:
        # each adapter load after the first: expected, since Phi-4-MM carries two
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        logging.getLogger("livekit").setLevel(logging.ERROR)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def leave_to_livekit() -> None:
    """A worker asked for JSON: LiveKit's own JSON lines (on stdout, with its job's fields
    and ours) are the one log; our text lines would repeat them."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
