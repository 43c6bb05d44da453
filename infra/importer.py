"""``peakend import``: years of history, bulk-loaded through the same recorder.

JSON Lines files hold one envelope per line; CSV files are turned into envelopes by a
column mapping (below). Lines are validated, recorded in batches (one event-store
transaction each), idempotent by ``event_id``; refused lines go to a reject file with
their line number and reasons, kept for ``PEAKEND_REJECT_FILE_RETENTION_HOURS`` (every
import first purges the expired ones: ``infra.rejects``). The position of the last
recorded batch is kept in PostgreSQL, so an interrupted import resumes where it stopped
(``--restart`` starts over; re-recording is harmless anyway).

A CSV mapping is a JSON object from envelope fields (dotted paths) to sources:

    {"event_id": "id", "type": "kind", "occurred_at": "when", "channel": "channel",
     "customer.id": "customer_no", "customer.email": "email",
     "emotion": {"column": "mood", "type": "int"},
     "payload.order_id": "order", "payload.amount": "amount",
     "payload.currency": {"value": "EUR"}}

A source is a column name, ``{"column": name, "type": "str|int|float|bool|json"}``
(``"default"`` optional), or ``{"value": constant}``. Empty cells are left out.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from domain.idempotency import Outcome, conflict_error
from domain.money import add_unconverted, unconverted_out
from domain.touchpoints import InvalidTouchpoint, TouchpointIn, parse_touchpoint
from infra import rejects as rejects_kept
from infra.bootstrap import Platform, reporting_money
from projections import analytics

log = logging.getLogger(__name__)

CONVERTERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": lambda text: text.strip().lower() in ("1", "true", "yes", "y"),
    "json": json.loads,
}


class MappingError(ValueError):
    """The CSV mapping itself is wrong (not a line of the file)."""


@dataclass
class ImportSummary:
    source: str
    lines: int = 0
    recorded: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0  # already imported by an earlier, interrupted run
    reject_file: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    # Money: the reporting currency, purchases per currency in the file, and the amounts
    # that value measures will leave out for want of an exchange rate (PEAKEND_CURRENCY,
    # PEAKEND_EXCHANGE_RATES): exact decimal strings per currency.
    currency: str | None = None
    purchases_by_currency: dict[str, int] = field(default_factory=dict)
    unconverted: dict[str, str] = field(default_factory=dict)


def _check_mapping(mapping: Mapping[str, Any]) -> None:
    if not isinstance(mapping, Mapping) or not mapping:
        raise MappingError("a mapping is a JSON object of envelope field -> source")
    for target, source in mapping.items():
        if isinstance(source, str):
            continue
        if not isinstance(source, Mapping) or not ({"column", "value"} & source.keys()):
            raise MappingError(
                f"{target}: a source is a column name, "
                '{"column": ..., "type": ...} or {"value": ...}'
            )
        if source.get("type", "str") not in CONVERTERS:
            raise MappingError(f"{target}: type is one of {', '.join(CONVERTERS)}")


def envelope_from_row(row: Mapping[str, str], mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Build an envelope from a CSV row; a cell that does not convert raises ValueError
    naming the envelope field and the column."""
    envelope: dict[str, Any] = {}
    for target, source in mapping.items():
        if isinstance(source, str):
            source = {"column": source}
        if "value" in source:
            value = source["value"]
        else:
            cell = row.get(source["column"])
            if cell is None or cell == "":
                if "default" not in source:
                    continue
                value = source["default"]
            else:
                kind = source.get("type", "str")
                try:
                    value = CONVERTERS[kind](cell)
                except ValueError:
                    raise ValueError(
                        f"{target}: column {source['column']!r} holds {cell!r}, not a {kind}"
                    ) from None
        node = envelope
        *parents, leaf = target.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return envelope


def _lines(
    handle: TextIO, fmt: str, mapping: Mapping[str, Any] | None
) -> Iterator[tuple[int, str, Any]]:
    """(line number, original text, envelope or the exception that refused it)."""
    if fmt == "jsonl":
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                yield number, text.rstrip("\n"), json.loads(text)
            except ValueError as error:
                yield number, text.rstrip("\n"), error
        return
    assert mapping is not None
    reader = csv.DictReader(handle)
    for number, row in enumerate(reader, start=2):  # line 1 is the header
        original = json.dumps(row, ensure_ascii=False)
        try:
            yield number, original, envelope_from_row(row, mapping)
        except ValueError as error:
            yield number, original, error


