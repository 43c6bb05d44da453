"""Log lines: text by default, one JSON object per line on request; chatty clients quiet."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest

from infra.logs import JsonFormatter, configure_logging
from infra.settings import Settings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatty = {name: logging.getLogger(name).level for name in ("kafka", "aiokafka.conn", "httpx")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in chatty.items():
        logging.getLogger(name).setLevel(was)


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("peakend.test", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_a_json_line_holds_time_level_logger_message_and_extra_fields() -> None:
    line = JsonFormatter().format(_record("lag %d", 7, correlation_id="c-1"))
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "peakend.test"
    assert entry["message"] == "lag 7"
    assert entry["correlation_id"] == "c-1"
    at = datetime.fromisoformat(entry["time"])
    offset = at.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert set(entry) == {"time", "level", "logger", "message", "correlation_id"}


def test_an_exception_stays_inside_its_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logger = logging.getLogger("peakend.test")
        stream = io.StringIO()
        configure_logging(Settings(log_format="json"), stream=stream)
        logger.exception("failed for %s", "\udcff\x00 é")  # odd text must not break the line
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["message"].startswith("failed for")
    assert "ValueError: bad\nthing" in entry["exception"]
    assert "Traceback" in entry["exception"]


def test_text_is_the_default_format() -> None:
    stream = io.StringIO()
    configure_logging(Settings(), stream=stream)
    logging.getLogger("peakend.test").warning("hello")
    assert stream.getvalue().rstrip().endswith("WARNING peakend.test hello")
    with pytest.raises(ValueError):
        Settings(log_format="xml")


def test_kafka_clients_log_connections_only_at_debug() -> None:
    stream = io.StringIO()
    configure_logging(Settings(), stream=stream)
    logging.getLogger("kafka.conn").info("<BrokerConnection ...>: connecting")
    logging.getLogger("aiokafka.conn").info("connecting")
    logging.getLogger("aiokafka.consumer.group_coordinator").info("joined group")
    logging.getLogger("kafka.conn").warning("connection lost")
    assert stream.getvalue().count("\n") == 2  # the group join and the warning
    configure_logging(Settings(), level=logging.DEBUG, stream=stream)
    logging.getLogger("kafka.conn").info("connecting again")
    assert "connecting again" in stream.getvalue()


def test_the_default_handler_follows_the_current_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Called again (a second main() in one process) it replaces only its own handler, and
    writes to stderr as it is when a record comes, never to a closed stream."""
    first = configure_logging(Settings())
    second = configure_logging(Settings())
    root = logging.getLogger()
    assert second in root.handlers and first not in root.handlers
    logging.getLogger("peakend.test").warning("to the stderr of now")
    assert "to the stderr of now" in capsys.readouterr().err
