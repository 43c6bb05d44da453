"""API keys: who may call the API, with which scopes (guarantee 10).

A key is ``pk_live_`` and 43 random URL-safe characters (256 bits), so a leaked one is
recognisable (secret scanners match the prefix) and cannot be guessed. Only its SHA-256
digest is stored: a key is random, so a slow password hash would add nothing but a
cost on every request. The secret is shown once, when the key is created.

The API authenticates from an in-memory copy of the active keys, re-read every
``key_cache_seconds`` (one query, whatever the traffic): a revoked key stops working
within that time in every API process. The same refresh writes the last-used times
gathered since the previous one, so a request costs no write.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import psycopg2
import psycopg2.errors

from infra.settings import DEVELOPMENT_API_KEY
from projections.store import ReadModelStore

log = logging.getLogger(__name__)

Scope = Literal["ingest", "read", "operate", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
SCOPE_MEANING: dict[Scope, str] = {
    "ingest": "record touchpoints",
    "read": "read projections and analytics",
    "operate": "act on alerts and segments",
    "admin": "replay, erase, split, keys, model fits, audit",
}
PREFIX = "pk_live_"
# An unknown key re-reads the active keys, at most this often: a key made by another API
# process works at once, and a flood of bad keys costs one query a second.
MISS_REREAD_SECONDS = 1.0
DEVELOPMENT_KEY_NAME = "development"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"
ID_PREFIX = "key_"  # ids are key_ and 16 hex digits; a name may not look like one


class AccessNotConfigured(RuntimeError):
    """The API would be open or guessable: no active key, or the development key,
    outside development."""


class KeyRefused(ValueError):
    """A key change the store refuses (a taken name, the last admin key)."""


@dataclass(frozen=True)
class ApiKey:
    """A key as the store has it: never the secret, only its first characters."""

    id: str
    name: str
    scopes: frozenset[Scope]
    hint: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def hint(secret: str) -> str:
    """What a listing shows of a key: enough to tell keys apart, nothing to use."""
    return secret[: len(PREFIX) + 4] + "…"


def check_name(name: str) -> str:
    """A key's name: what ``revoke`` and listings name it by, so never one that reads as
    another key's id."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(
            "name: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if name.startswith(ID_PREFIX):
        raise ValueError(f"name: may not start with {ID_PREFIX!r}, which key ids start with")
    return name


def parse_scopes(given: Iterable[str]) -> frozenset[Scope]:
    scopes = set(given)
    unknown = scopes - set(SCOPES)
    if unknown:
        raise ValueError(
            f"scope: unknown {', '.join(sorted(unknown))}; the scopes are {', '.join(SCOPES)}"
        )
    if not scopes:
        raise ValueError(f"scope: give at least one of {', '.join(SCOPES)}")
    return frozenset(scopes)  # type: ignore[arg-type]  # checked against SCOPES above


_COLUMNS = "id, name, scopes, hint, created_at, last_used_at, revoked_at"


def _key(row: tuple[Any, ...]) -> ApiKey:
    id_, name, scopes, hint_, created, used, revoked = row
    return ApiKey(str(id_), str(name), frozenset(scopes), str(hint_), created, used, revoked)


