"""What a browser meets, over real HTTP: documentation pages that load only what this
server serves, CORS only for the configured origins, and no unsafe request that a page
on another site could send without a preflight (api/browsers.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from infra.bootstrap import Platform
from infra.settings import Settings
from streams.projector import head
from tests.builders import envelope, new_id
from tests.conftest import Served, embedded

Serve = Callable[[Platform], Served]
EVIL = "https://evil.example"
APP = "https://app.example"
CROSS_SITE = {"origin": EVIL, "sec-fetch-site": "cross-site"}
RULE = {"field": "orders", "op": "gt", "value": 1}


def refusal(response: httpx.Response, status: int, field: str) -> str:
    """Assert the response is the browsers' refusal naming ``field``; return its detail."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body == {
        "detail": body["detail"],
        "errors": [{"index": None, "event_id": None, "field": field, "message": body["detail"]}],
    }, body
    detail: str = body["detail"]
    return detail


def access_control(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def segment_names(platform: Platform, client: httpx.Client) -> set[str]:
    """The segments defined, once every definition recorded is projected."""
    assert embedded(platform).wait_until_projected()
    listed = client.get("/v1/segments")
    assert listed.status_code == 200, listed.text
    return {s["name"] for s in listed.json()}


# -- the documentation pages --------------------------------------------------------------

ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


def assert_confined(page: httpx.Response) -> None:
    """The page's Content-Security-Policy names no other site, so the browser loads
    nothing from one (not even what the vendored code would), and lets the page's own
    inline scripts run (by hash)."""
    policy = dict(
        (d.split()[0], d.split()[1:]) for d in page.headers["content-security-policy"].split("; ")
    )
    assert policy["default-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    for sources in policy.values():
        for source in sources:
            assert source.startswith("'") or source in ("data:", "blob:"), source
    for script in re.findall(r"<script>(.*?)</script>", page.text, flags=re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy["script-src"]


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_a_docs_page_refers_only_to_assets_served_here(
    platform: Platform, serve: Serve, page: str
) -> None:
    # No key: a browser opening the docs sends none.
    with httpx.Client(base_url=serve(platform).url) as browser:
        answer = browser.get(page)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/html")
        html = answer.text
        assert not re.findall(r"(?:https?:)?//[\w.-]+\.\w", html), "an off-site URL"
        assert_confined(answer)
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert all(a.startswith("/") and not a.startswith("//") for a in assets), assets
        for asset in assets:
            fetched = browser.get(asset)
            assert fetched.status_code == 200, asset
            suffix = asset[asset.rfind(".") :]
            assert ASSET_TYPES[suffix] in fetched.headers["content-type"], asset
            assert len(fetched.content) > 500, asset
        if page != "/docs/oauth2-redirect":
            assert {a.rsplit(".", 1)[1] for a in assets} >= (
                {"js", "css", "png"} if page == "/docs" else {"js", "png"}
            )
            (document,) = re.findall(r"""(?:url: |spec-url=)['"]([^'"]+)['"]""", html)
            assert browser.get(document).json()["info"]["title"] == "Peakend"


def test_swagger_ui_does_not_ask_the_online_validator(platform: Platform, serve: Serve) -> None:
    with httpx.Client(base_url=serve(platform).url) as browser:
        assert '"validatorUrl": null' in browser.get("/docs").text


def test_the_vendored_assets_ship_with_their_licences(platform: Platform, serve: Serve) -> None:
    with httpx.Client(base_url=serve(platform).url) as browser:
        for licence in ("/static/swagger-ui/LICENSE", "/static/redoc/LICENSE"):
            assert browser.get(licence).status_code == 200, licence
        assert browser.get("/static/nothing.js").status_code == 404
        assert browser.get("/static/../app.py").status_code == 404


# -- requests a page on another site could send without a preflight -----------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "Multipart/Form-Data; boundary=x",
    ],
)
def test_a_no_preflight_content_type_is_refused_with_415_and_nothing_recorded(
    platform: Platform, serve: Serve, content_type: str
) -> None:
    customer = new_id("C")
    with serve(platform).client() as client:
        before = head(platform.records)
        response = client.post(
            "/v1/touchpoints",
            content=json.dumps(envelope(customer)),
            headers={"content-type": content_type},
        )
        detail = refusal(response, 415, "content-type")
        assert content_type.partition(";")[0].lower() in detail
        assert "application/json" in detail
        assert head(platform.records) == before
        assert platform.records.identity.locate(customer) is None


def test_a_body_without_a_content_type_is_refused_with_415(
    platform: Platform, serve: Serve
) -> None:
    # fetch() with a Blob or bytes body sends no Content-Type and needs no preflight;
    # FastAPI would parse such a body as JSON.
    with serve(platform).client() as client:
        body = json.dumps({"name": new_id("s").lower(), "rule": RULE}).encode()
        response = client.post("/v1/segments", content=body)
        assert "content-type" not in response.request.headers
        detail = refusal(response, 415, "content-type")
        assert "(got none)" in detail
        assert segment_names(platform, client) == set()


def test_a_post_without_a_body_or_a_content_type_is_served(
    platform: Platform, serve: Serve
) -> None:
    with serve(platform).client() as client:
        # The lifetime-value fit's body is optional; with no purchases it is refused as
        # a fit (422), not as a request without a content type (415).
        fitted = client.post("/v1/analytics/clv/fit")
        assert fitted.status_code == 422, fitted.text
        assert fitted.json()["detail"][0]["type"] == "fit_refused"


def test_each_unsafe_route_refuses_a_cross_site_text_plain_request_recording_nothing(
    platform: Platform, serve: Serve
) -> None:
    served = serve(platform)
    with served.client() as client:
        kept = new_id("kept").lower()
        assert client.post("/v1/segments", json={"name": kept, "rule": RULE}).status_code == 201
        before = head(platform.records)
        attempts: list[tuple[str, str, Any]] = [
            ("POST", "/v1/touchpoints", envelope(new_id("C"))),
            ("POST", "/v1/segments", {"name": "forged", "rule": RULE}),
            ("DELETE", f"/v1/segments/{kept}", None),
            ("POST", "/v1/analytics/clv/fit", None),
            ("POST", f"/v1/customers/{new_id('C')}/split", {"absorbed": new_id("C")}),
            ("POST", "/v1/analytics/clv/fit", {}),
        ]
        for method, path, body in attempts:
            for headers in (
                {**CROSS_SITE, "content-type": "text/plain"},  # a modern browser
                {"origin": EVIL, "content-type": "text/plain"},  # one without Sec-Fetch-*
                {"origin": EVIL},  # no body at all
                {"sec-fetch-site": "cross-site"},  # Origin left out
            ):
                content = None if body is None else json.dumps(body)
                answer = client.request(method, path, content=content, headers=headers)
                assert answer.status_code == 403, (method, path, headers, answer.text)
                detail = refusal(answer, 403, "origin")
                assert (EVIL if "origin" in headers else "(not sent)") in detail
                assert "PEAKEND_CORS_ORIGINS" in detail
                # And the same body without an Origin: the content type alone refuses it.
                if body is not None:
                    plain = client.request(
                        method, path, content=content, headers={"content-type": "text/plain"}
                    )
                    refusal(plain, 415, "content-type")
        assert head(platform.records) == before
        assert segment_names(platform, client) == {kept}
        assert client.get("/v1/healthz").json()["last_clv_fit"] is None


def test_every_unsafe_route_of_the_app_is_covered(platform: Platform, serve: Serve) -> None:
    """Walks the published routes, so a route added later is covered without a line here."""
    with serve(platform).client() as client:
        paths = client.get("/openapi.json").json()["paths"]
        unsafe = [
            (method.upper(), re.sub(r"\{[^}]+\}", "probe", path))
            for path, operations in paths.items()
            for method in operations
            if method.upper() in {"POST", "PUT", "PATCH", "DELETE"}
        ]
        assert {
            ("POST", "/v1/touchpoints"),
            ("POST", "/v1/segments"),
            ("DELETE", "/v1/segments/probe"),
            ("POST", "/v1/customers/probe/split"),
            ("POST", "/v1/analytics/clv/fit"),
        } <= set(unsafe), unsafe
        before = head(platform.records)
        for method, path in unsafe:
            forged = client.request(
                method, path, content="{}", headers={**CROSS_SITE, "content-type": "text/plain"}
            )
            refusal(forged, 403, "origin")
            typed = client.request(
                method, path, content="{}", headers={"content-type": "text/plain"}
            )
            refusal(typed, 415, "content-type")
    assert head(platform.records) == before


def test_a_cross_site_request_is_refused_before_authentication(
    platform: Platform, serve: Serve
) -> None:
    with httpx.Client(base_url=serve(platform).url) as keyless:
        forged = keyless.post("/v1/segments", json={"name": "x", "rule": RULE}, headers=CROSS_SITE)
        refusal(forged, 403, "origin")
        typed = keyless.post("/v1/analytics/clv/fit", headers={"content-type": "text/plain"})
        refusal(typed, 415, "content-type")
        # Without the browser markers, the request reaches authentication.
        assert keyless.post("/v1/analytics/clv/fit").status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "same-origin", "origin": "http://proxy-rewrote.example"},
        {"sec-fetch-site": "none"},
        {},  # not a browser (curl, an SDK)
    ],
)
def test_a_json_request_not_from_another_site_is_served(
    platform: Platform, serve: Serve, headers: dict[str, str]
) -> None:
    with serve(platform).client() as client:
        accepted = client.post("/v1/touchpoints", json=envelope(new_id("C")), headers=headers)
        assert accepted.status_code == 202, accepted.text