def import_file(
    platform: Platform,
    path: Path,
    *,
    fmt: str | None = None,
    mapping: Mapping[str, Any] | None = None,
    batch_size: int = 1000,
    reject_path: Path | None = None,
    restart: bool = False,
    on_progress: Callable[[int], None] = lambda _: None,
) -> ImportSummary:
    """Import ``path`` (``jsonl`` or ``csv``, from the suffix unless ``fmt`` says);
    ``on_progress`` gets the number of the last line done."""
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    if fmt == "csv":
        if mapping is None:
            raise MappingError("a CSV import needs a column mapping (--mapping FILE)")
        _check_mapping(mapping)
    reject_path = reject_path or path.with_name(path.name + ".rejects.jsonl")
    follower = f"import:{path.resolve()}"
    store, records = platform.store, platform.records
    # Raw refused lines live no longer than the retention on a machine that imports.
    rejects_kept.purge_expired(
        store, timedelta(hours=platform.settings.reject_file_retention_hours)
    )
    rejects_kept.register(store, reject_path)
    done = 0 if restart else store.position(follower)
    summary = ImportSummary(source=str(path), reject_file=str(reject_path))
    batch: list[TouchpointIn] = []
    last_line = done
    skew = timedelta(seconds=platform.settings.max_future_skew_seconds)
    money_seen: dict[tuple[str, datetime], Decimal] = {}

    sources: list[tuple[int, str]] = []  # the line of each touchpoint in ``batch``

    def flush() -> None:
        if batch:
            outcomes = records.record(batch)
            summary.recorded += sum(o.outcome is Outcome.RECORDED for o in outcomes)
            summary.duplicates += sum(o.outcome is Outcome.DUPLICATE for o in outcomes)
            for outcome, (number, original) in zip(outcomes, sources, strict=True):
                if outcome.outcome is Outcome.CONFLICT:
                    _reject(rejects, summary, number, original, [conflict_error(outcome)])
            batch.clear()
            sources.clear()
        with store.connection() as conn:  # after the batch is durable: resume from here
            store.lock_position(conn, follower)
            store.set_position(conn, follower, last_line)

    with (
        path.open(encoding="utf-8", newline="") as handle,
        rejects_kept.writing(reject_path, append=done > 0) as rejects,
    ):
        for number, original, parsed in _lines(handle, fmt, mapping):
            summary.lines += 1
            if number <= done:
                summary.skipped += 1
                continue
            try:
                if isinstance(parsed, Exception):
                    raise parsed
                touchpoint = parse_touchpoint(
                    parsed,
                    now=datetime.now(UTC),
                    max_future_skew=skew,
                    earliest=platform.settings.earliest_occurred_at,
                    phone_region=platform.settings.phone_default_region,
                    identifier_kinds=platform.settings.identifier_kinds,
                )
                batch.append(touchpoint)
                sources.append((number, original))
                _count_money(summary, money_seen, touchpoint)
            except InvalidTouchpoint as refusal:
                _reject(
                    rejects, summary, number, original, [e.model_dump() for e in refusal.errors]
                )
            except ValueError as error:
                _reject(
                    rejects, summary, number, original, [{"field": "line", "message": str(error)}]
                )
            last_line = number
            if len(batch) >= batch_size:
                flush()
                on_progress(number)
        flush()
        on_progress(last_line)
    rejects_kept.register(store, reject_path)  # its retention runs from the last write
    _summarise_money(platform, summary, money_seen)
    if summary.recorded:
        analyze(platform)
    return summary


def analyze(platform: Platform) -> None:
    """Refresh the planner's statistics after a bulk load. Until autovacuum gets to it
    (never, where it is off), a table that grew from nothing keeps its empty-table
    estimates, and lookups by customer plan as scans: 75 ms instead of 0.2 ms per
    customer read at 100k customers."""
    with platform.store.connection() as conn, conn.cursor() as cur:
        cur.execute("ANALYZE")


def _count_money(
    summary: ImportSummary, seen: dict[tuple[str, datetime], Decimal], touchpoint: TouchpointIn
) -> None:
    if touchpoint.type == "purchase":
        currency = str(touchpoint.payload["currency"])
        summary.purchases_by_currency[currency] = summary.purchases_by_currency.get(currency, 0) + 1
        key = (currency, touchpoint.occurred_at)
        seen[key] = seen.get(key, Decimal(0)) + Decimal(str(touchpoint.payload["amount"]))


def _summarise_money(
    platform: Platform, summary: ImportSummary, seen: Mapping[tuple[str, datetime], Decimal]
) -> None:
    """Which currency the imported money reports in, and what has no exchange rate:
    in the summary, and one WARNING per currency in the log."""
    money = reporting_money(platform.settings)
    currencies = {currency for currency, _ in seen} | analytics.currencies_seen(platform.store)
    rates = money.exchange(currencies)
    left_out: dict[str, Decimal] = {}
    for (currency, at), amount in seen.items():
        if rates.rate(currency, at.astimezone(money.zone).date()) is None:
            add_unconverted(left_out, currency, amount)
    summary.currency = rates.reporting
    summary.unconverted = unconverted_out(left_out)
    for currency, total in summary.unconverted.items():
        log.warning(
            "import %s: %s %s of purchases have no exchange rate into %s; value measures "
            "leave them out until PEAKEND_EXCHANGE_RATES gives one",
            summary.source,
            total,
            currency,
            rates.reporting,
        )


def _reject(
    rejects: TextIO,
    summary: ImportSummary,
    number: int,
    original: str,
    errors: list[dict[str, str]],
) -> None:
    summary.rejected += 1
    for error in errors:
        reason = error["field"]
        summary.reasons[reason] = summary.reasons.get(reason, 0) + 1
    rejects.write(
        json.dumps({"line": number, "errors": errors, "original": original}, ensure_ascii=False)
        + "\n"
    )


def count_lines(path: Path) -> int:
    """Lines in a file (for a progress bar's total), read in binary blocks."""
    with path.open("rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
