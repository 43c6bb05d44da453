"""Import reject files keep raw refused lines for ``reject_file_retention_hours`` only,
and an erasure takes the customer's lines out of the live ones (``infra.rejects``)."""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from infra.bootstrap import Platform
from infra.importer import ImportSummary, import_file
from infra.rejects import forget_values, purge_expired, register
from tests.builders import envelope, new_id

RETENTION = timedelta(hours=72)


def registered(platform: Platform) -> dict[str, datetime | None]:
    """Every registered reject file -> when it was purged (None: live)."""
    with platform.store.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT path, purged_at FROM reject_file")
        return dict(cur.fetchall())


def written_back(platform: Platform, path: Path, hours: float) -> None:
    """Pretend the reject file was last written ``hours`` ago."""
    with platform.store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE reject_file SET written_at = now() - %s WHERE path = %s",
            (timedelta(hours=hours), str(path.resolve())),
        )


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def import_with_rejects(platform: Platform, path: Path, bad: int = 2) -> Path:
    good = [json.dumps(envelope()) for _ in range(3)]
    refused = [json.dumps(envelope(emotion=9)) for _ in range(bad)]
    summary = import_file(platform, write_jsonl(path, good + refused + ["{not json"]))
    assert summary.rejected == bad + 1
    return Path(str(summary.reject_file))


def test_an_import_registers_the_reject_file_it_writes(platform: Platform, tmp_path: Path) -> None:
    rejects = import_with_rejects(platform, tmp_path / "history.jsonl")

    assert rejects.exists()
    assert registered(platform) == {str(rejects.resolve()): None}


def test_a_reject_file_past_its_retention_is_deleted_and_marked_purged(
    platform: Platform, tmp_path: Path
) -> None:
    old = import_with_rejects(platform, tmp_path / "old.jsonl")
    recent = import_with_rejects(platform, tmp_path / "recent.jsonl")
    gone = tmp_path / "gone.jsonl.rejects.jsonl"  # registered, then deleted by hand
    gone.write_text("{}\n")
    register(platform.store, gone, now=datetime.now(UTC) - timedelta(days=10))
    gone.unlink()
    written_back(platform, old, hours=73)

    removed = purge_expired(platform.store, RETENTION)

    assert removed == [old.resolve()]
    assert not old.exists() and recent.exists()
    state = registered(platform)
    assert state[str(old.resolve())] is not None and state[str(gone.resolve())] is not None
    assert state[str(recent.resolve())] is None
    assert purge_expired(platform.store, RETENTION) == []  # once only
    # With the clock moved past the recent file's retention too:
    later = datetime.now(UTC) + RETENTION + timedelta(minutes=1)
    assert purge_expired(platform.store, RETENTION, now=later) == [recent.resolve()]


def test_every_import_first_purges_the_expired_reject_files(
    make_platform: Callable[..., Platform], tmp_path: Path
) -> None:
    platform = make_platform(reject_file_retention_hours=24)
    yesterday = import_with_rejects(platform, tmp_path / "monday.jsonl")
    written_back(platform, yesterday, hours=25)

    today = import_with_rejects(platform, tmp_path / "tuesday.jsonl")

    assert not yesterday.exists() and today.exists()
    assert registered(platform)[str(yesterday.resolve())] is not None


def test_a_resumed_import_starts_the_retention_of_its_reject_file_again(
    platform: Platform, tmp_path: Path
) -> None:
    source = tmp_path / "growing.jsonl"
    rejects = import_with_rejects(platform, source)
    written_back(platform, rejects, hours=71)
    with source.open("a", encoding="utf-8") as more:
        more.write(json.dumps(envelope(emotion=-7)) + "\n")

    import_file(platform, source)  # resumes after the last line; one more reject

    assert len(rejects.read_text().splitlines()) == 4
    later = datetime.now(UTC) + timedelta(hours=2)
    assert purge_expired(platform.store, RETENTION, now=later) == []


