"""Import reject files: where refused lines keep their raw text, and for how long.

``peakend import FILE`` writes each refused line to ``FILE.rejects.jsonl`` with its
original text, which may name a customer. Every reject file written is registered in
the ``reject_file`` table (host, path, when last written), so that

- ``purge_expired`` deletes the files written longer ago than
  ``PEAKEND_REJECT_FILE_RETENTION_HOURS``: every import runs it first, and so does
  ``peakend purge-rejects``;
- ``forget_values`` rewrites the live files without the lines that name an erased
  customer.

Both reach the files of the machine they run on (a path means nothing elsewhere); the
files of other machines are left to their own purge. An import holds an exclusive
``flock`` on its reject file while it writes: a rewrite waits for it, a purge skips the
file until the next run.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TextIO, cast

import phonenumbers

from projections.store import ReadModelStore

log = logging.getLogger(__name__)

# Characters a written phone number may hold besides digits: a string of only these is
# worth parsing as one.
_PHONE_LIKE = re.compile(r"^\+?[\d\s().\-/]{4,40}$")


def create_table(store: ReadModelStore) -> None:
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS reject_file (host text NOT NULL, path text NOT NULL,"
            " written_at timestamptz NOT NULL, purged_at timestamptz,"
            " PRIMARY KEY (host, path))"
        )


def _host() -> str:
    return socket.gethostname()


def register(store: ReadModelStore, path: Path, *, now: datetime | None = None) -> None:
    """Note that ``path`` holds refused lines as of ``now``: its retention starts again
    (an import appending to it after a resume keeps it alive)."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO reject_file (host, path, written_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (host, path) DO UPDATE"
            " SET written_at = EXCLUDED.written_at, purged_at = NULL",
            (_host(), str(path.resolve()), now or datetime.now(UTC)),
        )


def _locked(path: Path, mode: str, *, wait: bool = True) -> IO[Any] | None:
    """``path`` opened and exclusively locked (None: ``wait`` is False and another
    process holds it). A file replaced or deleted while we waited for its lock is
    opened again: the lock must be on the file the path names."""
    while True:
        handle: IO[Any] = path.open(mode) if "b" in mode else path.open(mode, encoding="utf-8")
        try:
            flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
            try:
                fcntl.flock(handle.fileno(), flags)
            except BlockingIOError:
                handle.close()
                return None
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and current.st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except BaseException:
            handle.close()
            raise
        handle.close()  # and again, on the file the path names now (gone: raises for "rb")


@contextmanager
def writing(path: Path, *, append: bool) -> Iterator[TextIO]:
    """Open a reject file for an import (``append``: keep what an earlier, interrupted
    run wrote), locked against rewrites and purges until it is closed."""
    handle = _locked(path, "a")
    assert handle is not None  # waiting: never refused
    with handle:
        if not append:
            handle.truncate(0)
        yield cast(TextIO, handle)  # text mode; closing the file releases the lock


def purge_expired(
    store: ReadModelStore, retention: timedelta, now: datetime | None = None
) -> list[Path]:
    """Delete this machine's reject files written longer ago than ``retention`` and mark
    them purged; a file already gone counts as purged. A file an import is writing at
    this moment is left for the next purge. Returns the paths deleted."""
    cutoff = (now or datetime.now(UTC)) - retention
    host = _host()
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT path FROM reject_file WHERE host = %s AND purged_at IS NULL"
            " AND written_at < %s ORDER BY path",
            (host, cutoff),
        )
        expired = [Path(row[0]) for row in cur.fetchall()]
    removed: list[Path] = []
    for path in expired:
        try:
            handle = _locked(path, "rb", wait=False)
        except FileNotFoundError:
            handle = None
        else:
            if handle is None:
                log.info("reject file %s is being written; purged next time", path)
                continue
            with handle:
                path.unlink()
            removed.append(path)
        with store.connection() as conn, conn.cursor() as cur:
            # Only if no import registered it again meanwhile.
            cur.execute(
                "UPDATE reject_file SET purged_at = now()"
                " WHERE host = %s AND path = %s AND written_at < %s",
                (host, str(path), cutoff),
            )
    return removed


