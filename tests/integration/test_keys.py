"""The API key store on PostgreSQL, and the ``peakend keys`` command."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable

import psycopg2
import pytest

from infra import cli
from infra.bootstrap import Platform, bootstrap
from infra.keys import PREFIX, KeyRefused
from infra.settings import Settings


def test_a_key_is_stored_only_as_a_digest(platform: Platform) -> None:
    key, secret = platform.keys.create("loader", ["ingest", "read"])
    assert secret.startswith(PREFIX) and len(secret) == len(PREFIX) + 43
    with contextlib.closing(psycopg2.connect(platform.database_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT t::text FROM api_key t")
        rows = " ".join(r[0] for r in cur.fetchall())
    assert secret not in rows and secret[len(PREFIX) :] not in rows
    assert key.hint in rows  # what a listing shows: the prefix and four characters
    assert platform.keys.authenticate(secret) == key


def test_an_unknown_or_altered_key_is_not_authenticated(platform: Platform) -> None:
    _, secret = platform.keys.create("loader", ["ingest"])
    assert platform.keys.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert platform.keys.authenticate("") is None
    assert platform.keys.authenticate("pk_live_\udcff") is None


def test_a_revoked_key_stops_working_within_the_cache_time(
    make_platform: Callable[..., Platform],
) -> None:
    platform = make_platform(key_cache_seconds=300)
    _, secret = platform.keys.create("loader", ["ingest"])
    assert platform.keys.authenticate(secret) is not None
    settings = Settings(database_url=platform.database_url, key_cache_seconds=0)
    with bootstrap(settings, mode="none") as other:
        assert other.keys.revoke("loader") is not None
        # The revoking process forgets at once; another process at its next refresh.
        assert other.keys.authenticate(secret) is None
        assert platform.keys.authenticate(secret) is not None
    platform.keys.invalidate()  # what the cache time does, without waiting for it
    assert platform.keys.authenticate(secret) is None


def test_last_used_is_written_at_the_next_refresh(platform: Platform) -> None:
    key, secret = platform.keys.create("reader", ["read"])
    assert key.last_used_at is None
    platform.keys.authenticate(secret)
    used = {k.name: k for k in platform.keys.list()}["reader"]
    assert used.last_used_at is not None


def test_names_are_unique_and_scopes_are_checked(platform: Platform) -> None:
    platform.keys.create("ops", ["admin"])
    with pytest.raises(KeyRefused, match="name"):
        platform.keys.create("ops", ["read"])
    with pytest.raises(ValueError, match="scope: unknown root"):
        platform.keys.create("root", ["root"])
    with pytest.raises(ValueError, match="at least one"):
        platform.keys.create("none", [])


def test_the_last_admin_key_is_kept(platform: Platform) -> None:
    platform.keys.create("ops", ["admin"])
    platform.keys.create("reader", ["read"])
    with pytest.raises(KeyRefused, match="last active key with the admin scope"):
        platform.keys.revoke("ops")
    platform.keys.create("ops-2", ["admin", "read"])
    assert platform.keys.revoke("ops") is not None
    assert platform.keys.revoke("reader") is not None
    assert [k.name for k in platform.keys.list()] == ["ops-2"]


def test_the_keys_command_creates_lists_and_revokes(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PEAKEND_DATABASE_URL", platform.database_url)
    assert (
        cli.main(["keys", "create", "--name", "etl", "--scope", "ingest", "--scope", "read"]) == 0
    )
    created = capsys.readouterr().out
    secret = re.search(r"pk_live_\S+", created)
    assert secret is not None and "ingest, read" in created
    assert platform.keys.authenticate(secret.group()) is not None

    assert cli.main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert "etl" in listing and secret.group() not in listing

    assert cli.main(["keys", "create", "--name", "etl", "--scope", "read"]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli.main(["keys", "revoke", "etl"]) == 0
    assert cli.main(["keys", "revoke", "etl"]) == 1
    platform.keys.invalidate()
    assert platform.keys.authenticate(secret.group()) is None
    with contextlib.closing(psycopg2.connect(platform.database_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT actor, action FROM audit_log ORDER BY id")
        logged = cur.fetchall()
    assert [a for _, a in logged] == ["key_created", "key_revoked"]
    assert all(actor.startswith("cli") for actor, _ in logged)


def test_outside_development_a_command_without_secrets_says_which_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PEAKEND_ENVIRONMENT", "production")
    monkeypatch.delenv("PEAKEND_MASTER_KEY", raising=False)
    assert cli.main(["keys", "list"]) == 2
    assert "master_key: required outside development" in capsys.readouterr().err