def test_a_same_origin_request_without_sec_fetch_site_is_served(
    platform: Platform, serve: Serve
) -> None:
    served = serve(platform)
    with served.client() as client:
        same = client.post(
            "/v1/touchpoints", json=envelope(new_id("C")), headers={"origin": served.url}
        )
        assert same.status_code == 202, same.text
        other_port = served.url.rsplit(":", 1)[0] + ":1"
        refusal(
            client.post(
                "/v1/touchpoints", json=envelope(new_id("C")), headers={"origin": other_port}
            ),
            403,
            "origin",
        )


def test_a_same_site_origin_not_configured_is_refused(platform: Platform, serve: Serve) -> None:
    with serve(platform).client() as client:
        sibling = {"origin": "http://other.127.0.0.1.nip.example", "sec-fetch-site": "same-site"}
        refusal(client.post("/v1/analytics/clv/fit", headers=sibling), 403, "origin")


# -- CORS ---------------------------------------------------------------------------------


def preflight(
    client: httpx.Client, origin: str, method: str = "POST", **extra: str
) -> httpx.Response:
    return client.options(
        "/v1/touchpoints",
        headers={
            "origin": origin,
            "access-control-request-method": method,
            "access-control-request-headers": "authorization,content-type",
            **extra,
        },
    )