def test_the_purge_command_prints_what_it_removed(
    platform: Platform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from infra.cli import main

    rejects = import_with_rejects(platform, tmp_path / "h.jsonl")
    written_back(platform, rejects, hours=100)
    monkeypatch.setenv("PEAKEND_DATABASE_URL", platform.database_url)

    assert main(["purge-rejects"]) == 0

    out = capsys.readouterr().out
    assert f"removed {rejects.resolve()}" in out and "1 reject files older than 72 h" in out
    assert not rejects.exists()


# -- erasure --------------------------------------------------------------------------


def rejects_of(summary: ImportSummary) -> Path:
    return Path(str(summary.reject_file))


def reject_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_forgetting_a_customer_removes_exactly_the_lines_naming_them(
    platform: Platform, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    ann = {"id": f"C-ann-{tag}", "email": f"ann.{tag}@example.com", "phone": "+49301234567"}
    bob = {"id": f"C-bob-{tag}", "email": f"bob.{tag}@example.com"}
    refused: list[tuple[str, str]] = [  # (whose, the raw line)
        ("ann", json.dumps(envelope({"id": ann["id"]}, emotion=9))),
        ("ann", json.dumps(envelope({"email": ann["email"].upper()}, emotion=9))),
        # An escaped spelling: only the decoded original shows the address.
        ("ann", json.dumps(envelope({"email": ann["email"]}, emotion=9)).replace("@", "\\u0040")),
        ("ann", json.dumps(envelope({"phone": "+49 (30) 123-4567"}, emotion=9))),
        ("ann", '{"customer": {"email": "' + ann["email"] + '"'),  # cut short: not JSON
        ("bob", json.dumps(envelope(bob, emotion=9))),
        ("bob", json.dumps(envelope({"phone": "+49 30 7654321"}, emotion=9))),
        ("bob", json.dumps(envelope(bob, payload={"note": "Grüße, ünïcode"}, emotion=9))),
        ("bob", "]"),
    ]
    good = [json.dumps(envelope()) for _ in range(2)]
    source = write_jsonl(tmp_path / "mixed.jsonl", good + [line for _, line in refused])
    summary = import_file(platform, source)
    rejects = Path(str(summary.reject_file))
    before = reject_lines(rejects)
    assert summary.rejected == len(refused) == len(before)
    kept = [line for (whose, _), line in zip(refused, before, strict=True) if whose == "bob"]

    removed = forget_values(platform.store, [ann["id"], ann["email"], ann["phone"]])

    assert removed == 5
    assert reject_lines(rejects) == kept  # byte for byte, in order
    assert forget_values(platform.store, [ann["email"]]) == 0
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_forgetting_reaches_every_live_reject_file_but_not_purged_ones(
    platform: Platform, tmp_path: Path
) -> None:
    customer = new_id("C")
    orders = tmp_path / "orders.csv"
    with orders.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "when", "customer_no", "mood"])
        writer.writerow(["o-1", "2024-05-01T10:00:00+02:00", customer, "x"])
        writer.writerow(["o-2", "2024-05-01T10:00:00+02:00", new_id("C"), "x"])
    mapping: dict[str, Any] = {
        "event_id": "id",
        "occurred_at": "when",
        "customer.id": "customer_no",
        "type": {"value": "visit"},
        "channel": {"value": "store"},
        "emotion": {"column": "mood", "type": "int"},
    }
    from_csv = rejects_of(import_file(platform, orders, mapping=mapping))
    line = json.dumps(envelope(customer, emotion=9))
    from_jsonl = Path(
        str(import_file(platform, write_jsonl(tmp_path / "a.jsonl", [line])).reject_file)
    )
    expired = Path(
        str(import_file(platform, write_jsonl(tmp_path / "b.jsonl", [line])).reject_file)
    )
    written_back(platform, expired, hours=80)
    purge_expired(platform.store, RETENTION)
    expired.write_text(line + "\n")  # a file of that name again, but not a registered live one

    assert forget_values(platform.store, [customer]) == 2

    assert len(reject_lines(from_csv)) == 1 and customer not in from_csv.read_text()
    assert from_jsonl.read_bytes() == b""
    assert expired.read_text() == line + "\n"


def test_the_reject_file_table_is_created_with_the_others(platform: Platform) -> None:
    with psycopg2.connect(platform.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('reject_file') IS NOT NULL")
        row = cur.fetchone()
    conn.close()
    assert row == (True,)


def test_a_reject_file_an_import_is_writing_is_left_for_the_next_purge(
    platform: Platform, tmp_path: Path
) -> None:
    from infra.rejects import writing

    rejects = import_with_rejects(platform, tmp_path / "busy.jsonl")
    written_back(platform, rejects, hours=100)
    with writing(rejects, append=True):  # as a running import holds it
        assert purge_expired(platform.store, RETENTION) == []
        assert rejects.exists()
    assert purge_expired(platform.store, RETENTION) == [rejects.resolve()]