@dataclass(frozen=True)
class _Needles:
    """The values to find, in the forms a raw line may spell them."""

    exact: tuple[str, ...]  # ids, cards, phones as given: case matters
    folded: tuple[str, ...]  # e-mails (and their ASCII domain form), case-folded
    phones: frozenset[str]  # E.164 forms of the phone numbers among the values

    @classmethod
    def of(cls, values: Collection[str]) -> _Needles:
        exact: list[str] = []
        folded: list[str] = []
        phones: set[str] = set()
        for value in values:
            if not value:
                continue
            if "@" in value:
                folded.append(value.casefold())
                local, _, domain = value.rpartition("@")
                try:
                    ascii_domain = domain.encode("idna").decode("ascii")
                except UnicodeError:
                    ascii_domain = domain
                folded.append(f"{local}@{ascii_domain}".casefold())
            else:
                exact.append(value)
                if value.startswith("+"):
                    phones.add(value)
        return cls(tuple(exact), tuple(dict.fromkeys(folded)), frozenset(phones))

    def __bool__(self) -> bool:
        return bool(self.exact or self.folded)

    def in_text(self, text: str) -> bool:
        if any(value in text for value in self.exact):
            return True
        folded = text.casefold()
        return any(value in folded for value in self.folded)

    def in_phone(self, text: str, region: str | None) -> bool:
        if not self.phones or not _PHONE_LIKE.match(text.strip()):
            return False
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            return False
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return e164 in self.phones


def _strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON value, keys too."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _names(line: bytes, needles: _Needles, region: str | None) -> bool:
    """Whether a reject line names one of the values: in the line as written, in any
    decoded string of it (``original`` holds the raw source line), and in any string of
    ``original`` decoded in turn when it is JSON (an escaped spelling in the source)."""
    text = line.decode("utf-8", errors="replace")
    if needles.in_text(text):
        return True
    try:
        record = json.loads(text)
    except ValueError:
        return False
    strings = list(_strings(record))
    original = record.get("original") if isinstance(record, dict) else None
    if isinstance(original, str):
        with suppress(ValueError):
            strings.extend(_strings(json.loads(original)))
    return any(needles.in_text(s) or needles.in_phone(s, region) for s in strings)


def _rewrite(path: Path, needles: _Needles, region: str | None) -> int:
    """Drop the lines of ``path`` that name a value, atomically; the other lines stay
    byte for byte. Returns how many were dropped."""
    handle = _locked(path, "rb")  # waits for an import writing it
    assert handle is not None
    with handle:
        lines = handle.read().split(b"\n")
        last = lines.pop()  # after the final newline: b"" (or a line cut short)
        kept = [line + b"\n" for line in lines if not _names(line, needles, region)]
        dropped = len(lines) - len(kept)
        if last:
            if _names(last, needles, region):
                dropped += 1
            else:
                kept.append(last)
        if not dropped:
            return 0
        descriptor, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.writelines(kept)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself is durable
        finally:
            os.close(directory)
    return dropped


def forget_values(
    store: ReadModelStore, values: Collection[str], *, phone_region: str | None = None
) -> int:
    """For the erasure of a customer: rewrite every live reject file of this machine
    without the lines that name any of ``values`` (the customer's clear identifiers:
    e-mails, phones, ids, loyalty cards...). E-mails compare case-insensitively (and in
    their ASCII domain form); a phone in E.164 also matches its other spellings in the
    raw line (``+49 30 1234567``; national ones read in ``phone_region``). Each file is
    replaced atomically (a temporary file beside it, fsynced, renamed over it); the lines
    of other customers stay byte for byte. Returns how many lines were removed."""
    needles = _Needles.of(values)
    if not needles:
        return 0
    host = _host()
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT host, path FROM reject_file WHERE purged_at IS NULL ORDER BY path",
        )
        live = cur.fetchall()
    elsewhere = sorted({h for h, _ in live if h != host})
    if elsewhere:
        log.warning(
            "reject files on %s are not reachable from %s: they keep their lines until "
            "their retention ends",
            ", ".join(elsewhere),
            host,
        )
    removed = 0
    for _, name in (row for row in live if row[0] == host):
        try:
            removed += _rewrite(Path(name), needles, phone_region)
        except FileNotFoundError:
            continue
    return removed