def test_a_configured_origin_is_answered_a_preflight_and_may_call_the_api(
    make_platform: Callable[..., Platform], serve: Serve
) -> None:
    platform = make_platform(cors_origins=[APP, "http://localhost:5173"])
    served = serve(platform)
    with httpx.Client(base_url=served.url) as browser:  # a preflight carries no key
        allowed = preflight(browser, APP)
        assert allowed.status_code == 200, allowed.text
        granted = access_control(allowed)
        assert granted["access-control-allow-origin"] == APP
        assert set(granted["access-control-allow-methods"].split(", ")) == {"GET", "POST", "DELETE"}
        assert {"authorization", "content-type"} <= set(
            granted["access-control-allow-headers"].lower().split(", ")
        )
        assert "access-control-allow-credentials" not in granted
        assert preflight(browser, APP, method="PUT").status_code == 400
        assert (
            preflight(browser, APP, **{"access-control-request-headers": "x-forge"}).status_code
            == 400
        )
    with served.client() as client:
        called = client.post(
            "/v1/touchpoints",
            json=envelope(new_id("C")),
            headers={"origin": APP, "sec-fetch-site": "cross-site"},
        )
        assert called.status_code == 202, called.text
        assert called.headers["access-control-allow-origin"] == APP
        exposed = called.headers["access-control-expose-headers"].lower()
        assert "x-correlation-id" in exposed and "retry-after" in exposed
        # Even a configured origin sends JSON as JSON; its page can read the refusal.
        typed = client.post(
            "/v1/analytics/clv/fit", headers={"origin": APP, "content-type": "text/plain"}
        )
        refusal(typed, 415, "content-type")
        assert typed.headers["access-control-allow-origin"] == APP


