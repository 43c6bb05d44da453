"""The audit log: every admin action (erase, split, key changes, replay, model fits),
with who did it (the API key's name, or ``cli:<user>`` for a command) and when."""

from __future__ import annotations

import getpass
import json
from datetime import datetime
from typing import Any

from projections.store import ReadModelStore


def create_table(store: ReadModelStore) -> None:
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS audit_log (id bigserial PRIMARY KEY,"
            " at timestamptz NOT NULL DEFAULT now(), actor text NOT NULL,"
            " action text NOT NULL, target text, detail jsonb NOT NULL DEFAULT '{}')"
        )


def command_actor() -> str:
    """Who runs a command on this machine."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


def record(
    store: ReadModelStore, actor: str, action: str, target: str | None = None, **detail: Any
) -> None:
    """Note an admin action. ``detail`` holds no personal data: ids, counts, reasons."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO audit_log (actor, action, target, detail) VALUES (%s, %s, %s, %s)",
            (actor, action, target, json.dumps(detail, default=str)),
        )


def entries(
    store: ReadModelStore, *, limit: int, before: int | None, action: str | None
) -> list[dict[str, Any]]:
    """The newest entries first, paged by id (``before``: older than this id)."""
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, at, actor, action, target, detail FROM audit_log"
            " WHERE (%(before)s::bigint IS NULL OR id < %(before)s)"
            " AND (%(action)s::text IS NULL OR action = %(action)s)"
            " ORDER BY id DESC LIMIT %(limit)s",
            {"before": before, "action": action, "limit": limit},
        )
        return [_entry(row) for row in cur.fetchall()]


def _entry(row: tuple[Any, ...]) -> dict[str, Any]:
    id_, at, actor, action, target, detail = row
    moment: datetime = at
    return {
        "id": id_,
        "at": moment.isoformat(),
        "actor": actor,
        "action": action,
        "target": target,
        "detail": detail,
    }
