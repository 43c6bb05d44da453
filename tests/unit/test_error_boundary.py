"""The error boundary: whatever escapes a route, the client gets a clean answer that
names nothing internal, and the correlation id it was logged under."""

from __future__ import annotations

import logging

import httpx
import psycopg2
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from api.errors import CORRELATION_HEADER, ErrorBoundary


def _boom(_: Request) -> PlainTextResponse:
    raise RuntimeError("SELECT secret FROM customers WHERE email = 'ann@example.com'")


def _outage(_: Request) -> PlainTextResponse:
    raise psycopg2.OperationalError('connection to server at "10.0.0.7", port 5432 failed')


def _fine(_: Request) -> PlainTextResponse:
    return PlainTextResponse("fine")


def client() -> httpx.AsyncClient:
    # As create_app installs it: inside Starlette's last-resort handler, around the routes.
    app = Starlette(
        routes=[Route("/boom", _boom), Route("/outage", _outage), Route("/", _fine)],
        middleware=[Middleware(ErrorBoundary, retry_after=7)],
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.mark.anyio
async def test_an_unexpected_error_is_a_500_with_the_correlation_id_it_was_logged_under(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with client() as http:
        answer = await http.get("/boom")
    assert answer.status_code == 500
    body = answer.json()
    assert body["correlation_id"] == answer.headers[CORRELATION_HEADER]
    assert "SELECT" not in answer.text and "ann@example.com" not in answer.text
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [getattr(r, "correlation_id", None) for r in logged] == [body["correlation_id"]]
    assert logged[0].exc_info is not None  # the stack trace is in the log, not the answer


@pytest.mark.anyio
async def test_a_database_outage_is_a_503_with_retry_after_and_no_host() -> None:
    async with client() as http:
        answer = await http.get("/outage")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "7"
    assert "10.0.0.7" not in answer.text and "5432" not in answer.text


@pytest.mark.anyio
async def test_a_well_formed_correlation_id_is_kept_and_a_hostile_one_replaced() -> None:
    async with client() as http:
        kept = await http.get("/", headers={CORRELATION_HEADER: "req-1234abcd"})
        replaced = await http.get("/", headers={CORRELATION_HEADER: "x\r\nSet-Cookie: a=b"})
    assert kept.headers[CORRELATION_HEADER] == "req-1234abcd"
    assert replaced.headers[CORRELATION_HEADER] != "x\r\nSet-Cookie: a=b"
    assert len(replaced.headers[CORRELATION_HEADER]) == 32


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