class KeyStore:
    """The ``api_key`` table and the API's cached view of it."""

    def __init__(
        self,
        store: ReadModelStore,
        *,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.cache_seconds, self.clock = store, cache_seconds, clock
        self._lock = threading.Lock()
        self._active: dict[bytes, tuple[bytes, ApiKey]] | None = None
        self._read_at = float("-inf")
        self._used: dict[str, datetime] = {}

    def create_table(self) -> None:
        with self.store.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS api_key (id text PRIMARY KEY,"
                " name text NOT NULL UNIQUE, digest bytea NOT NULL UNIQUE,"
                " scopes text[] NOT NULL, hint text NOT NULL,"
                " created_at timestamptz NOT NULL DEFAULT now(),"
                " last_used_at timestamptz, revoked_at timestamptz)"
            )

    # -- changes ----------------------------------------------------------------------

    def create(self, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
        """A new key and its secret (shown once, never stored)."""
        checked = parse_scopes(scopes)
        secret = new_secret()
        return self._insert(check_name(name), checked, secret), secret

    def ensure_development_key(self) -> str:
        """The development key with every scope (``peakend demo``): the well-known key
        that only development accepts."""
        with self.store.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM api_key WHERE digest = %s AND revoked_at IS NULL",
                (digest(DEVELOPMENT_API_KEY),),
            )
            if cur.fetchone() is None:
                # A revoked development key keeps its name: this one gets a fresh name.
                cur.execute("DELETE FROM api_key WHERE digest = %s", (digest(DEVELOPMENT_API_KEY),))
        with contextlib.suppress(KeyRefused):  # a concurrent start made it
            self._insert(DEVELOPMENT_KEY_NAME, frozenset(SCOPES), DEVELOPMENT_API_KEY)
        self.invalidate()
        return DEVELOPMENT_API_KEY

    def _insert(self, name: str, scopes: frozenset[Scope], secret: str) -> ApiKey:
        try:
            with self.store.connection() as conn, conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO api_key (id, name, digest, scopes, hint)"
                    f" VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                    (
                        ID_PREFIX + secrets.token_hex(8),
                        name,
                        digest(secret),
                        sorted(scopes),
                        hint(secret),
                    ),
                )
                row = cur.fetchone()
        except psycopg2.errors.UniqueViolation:
            raise KeyRefused(f"name: a key named {name!r} exists; choose another name") from None
        self.invalidate()
        assert row is not None  # RETURNING of an INSERT
        return _key(row)

    def revoke(self, id_or_name: str) -> ApiKey | None:
        """Revoke a key by id or name (None: no such active key). The last active key
        holding ``admin`` is kept: revoking it would leave nobody to manage keys over
        the API (``peakend keys create`` can always make another)."""
        with self.store.connection() as conn, conn.cursor() as cur:
            cur.execute("LOCK TABLE api_key IN SHARE ROW EXCLUSIVE MODE")
            cur.execute(
                f"SELECT {_COLUMNS} FROM api_key WHERE revoked_at IS NULL AND "
                + ("id" if id_or_name.startswith(ID_PREFIX) else "name")
                + " = %s",
                (id_or_name,),
            )
            row = cur.fetchone()
            if row is None:
                return None
            key = _key(row)
            if key.allows("admin"):
                cur.execute(
                    "SELECT count(*) FROM api_key WHERE revoked_at IS NULL"
                    " AND 'admin' = ANY(scopes) AND id <> %s",
                    (key.id,),
                )
                others = cur.fetchone()
                if others is not None and others[0] == 0:
                    raise KeyRefused(
                        f"{key.name} is the last active key with the admin scope; create "
                        "another admin key first"
                    )
            cur.execute(
                f"UPDATE api_key SET revoked_at = now() WHERE id = %s RETURNING {_COLUMNS}",
                (key.id,),
            )
            revoked = cur.fetchone()
        self.invalidate()
        return _key(revoked) if revoked else None

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        self.flush_usage()
        with self.store.connection() as conn, conn.cursor() as cur:
            cur.execute(
                f"SELECT {_COLUMNS} FROM api_key"
                + ("" if include_revoked else " WHERE revoked_at IS NULL")
                + " ORDER BY created_at, name"
            )
            return [_key(row) for row in cur.fetchall()]

    def check_usable(self, environment: str) -> None:
        """Refuse to serve outside development with no active key, or with the
        development key active."""
        if environment == "development":
            return
        with self.store.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), count(*) FILTER (WHERE digest = %s)"
                " FROM api_key WHERE revoked_at IS NULL",
                (digest(DEVELOPMENT_API_KEY),),
            )
            row = cur.fetchone()
        active, development = row if row else (0, 0)
        if development:
            raise AccessNotConfigured(
                "the development key is active outside development: revoke it "
                f"(peakend keys revoke {DEVELOPMENT_KEY_NAME})"
            )
        if not active:
            raise AccessNotConfigured(
                "no API key: create one first (peakend keys create --name ops --scope admin)"
            )

    # -- authentication ---------------------------------------------------------------

    def authenticate(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None; its use is noted for last-used."""
        presented = digest(secret)
        found = self._current().get(presented)
        if found is None and self.clock() - self._read_at >= MISS_REREAD_SECONDS:
            self.invalidate()  # made by another process since the last read?
            found = self._current().get(presented)
        # The dictionary finds the candidate by the digest (which leaks nothing about
        # the secret); the comparison that decides is constant-time all the same.
        if found is None or not hmac.compare_digest(found[0], presented):
            return None
        key = found[1]
        self._used[key.id] = datetime.now(UTC)
        return key

    def reads_store(self, secret: str) -> bool:
        """Whether ``authenticate(secret)`` would read the store (the cache is stale, or
        an unknown secret is due a re-read): an event loop then calls it in a thread."""
        if self._active is None or self.clock() - self._read_at >= self.cache_seconds:
            return True
        return (
            digest(secret) not in self._active
            and self.clock() - self._read_at >= MISS_REREAD_SECONDS
        )

    def invalidate(self) -> None:
        self._read_at = float("-inf")

    def _current(self) -> dict[bytes, tuple[bytes, ApiKey]]:
        with self._lock:
            if self._active is not None and self.clock() - self._read_at < self.cache_seconds:
                return self._active
            try:
                self.flush_usage()
                with self.store.connection() as conn, conn.cursor() as cur:
                    cur.execute(f"SELECT digest, {_COLUMNS} FROM api_key WHERE revoked_at IS NULL")
                    rows = cur.fetchall()
            except psycopg2.Error:
                if self._active is None:
                    raise
                # The database is away: the keys known a moment ago still hold; the
                # request then meets the outage itself (503), not a wrong 401.
                log.warning("API keys not refreshed: the database is unavailable")
                return self._active
            self._active = {bytes(row[0]): (bytes(row[0]), _key(row[1:])) for row in rows}
            self._read_at = self.clock()
            return self._active

    def flush_usage(self) -> None:
        """Write the last-used times noted since the last flush, in one statement."""
        used, self._used = self._used, {}
        if not used:
            return
        try:
            with self.store.connection() as conn, conn.cursor() as cur:
                cur.execute(
                    "UPDATE api_key k SET last_used_at = GREATEST(k.last_used_at, u.at)"
                    " FROM unnest(%s::text[], %s::timestamptz[]) AS u(id, at) WHERE k.id = u.id",
                    (list(used), list(used.values())),
                )
        except psycopg2.Error:
            for key_id, at in used.items():  # kept for the next flush
                self._used.setdefault(key_id, at)
            raise
