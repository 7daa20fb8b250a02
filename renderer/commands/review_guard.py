"""What the review server (``renderer.commands.review``) lets in, and what a write may say.

Security, in the order a request meets it (``RequestGuard``, before any route):

* **Host**: bound to 127.0.0.1 by default; a request whose Host header names another host
  is refused (400), so a web page cannot reach the server through DNS rebinding.
* **Writes** need the per-launch token (``secrets.token_urlsafe``), printed in the URL's
  fragment (``#token=…``: a fragment is never sent in a request or a Referer) and sent
  back by the page in the ``X-Review-Token`` header, and a same-origin request: its Origin
  (or, without one, its Referer) must be this server's own. Either missing or wrong is 403.
  A custom header and a JSON body also mean a browser preflights any cross-site attempt,
  which this server never answers with CORS headers.
* **Sizes**: a request target and headers over ``MAX_HEADERS`` bytes are refused (431),
  request bodies over ``MAX_BODY`` bytes (413) before and while reading; a selection holds
  at most ``MAX_DECISIONS``, a note at most ``MAX_NOTE`` characters (``parse_decisions``).
* Every response carries a strict Content-Security-Policy (scripts and images from this
  origin only, no inline script, no framing), ``nosniff`` and ``no-referrer``.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Collection, Mapping
from typing import Protocol, TypedDict, TypeGuard
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from renderer.ledger.records import REVIEW_DECISIONS

MAX_BODY = 256 * 1024  # bytes of one POST
MAX_HEADERS = 16 * 1024  # bytes of a request's target and headers together
MAX_DECISIONS = 5000  # renders in one selection
MAX_NOTE = 2000  # characters
MAX_ID = 2**63 - 1  # SQLite's largest integer: a larger id is no row's
TOKEN_HEADER = "x-review-token"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


class Decision(TypedDict):
    """One decision of a POST to /api/reviews, checked (``parse_decisions``)."""

    render_id: int
    sha256: str  # the bytes the person looked at
    decision: str  # one of REVIEW_DECISIONS
    note: str
    seen: int | None  # the review the page showed standing for that render


class GuardedApp(Protocol):
    """What the guard reads of the review app: who may call it, and the write token."""

    @property
    def allowed_hosts(self) -> Collection[str] | None: ...  # None: any Host

    @property
    def token(self) -> str: ...


class RequestGuard:
    """ASGI middleware: the Host check for every request, the token and same-origin
    checks for every write, and the security headers on every response."""

    def __init__(self, app: ASGIApp, app_state: GuardedApp):
        self.app, self.state = app, app_state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope["headers"]
        }
        refusal = self.refusal(scope, headers)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                present = {key.lower() for key, _ in message["headers"]}
                message["headers"] += [
                    (key.encode(), value.encode())
                    for key, value in _SECURITY_HEADERS.items()
                    if key.encode() not in present
                ]
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def refusal(self, scope: Scope, headers: Mapping[str, str]) -> PlainTextResponse | None:
        # h11 bounds only a request head still arriving; one that arrived whole is measured
        # here: the target and every header line, as sent.
        head = (
            len(scope.get("raw_path") or b"")
            + len(scope.get("query_string", b""))
            + sum(len(key) + len(value) + 4 for key, value in scope["headers"])
        )
        if head > MAX_HEADERS:
            return text_response(431, f"request target and headers over {MAX_HEADERS} bytes")
        host = headers.get("host", "")
        allowed = self.state.allowed_hosts
        if allowed is not None and host not in allowed:
            return text_response(400, "unexpected Host header")
        if scope["method"] in ("GET", "HEAD"):
            return None
        length = headers.get("content-length")
        if length is not None and (
            not (length.isascii() and length.isdigit()) or int(length) > MAX_BODY
        ):
            return text_response(413, f"request body over {MAX_BODY} bytes")
        if not secrets.compare_digest(
            headers.get(TOKEN_HEADER, "").encode(), self.state.token.encode()
        ):
            return text_response(
                403, "this write needs the token from the URL campaign review printed"
            )
        origin = headers.get("origin") or headers.get("referer")
        if origin is None or origin == "null":
            return text_response(403, "a write must come from the review page (no Origin)")
        parts = urlsplit(origin)
        if parts.scheme != "http" or parts.netloc != host:
            return text_response(403, "a write must come from the review page (cross-origin)")
        return None


async def bounded_body(request: Request) -> bytes | None:
    """The request's body, or None as soon as it is over ``MAX_BODY`` bytes."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    return body


def parse_decisions(body: bytes) -> list[Decision]:
    """``{"decisions": [{"render_id", "sha256", "decision", "note", "seen"}, …]}``, checked
    (``seen``: the id of the review the page showed standing for that render, or null)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        raise ValueError("the body is not JSON") from None
    items = data.get("decisions") if isinstance(data, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_DECISIONS:
        raise ValueError(f'send {{"decisions": [...]}} with 1 to {MAX_DECISIONS} items')
    checked: list[Decision] = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("each decision is an object")
        render_id, sha256 = item.get("render_id"), item.get("sha256")
        decision, note = item.get("decision"), item.get("note", "")
        if not _is_id(render_id):
            raise ValueError(f"render_id must be an integer from 1 to {MAX_ID}")
        seen = item.get("seen")
        if "seen" not in item or not (seen is None or _is_id(seen)):
            raise ValueError(
                "seen must be the id of the review the page showed for this "
                f"render (an integer from 1 to {MAX_ID}), or null if none"
            )
        if not isinstance(sha256, str) or not SHA256_HEX.match(sha256):
            raise ValueError("sha256 must be 64 hex digits: the bytes you looked at")
        if not isinstance(decision, str) or decision not in REVIEW_DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(REVIEW_DECISIONS)}")
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            raise ValueError(f"note must be text of at most {MAX_NOTE} characters")
        try:
            note.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, e.g. "\ud800"
            raise ValueError("note must be valid Unicode text (no lone surrogates)") from None
        checked.append(
            {
                "render_id": render_id,
                "sha256": sha256,
                "decision": decision,
                "note": note,
                "seen": seen,
            }
        )
    return checked


def _is_id(value: object) -> TypeGuard[int]:
    """A row id SQLite can hold: an integer (not a bool) from 1 to 2**63 - 1."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def text_response(status: int, message: str) -> PlainTextResponse:
    return PlainTextResponse(message, status_code=status)
