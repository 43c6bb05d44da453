"""Webhook delivery survives a kill -9 of the process sending it: ``peakend api``
(embedded: recorder, projector and the scheduler with its ``webhooks`` job) is killed
while a delivery is in flight, then started again on the same database. Every alert
opened from an acknowledged (202) touchpoint is still delivered, every request verifies
with the ``standardwebhooks`` package, a message sent again after the crash carries the
same ``webhook-id`` and body, and the delivery log lists each one, delivered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from infra.bootstrap import bootstrap
from infra.settings import Settings
from tests.builders import new_id, survey_answer
from tests.conftest import free_port
from tests.e2e.test_webhooks import serving

ROOT = Path(__file__).resolve().parents[2]
DETRACTORS = 4
DELAY_S = 1.5  # the receiver answers this late, so a delivery is in flight at the kill
CONVERGE_S = 90.0
RULE = "detractor_follow_up"


@dataclass
class Request:
    """One request the receiver got: what it carried, when it arrived and when its 200
    was written (None: the sender was gone by then)."""

    headers: dict[str, str]
    body: bytes
    arrived: float
    answered: float | None = None

    @property
    def message(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.body)
        return found

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """A local endpoint that keeps every request and answers 200 after ``delay``."""

    delay: float
    port: int = field(default_factory=free_port)
    received: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def requests(self) -> list[Request]:
        with self.lock:
            return list(self.received)

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = Request(
                    {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                )
                with receiver.lock:
                    receiver.received.append(request)
                time.sleep(receiver.delay)
                try:
                    self.send_response(200)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    self.wfile.flush()
                except OSError:  # the sender was killed meanwhile
                    return
                request.answered = time.monotonic()

            def log_message(self, *_: Any) -> None:
                pass

        with serving(Handler, self.port):
            yield self


class Api:
    """``peakend api`` in its own process, logging to a file; ``kill`` is kill -9."""

    def __init__(self, database_url: str, port: int, logs: Path) -> None:
        self.port, self.logs = port, logs
        self.env = {
            **os.environ,
            "PEAKEND_DATABASE_URL": database_url,
            "PEAKEND_SCHEDULER_POLL_SECONDS": "0.25",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.runs += 1
        log = (self.logs / f"api-{self.runs}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "api", "--port", str(self.port)],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"peakend api exited\n{self.tail()}"
            try:
                if httpx.get(f"{self.url}/v1/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"peakend api did not come up\n{self.tail()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        assert self.process.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        found = []
        for run in range(1, self.runs + 1):
            text = (self.logs / f"api-{run}.log").read_text(errors="replace")
            found.append(f"--- api run {run} ---\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(found)


def until(condition: Callable[[], bool], seconds: float, why: Callable[[], str]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not in {seconds:.0f} s: {why()}"
        time.sleep(0.05)


def test_deliveries_survive_a_kill_9_of_the_sender_with_the_same_webhook_id(
    fresh_database: Callable[[], str], tmp_path: Path
) -> None:
    url = fresh_database()
    with bootstrap(Settings(database_url=url), mode="none", start=False) as setup:
        _, key = setup.keys.create("webhook-faults", ["ingest", "read", "operate"])
    api = Api(url, free_port(), tmp_path)
    receiver = Receiver(DELAY_S)
    with receiver.running():
        try:
            api.start()
            client = httpx.Client(
                base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=20
            )
            with client:
                _exercise(api, receiver, client)
        finally:
            api.stop()


def _exercise(api: Api, receiver: Receiver, client: httpx.Client) -> None:
    made = client.post("/v1/webhooks", json={"url": receiver.url, "rules": [RULE]})
    assert made.status_code == 201, made.text
    endpoint, secret = made.json()["id"], made.json()["secret"]

    # Detractors, one customer each: every alert_opened is owed to the endpoint once
    # its touchpoint is acknowledged.
    customers = [new_id("C") for _ in range(DETRACTORS)]
    at = datetime.now(UTC) - timedelta(minutes=1)
    for customer in customers:
        answer = survey_answer(customer, "nps", 2, at, survey_id="S-faults", question_id="Q-nps")
        accepted = client.post("/v1/touchpoints", json=[answer])
        assert accepted.status_code == 202, accepted.text

    # The second request arrives only once the first is answered and recorded (one
    # send at a time per endpoint): kill -9 the moment it arrives, while it is in flight.
    until(
        lambda: len(receiver.requests()) >= 2,
        30,
        lambda: f"{len(receiver.requests())} requests received\n{api.tail()}",
    )
    api.kill()
    killed_at = time.monotonic()
    before = receiver.requests()
    in_flight = [r for r in before if r.answered is None]
    assert in_flight, "a delivery in flight at the kill"
    assert len({r.webhook_id for r in before}) < DETRACTORS, "some not yet sent at the kill"

    api.start()

    def answered_alive(request: Request) -> bool:
        """Its 200 reached a live sender: written before the kill, or to the new one."""
        return request.answered is not None and (
            request.answered < killed_at or request.arrived > killed_at
        )

    def alerts() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = client.get("/v1/alerts", params={"rule": RULE}).json()[
            "alerts"
        ]
        return found

    def log() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = client.get(
            f"/v1/webhooks/{endpoint}/deliveries", params={"limit": 500}
        ).json()["deliveries"]
        return found

    def opened_and_answered() -> set[str]:
        return {
            r.message["data"]["alert"]["id"]
            for r in receiver.requests()
            if r.message["type"] == "alert.opened" and answered_alive(r)
        }

    def done() -> bool:
        ids = {a["id"] for a in alerts()}
        return (
            len(ids) == DETRACTORS
            and ids <= opened_and_answered()
            and all(d["status"] == "delivered" for d in log())
        )

    until(
        done,
        CONVERGE_S,
        lambda: (
            f"alerts {[a['id'] for a in alerts()]}, answered {sorted(opened_and_answered())},"
            f" log {[(d['id'], d['status'], d['attempts']) for d in log()]}\n{api.tail()}"
        ),
    )

    received = receiver.requests()
    opened = alerts()
    assert len({a["customer_id"] for a in opened}) == DETRACTORS

    # Every request is signed with the endpoint's secret.
    for request in received:
        sent = Webhook(secret).verify(request.body, request.headers)
        assert sent["data"]["alert"]["rule"] == RULE

    # A message is one webhook-id and one body, however often it was sent; two
    # messages never share either.
    bodies: dict[str, set[bytes]] = defaultdict(set)
    ids_of: dict[bytes, set[str]] = defaultdict(set)
    for request in received:
        bodies[request.webhook_id].add(request.body)
        ids_of[request.body].add(request.webhook_id)
    assert all(len(b) == 1 for b in bodies.values()), "a webhook-id with two bodies"
    assert all(len(i) == 1 for i in ids_of.values()), "a message sent under two webhook-ids"

    # The one in flight at the kill was sent again by the new process: same id, same body.
    for cut in in_flight:
        again = [r for r in received if r.arrived > killed_at and r.webhook_id == cut.webhook_id]
        assert again, f"{cut.webhook_id} in flight at the kill, never sent again"
        assert all(r.body == cut.body for r in again)
        assert any(answered_alive(r) for r in again)

    # Each alert's alert_opened, delivered: once or more, always under one id.
    per_alert: dict[str, set[str]] = defaultdict(set)
    for request in received:
        if request.message["type"] == "alert.opened":
            per_alert[request.message["data"]["alert"]["id"]].add(request.webhook_id)
    assert {a["id"] for a in opened} <= set(per_alert)
    assert all(len(ids) == 1 for ids in per_alert.values()), per_alert

    # The delivery log: each message received is a delivery, delivered, by a 200; an
    # attempt cut off by the kill stays in it, with no answer recorded.
    deliveries = {d["id"]: d for d in log()}
    for cut in in_flight:
        attempts = deliveries[cut.webhook_id]["log"]
        assert len(attempts) >= 2, attempts
        assert attempts[0]["status_code"] is None and attempts[0]["error"] is None
    assert set(deliveries) == set(bodies)
    for delivery_id, delivery in deliveries.items():
        assert delivery["status"] == "delivered", delivery
        assert delivery["delivered_at"] is not None
        assert delivery["log"] and delivery["log"][-1]["status_code"] == 200, delivery
        assert delivery["attempts"] == len(delivery["log"]), delivery
        (body,) = bodies[delivery_id]
        message = json.loads(body)
        assert delivery["alert_id"] == message["data"]["alert"]["id"]
        assert delivery["position"] == message["data"]["position"]
        assert delivery["kind"] == "alert_" + message["type"].removeprefix("alert.")
    opened_deliveries = {d["alert_id"] for d in deliveries.values() if d["kind"] == "alert_opened"}
    assert opened_deliveries == {a["id"] for a in opened}
