"""``peakend import``: history through the same recorder, idempotent and resumable."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra.bootstrap import Platform
from infra.importer import MappingError, import_file
from infra.simulator import Simulator, SimulatorConfig, period
from tests.conftest import customer_of, embedded


def history(n: int, seed: int = 4) -> list[dict[str, Any]]:
    start, end = period(365)
    simulator = Simulator(
        SimulatorConfig(seed=seed, customers=80, start=start, end=end, duplicate_rate=0.0)
    )
    return simulator.touchpoints(n)


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_a_jsonl_import_records_every_valid_line_and_rejects_the_rest_with_reasons(
    platform: Platform, tmp_path: Path
) -> None:
    envelopes = history(300)
    lines = [json.dumps(e) for e in envelopes]
    lines.insert(10, "{not json")
    lines.insert(20, json.dumps({**envelopes[0], "event_id": "x-1", "emotion": 9}))
    source = write_jsonl(tmp_path / "history.jsonl", lines)

    summary = import_file(platform, source, batch_size=50)

    assert (summary.lines, summary.recorded, summary.rejected) == (302, 300, 2)
    rejects = [json.loads(line) for line in Path(str(summary.reject_file)).read_text().splitlines()]
    assert [r["line"] for r in rejects] == [11, 21]
    assert rejects[1]["errors"][0]["field"] == "emotion"
    assert embedded(platform).wait_until_projected()  # the projector follows the import
    customers = {customer_of(platform, e["customer"]["id"]) for e in envelopes}
    documents = [platform.store.get("customer", c) for c in customers]
    assert sum(d["touchpoints_total"] for d in documents if d is not None) == 300


def test_an_interrupted_import_resumes_after_the_last_recorded_batch(
    platform: Platform, tmp_path: Path
) -> None:
    envelopes = history(200, seed=5)
    source = write_jsonl(tmp_path / "part.jsonl", [json.dumps(e) for e in envelopes[:120]])
    first = import_file(platform, source, batch_size=50)
    assert first.recorded == 120
    # The file grows (or the run was cut short): the next run starts after line 120.
    write_jsonl(source, [json.dumps(e) for e in envelopes])
    second = import_file(platform, source, batch_size=50)
    assert (second.skipped, second.recorded, second.duplicates) == (120, 80, 0)
    # Starting over records nothing twice: the recorder is idempotent by event_id.
    again = import_file(platform, source, batch_size=50, restart=True)
    assert (again.recorded, again.duplicates) == (0, 200)


def test_a_csv_import_builds_envelopes_from_the_column_mapping(
    platform: Platform, tmp_path: Path
) -> None:
    source = tmp_path / "orders.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "when", "customer_no", "order", "amount", "mood"])
        writer.writerow(["o-1", "2024-05-01T10:00:00+02:00", "K1", "A1", "19.90", "2"])
        writer.writerow(["o-2", "2024-06-01T10:00:00+02:00", "K1", "A2", "5.10", ""])
        writer.writerow(["o-3", "2024-06-02T10:00:00+02:00", "K2", "A3", "abc", "x"])
    mapping = {
        "event_id": "id",
        "occurred_at": "when",
        "customer.id": "customer_no",
        "type": {"value": "purchase"},
        "channel": {"value": "store"},
        "payload.order_id": "order",
        "payload.amount": "amount",
        "payload.currency": {"value": "EUR"},
        "emotion": {"column": "mood", "type": "int"},
    }

    summary = import_file(platform, source, mapping=mapping)

    assert (summary.recorded, summary.rejected) == (2, 1)
    [reject] = [
        json.loads(line) for line in Path(str(summary.reject_file)).read_text().splitlines()
    ]
    assert reject["line"] == 4 and "emotion" in reject["errors"][0]["message"]
    assert embedded(platform).wait_until_projected()
    customer = platform.store.get("customer", customer_of(platform, "K1"))
    assert customer is not None and customer["spend_by_currency"] == {"EUR": "25.00"}


@pytest.mark.parametrize(
    "mapping", [{}, {"event_id": {"type": "int"}}, {"emotion": {"column": "m", "type": "complex"}}]
)
def test_a_wrong_mapping_is_refused_before_any_line_is_read(
    platform: Platform, tmp_path: Path, mapping: dict[str, Any]
) -> None:
    source = tmp_path / "x.csv"
    source.write_text("id\n1\n")
    with pytest.raises(MappingError):
        import_file(platform, source, mapping=mapping)


def test_the_import_command_prints_a_summary_and_fails_when_lines_were_rejected(
    fresh_database: Callable[[], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from infra.cli import main

    monkeypatch.setenv("PEAKEND_DATABASE_URL", fresh_database())
    source = write_jsonl(tmp_path / "h.jsonl", [json.dumps(e) for e in history(30)] + ["]"])
    assert main(["import", str(source), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "31 lines, 30 recorded" in out and "1 rejected" in out


def test_an_import_says_which_money_has_no_exchange_rate_once_per_currency(
    make_platform: Callable[..., Platform], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.builders import purchase

    platform = make_platform(currency="EUR", exchange_rates={"GBP": "1.15"})
    lines = [
        json.dumps(purchase(None, "100.50", currency="USD")),
        json.dumps(purchase(None, "0.50", currency="USD")),
        json.dumps(purchase(None, "10.00", currency="GBP")),
        json.dumps(purchase(None, "3.00", currency="JPY")),
        json.dumps(purchase(None, "7.00")),
    ]
    source = write_jsonl(tmp_path / "money.jsonl", lines)
    with caplog.at_level("WARNING", logger="infra.importer"):
        summary = import_file(platform, source)
    assert summary.currency == "EUR"
    assert summary.purchases_by_currency == {"USD": 2, "GBP": 1, "JPY": 1, "EUR": 1}
    assert summary.unconverted == {"JPY": "3.00", "USD": "101.00"}
    warnings = [r.getMessage() for r in caplog.records if r.name == "infra.importer"]
    assert len(warnings) == 2 and "101.00 USD" in warnings[1] and "3.00 JPY" in warnings[0]