def test_an_origin_not_configured_gets_no_preflight_and_no_cors_headers(
    make_platform: Callable[..., Platform], serve: Serve
) -> None:
    platform = make_platform(cors_origins=[APP])
    served = serve(platform)
    with httpx.Client(base_url=served.url) as browser:
        for origin in (EVIL, "null", APP + ".evil.example", APP + ":8443", "http://app.example"):
            refused = preflight(browser, origin)
            assert refused.status_code != 200, origin
            assert "access-control-allow-origin" not in refused.headers, origin
    with served.client() as client:
        read = client.get("/v1/healthz", headers={"origin": EVIL})
        assert read.status_code == 200
        assert "access-control-allow-origin" not in read.headers
        refusal(client.post("/v1/analytics/clv/fit", headers={"origin": EVIL}), 403, "origin")


def test_without_cors_origins_no_access_control_header_is_ever_sent(
    platform: Platform, serve: Serve
) -> None:
    served = serve(platform)
    with served.client() as client:
        answers = [
            preflight(client, APP),
            preflight(client, served.url),
            client.get("/v1/healthz", headers={"origin": APP}),
            client.get("/v1/segments", headers={"origin": served.url}),
            client.post(
                "/v1/touchpoints", json=envelope(new_id("C")), headers={"origin": served.url}
            ),
            client.post("/v1/touchpoints", json=envelope(new_id("C")), headers={"origin": APP}),
            client.get("/docs", headers={"origin": APP}),
        ]
    for answer in answers:
        assert access_control(answer) == {}, (answer.request.url, answer.headers)
    assert answers[0].status_code == 405  # nobody answers a preflight


# -- the setting --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin", ["https://app.example.com", "http://127.0.0.1:8080", "http://[::1]:3000"]
)
def test_a_web_origin_is_a_valid_cors_origin(origin: str) -> None:
    assert Settings(environment="development", cors_origins=[origin]).cors_origins == [origin]


@pytest.mark.parametrize(
    ("origin", "suggested"),
    [
        ("*", None),
        ("null", None),
        ("app.example.com", None),
        ("ftp://app.example.com", None),
        ("https://app.example.com:99999", None),
        ("https://bücher.example", None),
        ("https://app.example.com/", "https://app.example.com"),
        ("https://app.example.com/api", "https://app.example.com"),
        ("HTTPS://App.Example.com", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("https://user@app.example.com", "https://app.example.com"),
    ],
)
def test_a_cors_origin_that_a_browser_never_sends_is_refused(
    origin: str, suggested: str | None
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(environment="development", cors_origins=[origin])
    message = str(refused.value)
    assert "cors_origins" in message and "scheme://host[:port]" in message
    assert (f"write {suggested!r}" in message) if suggested else ("write" not in message)
