"""What a web browser meets: the API documentation served from this server, CORS for the
origins in ``PEAKEND_CORS_ORIGINS``, and a refusal of cross-site requests that need no
preflight.

Documentation: ``/docs`` (Swagger UI) and ``/redoc`` load their scripts, styles and icon
from ``/static/`` (vendored in ``api/static``, see its README), never from a CDN: they
work offline, and opening them tells no other site who reads this API's documentation.
Their Content-Security-Policy holds the vendored code to that too.

CORS: off unless ``cors_origins`` names origins; then those origins, and only they, may
call the API from a web page with the methods it has (GET, POST, DELETE) and the headers
it reads (Authorization, Content-Type). No credentials: the API authenticates with bearer
keys, never cookies.

Cross-site refusal. A web page can make a browser send some requests to another site
without asking it first (no CORS preflight): a form, or a ``fetch`` whose body is
``text/plain``, ``application/x-www-form-urlencoded``, ``multipart/form-data`` or typeless
(a ``Blob`` or bytes send no Content-Type, which FastAPI then parses as JSON). The answer
stays unreadable to the page, but the request has been made. So an unsafe request (POST,
PUT, PATCH, DELETE) is refused before any route or authentication sees it:

- 403 naming the origin when it comes from another site: ``Sec-Fetch-Site`` is
  ``cross-site`` or ``same-site`` (the browser says so; a page cannot set it), or, from a
  browser that does not send it, ``Origin`` is present and is not this server's own
  origin (scheme and Host of the request) -- unless ``Origin`` is in ``cors_origins``;
- 415 naming the content type when it is one of those a browser sends without a
  preflight, or when a body comes with no Content-Type: every route reads JSON, so the
  client is told to send ``application/json``, which a cross-site page cannot without a
  preflight that CORS answers for ``cors_origins`` alone.

An unsafe request with neither a body nor a Content-Type (``POST /v1/segments/evaluate``)
passes when it is not cross-site: a page on another site gets it refused by the origin
check above (browsers send ``Origin`` on every cross-origin POST and DELETE), and even a
browser that sent no ``Origin`` could not attach the API key, since ``Authorization`` is
not a header a page may add to another site's request without a preflight. The key, not
this module, is what stops a forged request; this module stops it sooner and for any
route, including those whose authentication a deployment might relax, e.g. behind a
proxy that authenticates by network position or by cookie.

Behind a proxy that terminates TLS, run uvicorn with ``--proxy-headers`` (and
``--forwarded-allow-ips``) so that the request's scheme is the one the browser used:
otherwise a browser that sends ``Origin`` but not ``Sec-Fetch-Site`` (older ones) is
taken for another origin.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, Request, params
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import CORRELATION_HEADER, EscapedJSONResponse
from api.schemas import IngestRefused, ItemError
from domain.touchpoints import printable
from infra.settings import Settings

STATIC_DIR = Path(__file__).with_name("static")
STATIC_URL = "/static"
SWAGGER_UI = f"{STATIC_URL}/swagger-ui"
REDOC = f"{STATIC_URL}/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The media types a browser sends to another site without a preflight (the Fetch
# standard's CORS-safelisted Content-Type values), and none: a typeless body.
NO_PREFLIGHT_TYPES = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _refusal(status: int, field: str, message: str) -> EscapedJSONResponse:
    # The ingest route's refusal shape (its 415 is documented so): ``detail`` as in every
    # FastAPI error of the app, the field named in ``errors``.
    body = IngestRefused(
        detail=message, errors=[ItemError(index=None, field=field, message=message)]
    )
    return EscapedJSONResponse(body.model_dump(), status_code=status)


def own_origin(scope: Scope, headers: Headers) -> str | None:
    """This server's origin as the browser sees it: the request's scheme and Host, with
    a default port left out (as browsers serialize an origin)."""
    host = headers.get("host", "").strip().lower()
    if not host:
        return None
    scheme = str(scope.get("scheme", "http")).lower()
    default = f":{_DEFAULT_PORTS.get(scheme)}"
    return f"{scheme}://{host.removesuffix(default)}"


class RefuseCrossSite:
    """ASGI middleware: refuses the unsafe requests a web page on another site could
    make a browser send without a preflight (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, allowed_origins: frozenset[str]) -> None:
        self.app = app
        self.allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            refusal = self.refusal(scope, Headers(scope=scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope, headers: Headers) -> EscapedJSONResponse | None:
        origin = headers.get("origin")
        if origin is None or origin not in self.allowed_origins:
            site = headers.get("sec-fetch-site", "").lower()
            if site in ("cross-site", "same-site"):
                return self._cross_site(origin)
            if site not in ("same-origin", "none") and origin not in (
                None,
                own_origin(scope, headers),
            ):
                return self._cross_site(origin)
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        if media_type in NO_PREFLIGHT_TYPES or (not media_type and has_body):
            shown = printable(media_type, 60) or "none"
            return _refusal(
                415,
                "content-type",
                f"the body must be sent as Content-Type: application/json (got {shown})",
            )
        return None

    @staticmethod
    def _cross_site(origin: str | None) -> EscapedJSONResponse:
        shown = repr(printable(origin, 100)) if origin is not None else "(not sent)"
        return _refusal(
            403,
            "origin",
            f"a request from another site is refused: origin {shown} is not allowed to call "
            "this API from a browser (PEAKEND_CORS_ORIGINS names the origins that are)",
        )


def confined(page: HTMLResponse) -> HTMLResponse:
    """``page`` with a Content-Security-Policy that lets the browser load, connect to and
    run only what this server serves, and the page's own inline scripts (by hash): the
    vendored code cannot reach another site either (ReDoc's sidebar shows Redocly's logo
    from their CDN; refused, the image is left out). Inline styles are allowed: Swagger UI
    and ReDoc set them from script."""
    scripts = re.findall(rb"<script>(.*?)</script>", page.body, flags=re.DOTALL)
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in scripts
    )
    page.headers["content-security-policy"] = (
        f"default-src 'self'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; worker-src 'self' blob:; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    return page


def install(
    app: FastAPI, settings: Settings, *, docs_dependencies: Sequence[params.Depends] = ()
) -> None:
    """The documentation pages and their assets, CORS, and the cross-site refusal: the one
    line ``create_app`` needs (which builds the app with ``docs_url=None, redoc_url=None``).
    ``docs_dependencies`` go on the pages' routes (who may read them); the assets are
    public files. The middleware runs before any route's dependency (authentication),
    and after the middleware added later: Starlette runs the one added last first."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
    pages = list(docs_dependencies)

    @app.get("/docs", include_in_schema=False, dependencies=pages)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return confined(
            get_swagger_ui_html(
                openapi_url=root + (app.openapi_url or "/openapi.json"),
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{root}{SWAGGER_UI}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{SWAGGER_UI}/swagger-ui.css",
                swagger_favicon_url=f"{root}{SWAGGER_UI}/favicon-32x32.png",
                oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
                # Its default sends the document's URL to validator.swagger.io for a badge.
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False, dependencies=pages)
    def swagger_ui_redirect() -> HTMLResponse:
        return confined(get_swagger_ui_oauth2_redirect_html())

    @app.get("/redoc", include_in_schema=False, dependencies=pages)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return confined(
            get_redoc_html(
                openapi_url=root + (app.openapi_url or "/openapi.json"),
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{REDOC}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{SWAGGER_UI}/favicon-32x32.png",
                with_google_fonts=False,
            )
        )

    allowed = frozenset(settings.cors_origins)
    app.add_middleware(RefuseCrossSite, allowed_origins=allowed)
    if allowed:  # added last, so it runs first: a refusal carries CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(allowed),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            # What a page may read besides the safelisted headers: what to quote, when
            # to retry.
            expose_headers=[CORRELATION_HEADER, "Retry-After"],
        )
