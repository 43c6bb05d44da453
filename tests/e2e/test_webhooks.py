"""Webhooks against real local receivers over HTTP: a delivery signed as the Standard
Webhooks specification says (verified with the ``standardwebhooks`` package), retried
after failures until it succeeds, one signature per secret during a rotation, an
endpoint that answers 410 disabled, and a slow endpoint holding up no other."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook

from infra.bootstrap import Platform
from infra.webhooks import Dispatcher
from tests.builders import survey_answer
from tests.conftest import Served, embedded, free_port


class Receiver:
    """A local endpoint answering each request with the next of ``answers`` (the last
    one from then on), after ``delay`` seconds; it keeps what it received."""

    def __init__(self, answers: list[int], delay: float = 0.0) -> None:
        self.answers, self.delay = answers, delay
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append((dict(self.headers.items()), body))
                time.sleep(receiver.delay)
                status = receiver.answers[min(len(receiver.received), len(receiver.answers)) - 1]
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        with serving(Handler, self.port):
            yield self


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], port: int) -> Iterator[None]:
    """``handler`` answering on ``port`` of the loopback, in a thread, until the end."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def until(condition: Callable[[], bool], step: Callable[[], object], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        step()
        time.sleep(0.05)


def detractor(source_id: str) -> dict[str, Any]:
    return survey_answer(source_id, "nps", 1, datetime.now(UTC) - timedelta(minutes=1))


def test_a_delivery_is_signed_retried_until_it_succeeds_and_logged(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(webhook_retry_seconds=[0.2, 0.2, 0.2])
    served = serve(platform)
    dispatcher = Dispatcher(platform)
    flaky = Receiver([500, 503, 200])
    with flaky.running(), served.client(timeout=20) as client:
        made = client.post(
            "/v1/webhooks", json={"url": flaky.url, "rules": ["detractor_follow_up"]}
        )
        assert made.status_code == 201, made.text
        endpoint, secret = made.json()["id"], made.json()["secret"]
        assert secret.startswith("whsec_")
        assert client.post("/v1/touchpoints", json=[detractor("W1")]).status_code == 202
        assert embedded(platform).wait_until_projected()

        def step() -> None:
            dispatcher.step(datetime.now(UTC))

        until(lambda: len(flaky.received) >= 3, step)
        ids = {headers["webhook-id"] for headers, _ in flaky.received}
        assert len(ids) == 1  # the same message, three attempts
        for headers, body in flaky.received:
            sent = Webhook(secret).verify(body, headers)
            assert sent["type"] == "alert.opened"
            assert sent["data"]["alert"]["rule"] == "detractor_follow_up"

        def logged() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = client.get(f"/v1/webhooks/{endpoint}/deliveries").json()[
                "deliveries"
            ]
            return found

        until(lambda: logged()[0]["status"] == "delivered", step)
        (delivery,) = logged()
        assert [a["status_code"] for a in delivery["log"]] == [500, 503, 200]
        assert delivery["id"] in ids and delivery["attempts"] == 3

        # A rotation: the next delivery is signed by the new secret and the old one.
        rotated = client.post(f"/v1/webhooks/{endpoint}/rotate").json()["secret"]
        assert client.post("/v1/touchpoints", json=[detractor("W2")]).status_code == 202
        assert embedded(platform).wait_until_projected()
        until(lambda: len(flaky.received) >= 4, step)
        headers, body = flaky.received[3]
        assert len(headers["webhook-signature"].split(" ")) == 2
        for key in (rotated, secret):
            assert Webhook(key).verify(body, headers)["type"] == "alert.opened"
        dispatcher.close()


def test_410_disables_an_endpoint_and_a_slow_one_holds_up_no_other(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(webhook_retry_seconds=[0.2], webhook_timeout_seconds=1.0)
    served = serve(platform)
    dispatcher = Dispatcher(platform)
    gone, slow, good = Receiver([410]), Receiver([200], delay=5.0), Receiver([200])
    with gone.running(), slow.running(), good.running(), served.client(timeout=20) as client:
        for receiver in (gone, slow, good):
            assert client.post("/v1/webhooks", json={"url": receiver.url}).status_code == 201
        assert client.post("/v1/touchpoints", json=[detractor("W3")]).status_code == 202
        assert embedded(platform).wait_until_projected()
        started = time.monotonic()
        until(
            lambda: bool(good.received and gone.received),
            lambda: dispatcher.step(datetime.now(UTC)),
        )
        assert time.monotonic() - started < 1.0 + 0.5  # not after the slow one's timeout
        until(
            lambda: any(h["disabled_at"] for h in client.get("/v1/webhooks").json()["webhooks"]),
            lambda: dispatcher.step(datetime.now(UTC)),
        )
        hooks = {h["url"]: h for h in client.get("/v1/webhooks").json()["webhooks"]}
        assert hooks[gone.url]["disabled_reason"] == "410 Gone"
        assert hooks[good.url]["disabled_at"] is None
        # The slow one timed out: logged as an error, to be retried.
        slow_id = hooks[slow.url]["id"]

        def slow_log() -> list[dict[str, Any]]:
            found = client.get(f"/v1/webhooks/{slow_id}/deliveries").json()["deliveries"]
            return found[0]["log"] if found else []

        until(  # logged when sent, its error when the timeout ends it
            lambda: bool(slow_log() and slow_log()[0]["error"]),
            lambda: dispatcher.step(datetime.now(UTC)),
        )
        assert "Timeout" in (slow_log()[0]["error"] or "")
        assert json.loads(good.received[0][1])["data"]["alert"]["customer_id"]
        dispatcher.close()


def test_outside_development_a_webhook_must_reach_a_public_address(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(webhook_private_targets=False)
    served = serve(platform)
    receiver = Receiver([200])
    with receiver.running(), served.client(timeout=20) as client:
        for url in (receiver.url, "http://169.254.169.254/latest/meta-data/"):
            refused = client.post("/v1/webhooks", json={"url": url})
            assert refused.status_code == 422, refused.text
            (error,) = refused.json()["detail"]
            assert error["loc"] == ["body", "url"] and "not a public address" in error["msg"]
        assert client.get("/v1/webhooks").json()["webhooks"] == []
        assert receiver.received == []
