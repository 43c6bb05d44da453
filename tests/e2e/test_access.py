"""Access control over real HTTP: the auth matrix (every route x every scope, generated
from the app's routes), keys over the API, rate limits and the audit log."""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from api.app import create_app
from infra.bootstrap import Platform, bootstrap
from infra.keys import SCOPES, AccessNotConfigured
from infra.settings import DEVELOPMENT_API_KEY, Settings
from tests.builders import envelope, new_id
from tests.conftest import Served, key_for


def declared_scopes(dependant: Dependant) -> list[str | None]:
    """Every scope a route's dependencies declare (None: public)."""
    found: list[str | None] = []
    stack = [dependant]
    while stack:
        dependant = stack.pop()
        if dependant.call is not None and hasattr(dependant.call, "scope"):
            found.append(dependant.call.scope)
        stack.extend(dependant.dependencies)
    return found


def api_routes(platform: Platform) -> list[tuple[str, str, str | None]]:
    """(method, concrete path, scope) of every route of the app."""
    routes: list[tuple[str, str, str | None]] = []
    # Through FastAPI's own walk of included routers, as requests are routed.
    for context in iter_route_contexts(create_app(platform).routes):
        if not isinstance(context.original_route, APIRoute) or context.path is None:
            continue
        scopes = declared_scopes(context.dependant)
        assert len(set(scopes)) == 1, f"{context.path} declares {scopes or 'no scope'}"
        path = re.sub(r"\{[^}]+\}", "x", context.path)
        routes.extend((method, path, scopes[0]) for method in sorted(context.methods or ()))
    return routes


def test_every_route_declares_exactly_one_scope_or_public(platform: Platform) -> None:
    routes = api_routes(platform)
    assert len(routes) > 25
    public = {path for _, path, scope in routes if scope is None}
    # What anyone may call: the health check (load balancers), the docs and their page.
    assert public <= {"/", "/v1/healthz", "/docs", "/redoc", "/docs/oauth2-redirect"}, public


def test_the_auth_matrix(platform: Platform, serve: Callable[[Platform], Served]) -> None:
    """No key: 401 with a challenge; a bad key: 401 invalid_token; every scope but the
    route's: 403 naming it; only the route's scope: past authorisation."""
    served = serve(platform)
    only: dict[str, str] = {scope: key_for(platform, scope) for scope in SCOPES}
    all_but: dict[str, str] = {
        scope: key_for(platform, *(s for s in SCOPES if s != scope)) for scope in SCOPES
    }
    with httpx.Client(base_url=served.url, timeout=30) as client:
        for method, path, scope in api_routes(platform):

            def call(key: str | None, method: str = method, path: str = path) -> httpx.Response:
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                with client.stream(method, path, headers=headers) as response:
                    # An event stream never ends: its status and headers say enough.
                    if not response.headers.get("content-type", "").startswith("text/event-stream"):
                        response.read()
                    return response

            where = f"{method} {path}"
            if scope is None:
                assert call(None).status_code not in (401, 403), where
                continue
            anonymous = call(None)
            assert anonymous.status_code == 401, where
            assert anonymous.headers["www-authenticate"].startswith("Bearer"), where
            forged = call("pk_live_" + "A" * 43)
            assert forged.status_code == 401, where
            assert 'error="invalid_token"' in forged.headers["www-authenticate"], where
            lacking = call(all_but[scope])
            assert lacking.status_code == 403, where
            assert lacking.json()["missing_scope"] == scope, where
            assert scope in lacking.json()["detail"], where
            allowed = call(only[scope])
            assert allowed.status_code not in (401, 403), (where, allowed.text)


@pytest.mark.parametrize(
    "authorization",
    [
        b"Basic dXNlcjpwYXNz",
        b"Bearer",
        b"Bearer pk_live_a b",
        b"pk_live_x",
        "Bearer pk_live_\u00e9\u00e9".encode(),
        b"Bearer pk_live_\xff\xfe",
    ],
)
def test_a_malformed_authorization_header_is_401(
    platform: Platform, serve: Callable[[Platform], Served], authorization: bytes
) -> None:
    served = serve(platform)
    answer = httpx.get(
        f"{served.url}/v1/analytics/pyramid", headers=[(b"Authorization", authorization)]
    )
    assert answer.status_code == 401
    assert "www-authenticate" in answer.headers


