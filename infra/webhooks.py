"""Webhooks: alert transitions delivered to subscribers' endpoints, signed as the
Standard Webhooks specification says (https://www.standardwebhooks.com).

- An endpoint subscribes by rule and severity (empty: all). Its secret (``whsec_`` and
  base64) is shown once, when it is made or rotated, and kept sealed under the master
  key. During a rotation the previous secret still signs: ``webhook-signature`` holds
  one signature per secret, space-separated.
- The scheduler's ``webhooks`` job follows the change feed (alert kinds) from its own
  position and writes one delivery per transition and matching endpoint, in the
  transaction that moves the position: none is lost or made twice. A silenced alert, or
  one its customer's consent holds back, is not delivered.
- Deliveries are sent from a pool of threads, one at a time per endpoint (an endpoint
  gets its alerts in order; a slow or failing one holds up only itself), with a timeout
  of ``PEAKEND_WEBHOOK_TIMEOUT_SECONDS`` (15). A 2xx delivers; a 410 disables the
  endpoint; anything else is retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h
  (the specification's schedule; ``PEAKEND_WEBHOOK_RETRY_SECONDS``), or later if the
  answer's ``Retry-After`` says so, then given up. Every attempt is logged (before it is sent)
  (``webhook_attempt``; ``GET /v1/webhooks/{id}/deliveries``).
- A send may be repeated after a crash (at least once): receivers tell a repeat by its
  ``webhook-id``, the same on every attempt.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from projections import maintained
from projections.alerts import delivered
from projections.store import ReadModelStore

if TYPE_CHECKING:
    from infra.bootstrap import Platform

log = logging.getLogger(__name__)

FOLLOWER = "webhooks"
PAGE = 500
DUE_PAGE = 200
SECRETS_KEPT = 2  # the new secret and the one before it, during a rotation
_KEY_STREAM = uuid.UUID("7065616b-656e-6477-6562-686f6f6b7321")  # seals webhook secrets


def create_tables(store: ReadModelStore) -> None:
    with store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS webhook_endpoint (id text PRIMARY KEY, url text NOT NULL,"
            " rules text[] NOT NULL, severities text[] NOT NULL, secrets bytea[] NOT NULL,"
            " created_at timestamptz NOT NULL, created_by text NOT NULL,"
            " disabled_at timestamptz, disabled_reason text);"
            "CREATE TABLE IF NOT EXISTS webhook_delivery (id text PRIMARY KEY,"
            " endpoint_id text NOT NULL, position bigint NOT NULL, alert_id text NOT NULL,"
            " kind text NOT NULL, payload text NOT NULL, status text NOT NULL,"
            " attempts int NOT NULL DEFAULT 0, next_attempt_at timestamptz,"
            " created_at timestamptz NOT NULL, delivered_at timestamptz,"
            " UNIQUE (endpoint_id, position));"
            "CREATE INDEX IF NOT EXISTS webhook_delivery_due_idx ON webhook_delivery"
            " (next_attempt_at) WHERE status = 'pending';"
            "CREATE TABLE IF NOT EXISTS webhook_attempt (delivery_id text NOT NULL,"
            " attempt int NOT NULL, at timestamptz NOT NULL, status_code int, error text,"
            " duration_ms double precision NOT NULL, PRIMARY KEY (delivery_id, attempt))"
        )


# -- pure rules ---------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def signature(secrets: Sequence[str], message_id: str, at: datetime, body: str) -> str:
    """``webhook-signature``: one ``v1,`` signature per secret, space-separated."""
    return " ".join(Webhook(secret).sign(message_id, at, body) for secret in secrets)


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A ``Retry-After`` header (seconds, or an HTTP date) as a wait from ``now``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta(0))


def next_attempt(
    attempts: int, schedule: Sequence[float], now: datetime, asked: timedelta | None
) -> datetime | None:
    """When to try again after ``attempts`` failed attempts (None: give up): the
    schedule's wait, or the receiver's ``Retry-After`` if longer."""
    if attempts > len(schedule):
        return None
    wait = timedelta(seconds=schedule[attempts - 1])
    return now + max(wait, asked or timedelta(0))


def matches(endpoint: Mapping[str, Any], alert: Mapping[str, Any]) -> bool:
    return (not endpoint["rules"] or alert.get("rule") in endpoint["rules"]) and (
        not endpoint["severities"] or alert.get("severity") in endpoint["severities"]
    )


def payload(change: Mapping[str, Any]) -> str:
    """The body: the specification's envelope (type, timestamp, data)."""
    return json.dumps(
        {
            "type": f"alert.{str(change['kind']).removeprefix('alert_')}",
            "timestamp": change["at"].isoformat()
            if isinstance(change["at"], datetime)
            else change["at"],
            "data": {"position": change["position"], "alert": change["after"]},
        },
        default=str,
        separators=(",", ":"),
    )


