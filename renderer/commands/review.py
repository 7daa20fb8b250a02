"""``campaign review``: a local web page where a person approves or rejects a run's images.

A Starlette app served by uvicorn on one loopback port. It reads the ledger on each page
load (so it works while a render is running, and after ``campaign gate``), shows what the
ledger says, and writes one thing: ``reviews`` rows (``Ledger.add_reviews``).

Routes (``ReviewApp.routes``):

    GET  /                       the page (static HTML; its script builds the DOM with
                                 textContent only, so no ledger text is ever markup)
    GET  /static/review.js|.css  its script and style
    GET  /api/run                the run: counts, thresholds, axes in campaign order, each
                                 variant's render (``RenderRow.as_json``), exports, earlier
                                 renders, the brand references
    GET  /files/SHA256           a master or export the ledger records, full size
    GET  /thumbs/SHA256/SIZE     its thumbnail (``renderer.report.thumbnails``), or a brand
                                 reference's; cached in OUT/.thumbnails/
    POST /api/reviews            approve | reject | reset, one render or many; each names
                                 the review it saw standing (``seen``), and a batch in which
                                 one no longer stands is refused whole (409, with the
                                 current state of each such render)

Every request first meets the guard (``renderer.commands.review_guard``: the Host, the
write token and same origin, size bounds, the security headers). Then:

* **Files**: URLs name content by sha256, never a path. A sha256 is served only when the
  ledger records a file of that hash (a run's master or export) whose path, resolved
  with symlinks followed, lies inside the output folder and whose bytes still hash to it;
  anything else is 404. Brand references (outside the output folder) are only ever
  served as thumbnails made from the recorded file, checked against its recorded sha256.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from postprocess.gate_rules import guideline_summary
from renderer.commands.review_guard import (
    MAX_BODY,
    MAX_HEADERS,
    SHA256_HEX,
    Decision,
    RequestGuard,
    bounded_body,
    parse_decisions,
    text_response,
)
from renderer.core.errors import InputError
from renderer.core.hashing import sha256_file
from renderer.core.json_value import JsonValue
from renderer.core.terminal import Log
from renderer.ledger.decisions import run_gates
from renderer.ledger.records import ExportRow, RenderRow, RunRow
from renderer.ledger.reviews import ReviewConflict, ReviewRecord
from renderer.ledger.store import LEDGER_NAME, Ledger
from renderer.report.thumbnails import SIZES, cached_thumbnail, make_thumbnail
from renderer.validate.matrix import axis_label

_REREAD_SECONDS = 2.0  # unknown hashes re-read the ledger at most this often
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_STATIC = {"review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class RecordedFile:
    """A file the ledger records, as the review page may show it."""

    path: Path  # absolute
    inside: bool  # under the output folder: served itself; else only as thumbnails


@dataclass
class _FileIndex:
    """The files of the run being reviewed, by sha256, and the hashes checked so far."""

    files: dict[str, RecordedFile] = field(default_factory=dict)
    checked: dict[tuple[str, int, int, int], str] = field(default_factory=dict)
    read_at: float = 0.0  # when an unknown sha256 last made it read the ledger again
    lock: threading.Lock = field(default_factory=threading.Lock)


class ReviewApp:
    """The review page of one output folder (``run_id`` None: the latest run, read anew
    on every page load)."""

    def __init__(
        self,
        out_dir: Path,
        run_id: str | None,
        *,
        reviewer: str,
        token: str,
        allowed_hosts: Sequence[str] | None,
    ):
        self.out_dir = out_dir
        self.out_root = out_dir.resolve()
        self.ledger_path = out_dir / LEDGER_NAME
        self.run_id = run_id
        self.reviewer = reviewer
        self.token = token
        self.allowed_hosts = None if allowed_hosts is None else set(allowed_hosts)
        self.index = _FileIndex()
        self.reviewed_runs: set[str] = set()  # runs reviewed here (their reports rewritten)

    # ------------------------------------------------------------ the ASGI app

    def asgi(self) -> Starlette:
        routes = [
            Route("/", self.page, methods=["GET"]),
            Route("/favicon.ico", lambda request: text_response(204, ""), methods=["GET"]),
            Route("/static/{name}", self.static, methods=["GET"]),
            Route("/api/run", self.api_run, methods=["GET"]),
            Route("/api/reviews", self.api_reviews, methods=["POST"]),
            Route("/files/{sha256}", self.file, methods=["GET"]),
            Route("/thumbs/{sha256}/{size}", self.thumb, methods=["GET"]),
        ]
        return Starlette(routes=routes, middleware=[Middleware(RequestGuard, app_state=self)])

    def page(self, request: Request) -> Response:
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8")

    def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return text_response(404, "not found")
        return Response(_asset(name), media_type=_STATIC[name])

    def api_run(self, request: Request) -> Response:
        try:
            payload = self.run_payload()
        except InputError as err:
            return JSONResponse({"error": err.message}, status_code=404)
        return JSONResponse(payload)

    async def api_reviews(self, request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return text_response(415, "send application/json")
        body = await bounded_body(request)
        if body is None:
            return text_response(413, f"request body over {MAX_BODY} bytes")
        try:
            decisions = parse_decisions(body)
        except ValueError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        status, payload = await run_in_threadpool(self.record, decisions)
        return JSONResponse(payload, status_code=status)

    def file(self, request: Request) -> Response:
        recorded = self.verified(request.path_params["sha256"])
        if recorded is None or not recorded.inside:
            return text_response(404, "not a file of this run")
        return Response(
            recorded.path.read_bytes(),
            media_type=_media_type(recorded.path),
            headers={"cache-control": "private, max-age=86400, immutable"},
        )

    def thumb(self, request: Request) -> Response:
        sha256, size = request.path_params["sha256"], request.path_params["size"]
        if not size.isdigit() or int(size) not in SIZES or not SHA256_HEX.match(sha256):
            return text_response(404, f"sizes: {', '.join(map(str, SIZES))}")
        cached = cached_thumbnail(self.out_dir, sha256, int(size))
        if cached is not None:
            data = cached.read_bytes()
        else:
            recorded = self.verified(sha256)
            if recorded is None:
                return text_response(404, "no file with these bytes is kept")
            data = make_thumbnail(recorded.path, sha256, int(size), self.out_dir)
        return Response(
            data,
            media_type="image/webp",
            headers={"cache-control": "private, max-age=86400, immutable"},
        )

    # ------------------------------------------------------------ reading

    def open_ledger(self) -> Ledger:
        if not self.ledger_path.is_file():
            raise InputError("no ledger here", file=self.ledger_path)
        return Ledger(self.ledger_path)

    def current_run(self, ledger: Ledger) -> RunRow:
        run = ledger.run(self.run_id)
        if run is None:
            raise InputError(
                f"no run {self.run_id!r} in the ledger"
                if self.run_id
                else "the ledger has no runs yet",
                file=self.ledger_path,
            )
        return run

    def run_payload(self) -> dict[str, JsonValue]:
        """Everything the page shows, from the ledger as it is now."""
        with self.open_ledger() as ledger:
            run = self.current_run(ledger)
            rows = ledger.run_rows(run.id)
            exports = ledger.exports_of([row.id for row in rows])
            history = ledger.earlier_renders([row.variant_id for row in rows])
            thresholds = run_gates(ledger, run).describe()
        axes: dict[str, list[str]] = {}
        for row in rows:
            for axis, value in row.axes.items():
                values = axes.setdefault(axis, [])
                if (label := axis_label(value)) not in values:
                    values.append(label)
        references = {
            entry["sha256"]: entry
            for row in rows[:1]
            for entry in row.input_files
            if entry["role"] == "reference"
        }
        self.index_files(rows, exports, references.values())
        return {
            "run": run.as_json(),
            "thresholds": thresholds,
            "reviewer": self.reviewer,
            "axes": axes,
            "scores": list(dict.fromkeys(name for row in rows for name in row.decided_scores)),
            "thumbnail_sizes": list(SIZES),
            "references": [
                {"name": Path(entry["path"]).name, "sha256": sha}
                for sha, entry in references.items()
            ],
            "variants": [
                {
                    "render": row.as_json(),
                    **broken_guidelines(row),
                    "labels": {axis: axis_label(value) for axis, value in row.axes.items()},
                    "exports": [export.as_json() for export in exports.get(row.id, [])],
                    "earlier": [
                        {
                            "id": old.id,
                            "run_id": old.run_id,
                            "created_at": old.created_at,
                            "output_sha256": old.output_sha256,
                            "rerender_reason": old.rerender_reason,
                            "review_state": old.review_state,
                        }
                        for old in history.get(row.variant_id, [])
                    ],
                }
                for row in rows
            ],
        }

    def index_files(
        self,
        rows: Sequence[RenderRow],
        exports: Mapping[int, Sequence[ExportRow]],
        references: Iterable[Mapping[str, str]],
    ) -> None:
        files = {
            row.output_sha256: RecordedFile(self.out_dir / row.output_path, True) for row in rows
        }
        for row in rows:
            files.update(
                {
                    export.sha256: RecordedFile(self.out_dir / export.path, True)
                    for export in exports.get(row.id, [])
                }
            )
        files.update(
            {entry["sha256"]: RecordedFile(Path(entry["path"]), False) for entry in references}
        )
        self.index.files = files

    def verified(self, sha256: str) -> RecordedFile | None:
        """The recorded file whose bytes hash to ``sha256`` now, if there is one (the rule
        in the module docstring); hashes are remembered by (path, size, mtime, inode)."""
        if not SHA256_HEX.match(sha256):
            return None
        now = time.monotonic()
        if sha256 not in self.index.files and now - self.index.read_at > _REREAD_SECONDS:
            self.index.read_at = now
            try:
                self.run_payload()  # a render may have added it since the page loaded
            except InputError:
                return None
        recorded = self.index.files.get(sha256)
        if recorded is None:
            return None
        try:
            resolved = recorded.path.resolve(strict=True)
            stat = resolved.stat()
        except OSError:
            return None
        if recorded.inside and not resolved.is_relative_to(self.out_root):
            return None  # a symlink out of the output folder
        if not resolved.is_file():
            return None
        key = (str(resolved), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        with self.index.lock:
            found = self.index.checked.get(key)
        if found is None:
            found = sha256_file(resolved)
            with self.index.lock:
                self.index.checked[key] = found
        return RecordedFile(resolved, recorded.inside) if found == sha256 else None

    # ------------------------------------------------------------ writing

    def record(self, decisions: Sequence[Decision]) -> tuple[int, dict[str, JsonValue]]:
        """Store a person's decisions; every one must name a render's current bytes and the
        review it saw standing for them (else 409 and nothing is stored)."""
        with self.open_ledger() as ledger:
            records = []
            for item in decisions:
                row = ledger.render(item["render_id"])
                if row is None:
                    return 404, {"error": f"no render {item['render_id']}"}
                newest = ledger.renders_of(row.variant_id)[-1]
                if newest.id != row.id or row.output_sha256 != item["sha256"]:
                    return 409, {
                        "error": f"{row.variant_id[:12]} was rendered again since "
                        "the page loaded: reload it and look again",
                        "variant_id": row.variant_id,
                    }
                records.append(
                    ReviewRecord(
                        render_id=row.id,
                        variant_id=row.variant_id,
                        sha256=row.output_sha256,
                        decision=item["decision"],
                        reviewer=self.reviewer,
                        note=item["note"],
                    )
                )
            try:
                stored = ledger.add_reviews(records, seen=[item["seen"] for item in decisions])
            except ReviewConflict as conflict:
                run = ledger.run(self.run_id)
                return 409, {
                    "error": f"{len(conflict.stale)} decision(s) changed by someone "
                    "else while you were looking: nothing was saved; look again",
                    "conflicts": [stale.as_json() for stale in conflict.stale],
                    "run": run.as_json() if run else None,
                }
            run = ledger.run(self.run_id)
            if run is not None:
                self.reviewed_runs.add(run.id)
        return 200, {
            "reviews": [review.as_json() for review in stored],
            "run": run.as_json() if run else None,
        }


def _asset(name: str) -> bytes:
    return (resources.files("renderer") / "data" / "review" / name).read_bytes()


def _media_type(path: Path) -> str:
    return {
        ".png": "image/png",
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".webp": "image/webp",
    }.get(path.suffix.lower(), "application/octet-stream")


# ---------------------------------------------------------------- launching


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(
    out_dir: Path,
    run_id: str | None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    reviewer: str,
    announce: Log,
    log: Log = lambda message: print(message, file=sys.stderr),
) -> ReviewApp:
    """Serve the review page until interrupted; ``announce`` gets the URL (with the token)
    once the port is bound. Returns the app (which runs had reviews written)."""
    if not (out_dir / LEDGER_NAME).is_file():
        raise InputError(
            "no ledger here",
            file=out_dir / LEDGER_NAME,
            fix="pass --out with the folder you rendered into",
        )
    with Ledger(out_dir / LEDGER_NAME) as ledger:
        if run_id is not None and ledger.run(run_id) is None:
            raise InputError(
                f"no run {run_id!r} in the ledger",
                file=ledger.path,
                fix="list runs with `campaign history`",
            )
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family)
    except OSError as err:
        raise InputError(
            f"cannot listen on {host}:{port}",
            found=str(err),
            fix="pick another --port (0 picks a free one)",
        ) from None
    bound = sock.getsockname()[1]
    loopback = host in _LOOPBACK
    if not loopback:
        log(
            f"warning: --host {host} makes the review page reachable from other machines; "
            "anyone who has the printed URL can approve images"
        )
    allowed = (
        [
            f"{url_host(name)}:{bound}"
            for name in ({host, "localhost", "127.0.0.1"} if loopback else {host})
        ]
        if host not in ("0.0.0.0", "::")
        else None
    )
    token = secrets.token_urlsafe(24)
    app = ReviewApp(out_dir, run_id, reviewer=reviewer, token=token, allowed_hosts=allowed)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    announce(f"http://{url_host(shown)}:{bound}/#token={token}")
    config = uvicorn.Config(
        app.asgi(),
        log_level="warning",
        access_log=False,
        http="h11",
        lifespan="off",
        server_header=False,
        h11_max_incomplete_event_size=MAX_HEADERS,
    )
    # uvicorn re-raises the Ctrl-C it shut down on: here, that is the way out.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
    return app


def broken_guidelines(row: RenderRow) -> dict[str, JsonValue]:
    """The rules a render broke in its current decision (the page filters on them) and how
    many it kept, in words."""
    if row.decision is None:
        return {"broken": [], "guidelines": guideline_summary(0, ())}
    broken = row.decision.broken
    total = len(row.decision.guidelines)
    return {"broken": list(broken), "guidelines": guideline_summary(total, broken)}