def test_keys_over_the_api_create_list_and_revoke(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(key_cache_seconds=0)
    served = serve(platform)
    with served.client() as admin:
        made = admin.post("/v1/keys", json={"name": "loader", "scopes": ["ingest"]})
        assert made.status_code == 201, made.text
        secret = made.json()["key"]
        assert secret.startswith("pk_live_") and len(secret) == 51
        listed = admin.get("/v1/keys").json()
        assert "loader" in {k["name"] for k in listed}
        assert all("key" not in k and secret not in str(k) for k in listed)
        assert (
            admin.post("/v1/keys", json={"name": "loader", "scopes": ["read"]}).status_code == 409
        )
        refused = admin.post("/v1/keys", json={"name": "x", "scopes": ["root"]})
        assert refused.status_code == 422
        assert "scopes" in str(refused.json()["detail"][0]["loc"])

        loader = {"Authorization": f"Bearer {secret}"}
        posted = admin.post("/v1/touchpoints", json=envelope(new_id("C")), headers=loader)
        assert posted.status_code == 202
        used = {k["name"]: k for k in admin.get("/v1/keys").json()}["loader"]
        assert used["last_used_at"] is not None

        assert admin.delete("/v1/keys/loader").status_code == 200
        again = admin.post("/v1/touchpoints", json=envelope(new_id("C")), headers=loader)
        assert again.status_code == 401
        assert admin.delete("/v1/keys/loader").status_code == 404
        revoked = admin.get("/v1/keys", params={"include_revoked": True}).json()
        assert {k["name"]: k for k in revoked}["loader"]["revoked_at"] is not None

        actions = [(e["actor"], e["action"]) for e in admin.get("/v1/audit").json()["items"]]
        key_name = next(k["name"] for k in listed if k["name"].startswith("tests-"))
        assert actions[:2] == [(key_name, "key_revoked"), (key_name, "key_created")]


def test_the_last_admin_key_cannot_be_revoked_over_the_api(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform()
    served = serve(platform)
    with served.client() as admin:
        own = next(k for k in admin.get("/v1/keys").json() if "admin" in k["scopes"])
        answer = admin.delete(f"/v1/keys/{own['id']}")
        assert answer.status_code == 409
        assert "last active key with the admin scope" in answer.json()["detail"]


def test_reads_over_the_limit_are_429_with_retry_after(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(read_rate_limit="3/minute")
    served = serve(platform)
    other = key_for(platform, "read")
    with served.client() as client:
        answers = [client.get("/v1/analytics/pyramid").status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        limited = client.get("/v1/analytics/pyramid")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "3 per 1 minute" in limited.json()["detail"]
        # Per key: another key still reads.
        fresh = client.get("/v1/analytics/pyramid", headers={"Authorization": f"Bearer {other}"})
        assert fresh.status_code == 200


def test_ingest_is_limited_in_touchpoints_not_requests(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(ingest_rate_limit="5/minute")
    served = serve(platform)
    with served.client() as client:
        customer = new_id("C")
        first = client.post("/v1/touchpoints", json=[envelope(customer) for _ in range(3)])
        assert first.status_code == 202
        second = client.post("/v1/touchpoints", json=[envelope(customer) for _ in range(3)])
        assert second.status_code == 429
        assert int(second.headers["retry-after"]) >= 1
        assert "touchpoints" in second.json()["detail"]
        too_big = client.post("/v1/touchpoints", json=[envelope(customer) for _ in range(6)])
        assert too_big.status_code == 429
        assert "at once" in too_big.json()["detail"]
        assert client.post("/v1/touchpoints", json=[envelope(customer)] * 2).status_code == 202


def test_a_refused_request_is_never_recorded(
    platform: Platform, serve: Callable[[Platform], Served]
) -> None:
    served = serve(platform)
    reader = key_for(platform, "read")
    before = platform.records.recorder.max_notification_id() or 0
    for headers in ({}, {"Authorization": f"Bearer {reader}"}):
        answer = httpx.post(
            f"{served.url}/v1/touchpoints", json=envelope(new_id("C")), headers=headers
        )
        assert answer.status_code in (401, 403)
    time.sleep(0.2)
    assert (platform.records.recorder.max_notification_id() or 0) == before


def _secrets() -> dict[str, Any]:
    return {
        "environment": "production",
        "master_key": base64.b64encode(os.urandom(32)).decode(),
        "identity_secret": base64.b64encode(os.urandom(32)).decode(),
    }


def test_outside_development_the_api_refuses_to_start_without_a_key(
    make_platform: Callable[..., Platform],
) -> None:
    platform = make_platform(**_secrets())
    with pytest.raises(AccessNotConfigured, match="no API key"):
        create_app(platform)
    platform.keys.create("ops", ["admin"])
    create_app(platform)


def test_outside_development_the_development_key_is_refused(
    make_platform: Callable[..., Platform],
) -> None:
    platform = make_platform(**_secrets())
    platform.keys.create("ops", ["admin"])
    platform.keys.ensure_development_key()
    with pytest.raises(AccessNotConfigured, match="development key"):
        create_app(platform)
    platform.keys.revoke("development")
    create_app(platform)


def test_in_development_the_development_key_works(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(environment="development")
    served = serve(platform)
    platform.keys.ensure_development_key()
    answer = httpx.get(
        f"{served.url}/v1/analytics/pyramid",
        headers={"Authorization": f"Bearer {DEVELOPMENT_API_KEY}"},
    )
    assert answer.status_code == 200


def test_two_authorization_headers_are_refused(
    platform: Platform, serve: Callable[[Platform], Served]
) -> None:
    served = serve(platform)
    good = f"Bearer {served.key}".encode()
    for pair in ([good, b"Bearer pk_live_bad"], [b"Bearer pk_live_bad", good]):
        answer = httpx.get(
            f"{served.url}/v1/analytics/pyramid", headers=[(b"Authorization", h) for h in pair]
        )
        assert answer.status_code == 400, answer.text
        assert 'error="invalid_request"' in answer.headers["www-authenticate"]


def test_a_header_that_is_not_a_bearer_key_says_so(
    platform: Platform, serve: Callable[[Platform], Served]
) -> None:
    served = serve(platform)
    answer = httpx.get(
        f"{served.url}/v1/analytics/pyramid", headers={"Authorization": f"Token {served.key}"}
    )
    assert answer.status_code == 401
    assert "Bearer <key>" in answer.json()["detail"]
    assert 'error="invalid_request"' in answer.headers["www-authenticate"]


def test_a_key_made_by_another_process_works_at_once(
    make_platform: Callable[..., Platform], serve: Callable[[Platform], Served]
) -> None:
    platform = make_platform(key_cache_seconds=300)
    served = serve(platform)
    with served.client() as client:
        assert client.get("/v1/keys").status_code == 200  # the copy of the keys is read
        settings = Settings(database_url=platform.database_url)
        with bootstrap(settings, mode="none") as other:
            _, made = other.keys.create("elsewhere", ["read"])
        time.sleep(1.05)  # an unknown key re-reads the keys at most once a second
        fresh = {"Authorization": f"Bearer {made}"}
        assert client.get("/v1/analytics/pyramid", headers=fresh).status_code == 200


def test_a_key_name_cannot_pass_for_an_id_nor_choose_the_secret(
    platform: Platform, serve: Callable[[Platform], Served]
) -> None:
    with serve(platform).client() as admin:
        other = admin.post("/v1/keys", json={"name": "reader", "scopes": ["read"]}).json()
        mimic = admin.post("/v1/keys", json={"name": other["id"], "scopes": ["ingest"]})
        assert mimic.status_code == 422 and "key_" in mimic.text
        chosen = admin.post(
            "/v1/keys", json={"name": "chooser", "scopes": ["read"], "key": "pk_live_mine"}
        )
        assert chosen.status_code == 422 and "key" in str(chosen.json()["detail"][0]["loc"])
        assert admin.delete(f"/v1/keys/{other['id']}").json()["name"] == "reader"


def test_a_huge_refused_value_is_not_echoed_whole(
    platform: Platform, serve: Callable[[Platform], Served]
) -> None:
    with serve(platform).client() as admin:
        refused = admin.post("/v1/keys", json={"name": "x" * 1_000_000, "scopes": ["read"]})
    assert refused.status_code == 422
    assert len(refused.content) < 5_000
    assert "1000000 characters" in refused.text
