"""The alert bench's pure parts: reading the stream, finding a probe's alert, percentiles."""

from __future__ import annotations

import json
import math

from infra.bench_alerts import AlertFigure, EventParser, ServerSentEvent, caused_by


def events(text: str) -> list[ServerSentEvent]:
    parser = EventParser()
    return [e for line in text.split("\n") if (e := parser.feed(line)) is not None]


def test_the_stream_gives_its_events_and_neither_heartbeats_nor_retry() -> None:
    text = (
        "retry: 2000\n\n"
        'id: 7\nevent: alert_opened\ndata: {"a":1}\n\n'
        ": heartbeat\n\n"
        "id: 8\nevent: alert_resolved\ndata: one\ndata: two\n\n"
    )
    assert events(text) == [
        ServerSentEvent("7", "alert_opened", '{"a":1}'),
        ServerSentEvent("8", "alert_resolved", "one\ntwo"),
    ]


def test_an_event_is_the_probes_only_when_it_opens_its_detractor_alert() -> None:
    def opened(rule: str, kind: str = "alert_opened") -> ServerSentEvent:
        alert = {"rule": rule, "evidence": {"answer": {"event_id": "probe-1"}}}
        return ServerSentEvent("1", kind, json.dumps({"kind": kind, "after": alert}))

    assert caused_by(opened("detractor_follow_up")) == "probe-1"
    assert caused_by(opened("silent_dissatisfaction")) is None
    assert caused_by(opened("detractor_follow_up", "alert_updated")) is None


def test_probes_that_never_arrived_count_against_the_p99_when_asked() -> None:
    figure = AlertFigure(
        "x", 2000.0, 100, 1.0, probes=10, latencies_ms=[float(i) for i in range(1, 10)]
    )
    assert figure.missing == 1
    assert figure.percentile(99) == 9.0
    assert figure.percentile(99, counting_missing=True) == math.inf