# -- endpoints ------------------------------------------------------------------------------


def unreachable(url: str, *, private_allowed: bool) -> str | None:
    """Why a webhook may not be sent to ``url`` (None: it may): its scheme is not HTTP,
    or, unless ``private_allowed``, its host resolves to an address that is not public
    (``ipaddress``' ``is_global``: not loopback, private, link-local, shared or
    reserved). Checked when the endpoint is registered and again before every send, as
    a name can be made to resolve elsewhere later."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "url: an http or https URL with a host"
    if private_allowed:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"url: the host {parts.hostname!r} does not resolve"
    for *_, address in found:
        ip = ipaddress.ip_address(str(address[0]).split("%")[0])
        if not ip.is_global:
            return (
                f"url: {parts.hostname!r} resolves to {ip}, which is not a public address"
                " (PEAKEND_WEBHOOK_PRIVATE_TARGETS allows it)"
            )
    return None


@dataclass(frozen=True)
class Created:
    id: str
    secret: str


def create_endpoint(
    platform: Platform, url: str, rules: Sequence[str], severities: Sequence[str], by: str
) -> Created:
    refused = unreachable(url, private_allowed=platform.settings.webhooks_may_reach_private)
    if refused is not None:
        raise ValueError(refused)
    endpoint_id, secret = "whk_" + uuid.uuid4().hex[:16], new_secret()
    with platform.store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO webhook_endpoint (id, url, rules, severities, secrets, created_at,"
            " created_by) VALUES (%s, %s, %s, %s, %s, now(), %s)",
            (endpoint_id, url, list(rules), list(severities), [_seal(platform, secret)], by),
        )
    return Created(endpoint_id, secret)


def rotate_secret(platform: Platform, endpoint_id: str) -> str | None:
    """A new secret, signing from now on with the previous one beside it (None: no such
    endpoint)."""
    secret = new_secret()
    with platform.store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE webhook_endpoint SET secrets = (ARRAY[%s] || secrets)[1:%s]"
            " WHERE id = %s RETURNING id",
            (_seal(platform, secret), SECRETS_KEPT, endpoint_id),
        )
        return secret if cur.fetchone() else None


def endpoints(platform: Platform) -> list[dict[str, Any]]:
    with platform.store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, url, rules, severities, created_at, created_by, disabled_at,"
            " disabled_reason, cardinality(secrets) AS secrets FROM webhook_endpoint"
            " ORDER BY created_at"
        )
        return _rows(cur)


def delete_endpoint(platform: Platform, endpoint_id: str) -> bool:
    with platform.store.connection() as conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM webhook_attempt WHERE delivery_id IN"
            " (SELECT id FROM webhook_delivery WHERE endpoint_id = %s)",
            (endpoint_id,),
        )
        cur.execute("DELETE FROM webhook_delivery WHERE endpoint_id = %s", (endpoint_id,))
        cur.execute("DELETE FROM webhook_endpoint WHERE id = %s RETURNING id", (endpoint_id,))
        return cur.fetchone() is not None


def deliveries(platform: Platform, endpoint_id: str, limit: int) -> list[dict[str, Any]] | None:
    """The endpoint's deliveries, newest first, each with its attempts (None: no such
    endpoint)."""
    with platform.store.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM webhook_endpoint WHERE id = %s", (endpoint_id,))
        if cur.fetchone() is None:
            return None
        cur.execute(
            "SELECT d.id, d.position, d.alert_id, d.kind, d.status, d.attempts,"
            " d.next_attempt_at, d.created_at, d.delivered_at, coalesce((SELECT"
            " json_agg(json_build_object('attempt', a.attempt, 'at', a.at, 'status_code',"
            " a.status_code, 'error', a.error, 'duration_ms', a.duration_ms) ORDER BY"
            " a.attempt) FROM webhook_attempt a WHERE a.delivery_id = d.id), '[]') AS log"
            " FROM webhook_delivery d WHERE d.endpoint_id = %s"
            " ORDER BY d.position DESC LIMIT %s",
            (endpoint_id, limit),
        )
        return _rows(cur)


def _rows(cur: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _seal(platform: Platform, secret: str) -> bytes:
    return platform.records.keyring.wrap(_KEY_STREAM, secret.encode())


def _open(platform: Platform, sealed: bytes) -> str:
    return platform.records.keyring.unwrap(_KEY_STREAM, bytes(sealed)).decode()


# -- delivery -------------------------------------------------------------------------------


class Dispatcher:
    """The ``webhooks`` job: fans the feed's alert transitions out to deliveries, and
    sends those due from a pool of threads, one at a time per endpoint."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        s = platform.settings
        self.schedule = tuple(s.webhook_retry_seconds)
        self.timeout = s.webhook_timeout_seconds
        self.pool = ThreadPoolExecutor(max_workers=s.webhook_senders, thread_name_prefix="webhook")
        self.client = httpx.Client(timeout=self.timeout, follow_redirects=False)
        self._busy: set[str] = set()  # endpoints with a send in flight
        self._lock = threading.Lock()

    def step(self, now: datetime) -> int:
        """Fan out what the feed gained, then start the sends that are due; returns how
        many sends were started (they finish in the pool)."""
        self.fan_out()
        return self.send_due(now)

    def fan_out(self) -> int:
        store = self.platform.store
        with store.connection() as conn, conn.cursor() as cur:
            position = store.lock_position(conn, FOLLOWER)
            found = maintained.change_page(
                store, after=position, limit=PAGE, kinds=sorted(maintained.ALERT_KINDS)
            )
            if not found:
                return 0
            cur.execute(
                "SELECT id, rules, severities FROM webhook_endpoint WHERE disabled_at IS NULL"
            )
            live = [{"id": r[0], "rules": r[1], "severities": r[2]} for r in cur.fetchall()]
            rows = [
                (
                    f"msg_{e['id']}_{change['position']}",
                    e["id"],
                    change["position"],
                    change["subject"],
                    change["kind"],
                    payload(change),
                )
                for change in found
                if delivered(change)
                for e in live
                if matches(e, change["after"] or {})
            ]
            if rows:
                cur.execute(
                    "INSERT INTO webhook_delivery (id, endpoint_id, position, alert_id, kind,"
                    " payload, status, next_attempt_at, created_at) SELECT i, e, p, a, k, b,"
                    " 'pending', now(), now() FROM unnest(%s::text[], %s::text[],"
                    " %s::bigint[], %s::text[], %s::text[], %s::text[])"
                    " AS u (i, e, p, a, k, b) ON CONFLICT DO NOTHING",
                    [list(column) for column in zip(*rows, strict=True)],
                )
            store.set_position(conn, FOLLOWER, found[-1]["position"])
            return len(rows)

    def send_due(self, now: datetime) -> int:
        with self._lock:
            busy = sorted(self._busy)
        with self.platform.store.connection() as conn, conn.cursor() as cur:
            # Each endpoint's oldest pending delivery (in order: a retry waiting holds
            # the ones after it), if it is due and the endpoint has none in flight.
            cur.execute(
                "SELECT id, endpoint_id, payload, attempts, url, secrets FROM (SELECT"
                " DISTINCT ON (d.endpoint_id) d.id, d.endpoint_id, d.payload, d.attempts,"
                " d.next_attempt_at, e.url, e.secrets FROM webhook_delivery d JOIN"
                " webhook_endpoint e ON e.id = d.endpoint_id WHERE d.status = 'pending'"
                " AND e.disabled_at IS NULL AND NOT (d.endpoint_id = ANY(%s))"
                " ORDER BY d.endpoint_id, d.position) AS head WHERE next_attempt_at <= %s"
                " LIMIT %s",
                (busy, now, DUE_PAGE),
            )
            due = cur.fetchall()
        started = 0
        for delivery_id, endpoint_id, body, attempts, url, secrets in due:
            with self._lock:
                if endpoint_id in self._busy:
                    continue
                self._busy.add(endpoint_id)
            opened = [_open(self.platform, s) for s in secrets]
            self.pool.submit(self._send, delivery_id, endpoint_id, url, opened, body, attempts)
            started += 1
        return started

    def _send(
        self,
        delivery_id: str,
        endpoint_id: str,
        url: str,
        secrets: list[str],
        body: str,
        attempts: int,
    ) -> None:
        try:
            self._attempt(delivery_id, endpoint_id, url, secrets, body, attempts + 1)
        except Exception:
            log.exception("webhook delivery %s: not recorded", delivery_id)
        finally:
            with self._lock:
                self._busy.discard(endpoint_id)

    def _attempt(
        self,
        delivery_id: str,
        endpoint_id: str,
        url: str,
        secrets: list[str],
        body: str,
        attempt: int,
    ) -> None:
        sent_at = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature(secrets, delivery_id, sent_at, body),
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        asked: timedelta | None = None
        refused = unreachable(
            url, private_allowed=self.platform.settings.webhooks_may_reach_private
        )
        # Logged before it is sent (no status, no error: no answer yet): an attempt that a
        # crash cuts off stays in the log so, and the next attempt takes the next number.
        with self.platform.store.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO webhook_attempt (delivery_id, attempt, at, duration_ms)"
                " VALUES (%s, %s, %s, 0) ON CONFLICT DO NOTHING",
                (delivery_id, attempt, sent_at),
            )
            cur.execute(
                "UPDATE webhook_delivery SET attempts = %s WHERE id = %s", (attempt, delivery_id)
            )
        try:
            if refused is not None:
                error = f"not sent: {refused}"
            else:
                answer = self.client.post(url, content=body.encode(), headers=headers)
                status = answer.status_code
                asked = retry_after(answer.headers.get("retry-after"), datetime.now(UTC))
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"[:500]
        duration = (time.perf_counter() - started) * 1000
        now = datetime.now(UTC)
        with self.platform.store.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE webhook_attempt SET status_code = %s, error = %s, duration_ms = %s"
                " WHERE delivery_id = %s AND attempt = %s",
                (status, error, duration, delivery_id, attempt),
            )
            if status is not None and 200 <= status < 300:
                cur.execute(
                    "UPDATE webhook_delivery SET status = 'delivered', attempts = %s,"
                    " delivered_at = %s, next_attempt_at = NULL WHERE id = %s",
                    (attempt, now, delivery_id),
                )
                return
            if status == 410:  # gone: the receiver asks for no more
                cur.execute(
                    "UPDATE webhook_endpoint SET disabled_at = %s,"
                    " disabled_reason = '410 Gone' WHERE id = %s",
                    (now, endpoint_id),
                )
                cur.execute(
                    "UPDATE webhook_delivery SET status = 'failed', attempts = %s,"
                    " next_attempt_at = NULL WHERE id = %s",
                    (attempt, delivery_id),
                )
                return
            retry = next_attempt(attempt, self.schedule, now, asked)
            cur.execute(
                "UPDATE webhook_delivery SET status = %s, attempts = %s, next_attempt_at = %s"
                " WHERE id = %s",
                ("pending" if retry else "failed", attempt, retry, delivery_id),
            )

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
