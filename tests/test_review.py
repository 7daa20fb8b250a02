"""`campaign review` on a real run: a person approves and rejects in headless Chromium
(Debian's, driven by Playwright), and every refusal of the server, one by one, over HTTP.

The run: 4 variants of the small demo campaign, each sent to review by a gate, one product
named with a ``<script>``; the server is the real console script on a free port."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import sync_playwright

from renderer.commands.review_guard import MAX_BODY, TOKEN_HEADER
from renderer.report.thumbnails import FOLDER

from .conftest import CAMPAIGN_BIN, REPO, ledger_rows
from .shipping_support import HOSTILE_NAME, render, shipping_project

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
DOCS = REPO / "docs"


@dataclass(frozen=True)
class Server:
    url: str  # as printed, with #token=…
    out: Path

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def token(self) -> str:
        return self.url.split("#token=", 1)[1]

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        parts = urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            headers = dict(headers or {})
            connection.putrequest(
                method, path, skip_host="Host" in headers, skip_accept_encoding=True
            )
            for key, value in headers.items():
                connection.putheader(key, value)
            if body is not None and "Content-Length" not in headers:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def write(self, decisions: list[dict], **headers: str) -> tuple[int, bytes]:
        sent = {
            "Content-Type": "application/json",
            "Origin": self.origin,
            "X-Review-Token": self.token,
            **headers,
        }
        return self.request(
            "POST",
            "/api/reviews",
            json.dumps({"decisions": decisions}).encode(),
            {key: value for key, value in sent.items() if value},
        )


@contextmanager
def review_server(out: Path, *args: str) -> Iterator[Server]:
    """The real `campaign review` on a free port; stopped with Ctrl-C (SIGINT)."""
    process = subprocess.Popen(
        [str(CAMPAIGN_BIN), "review", "--out", str(out), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), process.stderr.read()
        yield Server(url, out)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr


@pytest.fixture(scope="module")
def run_out(tmp_path_factory, demo_models, one_thread) -> Path:
    root = tmp_path_factory.mktemp("review")
    out = root / "out"
    summary = render(shipping_project(root / "project", hostile=True), out)
    assert summary.counts == {"passed": 0, "review": 4, "failed": 0}
    return out


def _renders(out: Path) -> list[tuple[int, str, str]]:
    return ledger_rows(out, "SELECT id, variant_id, output_sha256 FROM renders ORDER BY id")


# ---------------------------------------------------------------- the page, as a person


def test_a_person_approves_and_rejects_in_the_browser(run_out, tmp_path):
    ids = _renders(run_out)
    with review_server(run_out, "--reviewer", "ana") as server, sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on(
            "console",
            lambda message: errors.append(message.text) if message.type == "error" else None,
        )
        page.goto(server.url)
        page.wait_for_selector(".card img")
        cards = page.locator("#grid .card")
        assert cards.count() == 4
        # Campaign axis order: seeds 1..4, as planned.
        assert [cards.nth(i).get_attribute("data-variant") for i in range(4)] == [
            variant for _, variant, _ in ids
        ]
        # The hostile prompt is text, and never ran.
        assert page.evaluate("() => window.__pwned") is None
        assert page.evaluate("() => document.documentElement.getAttribute('data-pwned')") is None
        assert HOSTILE_NAME in cards.nth(0).inner_text()

        # Each card says how many guidelines it kept and names those it broke; the grid
        # filters by a broken guideline.
        lines = [cards.nth(i).locator(".guidelines").inner_text() for i in range(4)]
        broken = [set(line.partition("broken: ")[2].split(", ")) - {""} for line in lines]
        assert all(" guidelines kept" in line for line in lines) and broken[0], lines
        name = min(broken[0])
        page.select_option("#guideline-filter", name)
        assert cards.count() == sum(name in names for names in broken)
        options = page.eval_on_selector_all("#guideline-filter option", "o => o.map(x => x.value)")
        kept = next(option for option in options if option and not any(option in b for b in broken))
        page.select_option("#guideline-filter", kept)
        assert cards.count() == 0
        page.select_option("#guideline-filter", "")
        assert cards.count() == 4

        # Two approvals by click, one by keyboard, one rejection with a note.
        cards.nth(0).locator("button.approve").click()
        page.wait_for_selector("#grid .card.state-approved >> nth=0")
        cards.nth(1).locator("button.approve").click()
        approved = "n => document.querySelectorAll('.card.state-approved').length == n"
        page.wait_for_function(approved, arg=2)
        cards.nth(1).focus()
        page.keyboard.press("ArrowRight")  # to the third card
        page.keyboard.press("a")
        page.wait_for_function(approved, arg=3)
        page.keyboard.press("ArrowRight")
        page.keyboard.press("r")
        page.fill("#note", "logo too close to the edge")
        page.click("#note-ok")
        page.wait_for_selector(".card.state-rejected")

        # The viewer: full size, zoom, keyboard, references, exports.
        cards.nth(3).locator("img").click()
        page.wait_for_selector("#lightbox", state="visible")
        page.wait_for_function("() => document.getElementById('lb-image').naturalWidth > 0")
        assert page.get_attribute("#lb-image", "src") == f"/files/{ids[3][2]}"
        page.select_option("#lb-compare", "references")
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('#lb-side img'))"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        assert page.locator("#lb-side figure").count() == 3
        page.screenshot(path=str(tmp_path / "lightbox.png"))
        fitted = page.inner_text("#zoom-shown")
        page.keyboard.press("+")
        assert fitted.startswith("fit ") and page.inner_text("#zoom-shown") != fitted
        page.select_option("#lb-compare", "exports")
        page.wait_for_function("() => document.querySelectorAll('#lb-side img').length == 3")
        page.keyboard.press("ArrowLeft")
        assert ids[2][1][:12] in page.inner_text("#lb-title")
        page.keyboard.press("Escape")

        # Reload: the state comes back from the ledger.
        page.reload()
        page.wait_for_selector(".card img")
        states = page.eval_on_selector_all(
            "#grid .card",
            "cards => cards.map(c => c.querySelector('.badge.approved, "
            ".badge.rejected, .badge.unreviewed').textContent)",
        )
        assert states == ["approved", "approved", "approved", "rejected"]
        assert "logo too close to the edge" in cards.nth(3).inner_text()
        page.screenshot(path=str(tmp_path / "grid.png"))
        assert page.inner_text("#reviews").split() == [
            "approved",
            "3",
            "rejected",
            "1",
            "to",
            "review",
            "0",
        ]

        assert errors == []  # no script error, no failed load, until the refusals below
        # From the page itself: a write without the token, a path outside the folder.
        status = page.evaluate("""() => fetch('/api/reviews', {method: 'POST',
            headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({decisions: []})}).then(r => r.status)""")
        assert status == 403
        assert (
            page.evaluate("() => fetch('/files/..%2F..%2Fledger.sqlite').then(r => r.status)")
            == 404
        )
        assert page.evaluate("() => fetch('/static/..%2Freview.py').then(r => r.status)") == 404
        browser.close()
        if os.environ.get("CAMPAIGN_UPDATE_DOCS") == "1":  # README's screenshots, on request
            for name in ("grid", "lightbox"):
                (DOCS / f"review-{name}.png").write_bytes((tmp_path / f"{name}.png").read_bytes())

    rows = ledger_rows(
        run_out, "SELECT render_id, sha256, decision, reviewer, note FROM reviews ORDER BY id"
    )
    assert rows == [
        (render_id, sha, decision, "ana", note)
        for (render_id, _, sha), decision, note in zip(
            ids,
            ["approve", "approve", "approve", "reject"],
            ["", "", "", "logo too close to the edge"],
            strict=True,
        )
    ]
    assert ledger_rows(run_out, "SELECT decision FROM current_reviews ORDER BY render_id") == [
        ("approve",),
        ("approve",),
        ("approve",),
        ("reject",),
    ]
    # Thumbnails were made once, by content and size, in the output folder.
    thumbnails = sorted(path.name for path in (run_out / FOLDER).iterdir())
    assert thumbnails and all(name.endswith(".webp") for name in thumbnails)
    # Stopping the server rewrote the run's report with the reviews.
    (report,) = (run_out / "ship" / "reports").glob("*.html")
    assert "approved by ana" in report.read_text() and "logo too close" in report.read_text()
    # history and show say the same.
    details = json.loads(
        subprocess.run(
            [str(CAMPAIGN_BIN), "show", ids[3][1], "--out", str(run_out), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert details["review_state"] == "rejected"
    assert details["review"]["note"] == "logo too close to the edge"


def test_the_page_shows_a_decision_made_elsewhere_while_it_was_open(run_out):
    """ana's page is open; bo rejects a variant from his own server; ana approves it and
    another one together on her stale view: nothing is stored, her page shows bo's
    rejection and says who made it; approving it again (now seen) is stored."""
    ids = _renders(run_out)
    first, second = ids[0][0], ids[1][0]
    with (
        review_server(run_out, "--reviewer", "ana") as server,
        review_server(run_out, "--reviewer", "bo") as other,
        sync_playwright() as driver,
    ):
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url)
        page.wait_for_selector(".card img")
        cards = page.locator("#grid .card")
        shown = [cards.nth(i).get_attribute("class") for i in range(2)]

        status, body = other.write(
            [
                {
                    "render_id": first,
                    "sha256": ids[0][2],
                    "decision": "reject",
                    "note": "crop",
                    "seen": _standing(run_out, first),
                }
            ]
        )
        assert status == 200, body
        (rejection,) = json.loads(body)["reviews"]
        before = _reviews(run_out)

        cards.nth(0).locator(".select").check()
        cards.nth(1).locator(".select").check()
        page.click("#approve-selected")
        page.wait_for_selector("#message.error")
        message = page.inner_text("#message")
        assert f"bo rejected {ids[0][1][:12]} at {rejection['reviewed_at'][:10]}" in message
        assert "while you were looking" in message and "look again" in message
        assert message.startswith("not saved")
        assert "state-rejected" in cards.nth(0).get_attribute("class")
        assert "crop" in cards.nth(0).inner_text()
        assert cards.nth(1).get_attribute("class") == shown[1] + " selected"  # as it was
        assert _reviews(run_out) == before
        assert ledger_rows(
            run_out,
            "SELECT decision, reviewer FROM current_reviews WHERE "
            "render_id IN (?, ?) ORDER BY render_id",
            first,
            second,
        )[0] == ("reject", "bo")

        # Now that the page shows bo's rejection, ana's approval overrules it knowingly.
        cards.nth(0).locator("button.approve").click()
        page.wait_for_function(
            "() => document.querySelector('#grid .card').classList.contains('state-approved')"
        )
        assert ledger_rows(
            run_out, "SELECT decision, reviewer FROM current_reviews WHERE render_id = ?", first
        ) == [("approve", "ana")]
        assert errors == []
        browser.close()


# ---------------------------------------------------------------- refusals, over HTTP


@pytest.fixture(scope="module")
def server(run_out) -> Iterator[Server]:
    with review_server(run_out, "--reviewer", "bo") as running:
        status, body = running.request("GET", "/api/run")
        assert status == 200, body
        yield running


def _decision(out: Path, index: int = 0, decision: str = "reset") -> dict:
    """A decision as the page sends it, made on a fresh view (``seen``: the review that
    stands now)."""
    render_id, _, sha256 = _renders(out)[index]
    return {
        "render_id": render_id,
        "sha256": sha256,
        "decision": decision,
        "seen": _standing(out, render_id),
    }


def _standing(out: Path, render_id: int) -> int | None:
    """The id of the review standing for a render's bytes (None: unreviewed)."""
    found = ledger_rows(out, "SELECT review_id FROM current_reviews WHERE render_id = ?", render_id)
    return found[0][0] if found else None


def _reviews(out: Path) -> int:
    return ledger_rows(out, "SELECT COUNT(*) FROM reviews")[0][0]


def test_a_write_with_the_token_and_the_page_origin_is_stored(server):
    before = _reviews(server.out)
    status, body = server.write([_decision(server.out)])
    assert status == 200, body
    assert json.loads(body)["reviews"][0]["reviewer"] == "bo"
    assert _reviews(server.out) == before + 1


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Review-Token": ""},  # no token
        {"X-Review-Token": "not-the-token"},  # a wrong one
        {"Origin": "http://evil.example"},  # another site, with the token
        {"Origin": "null"},  # a sandboxed frame or file://
        {"Origin": ""},  # neither Origin nor Referer
    ],
)
def test_a_write_without_the_token_or_from_another_origin_is_refused(server, headers):
    before = _reviews(server.out)
    status, _ = server.write([_decision(server.out)], **headers)
    assert status == 403
    assert _reviews(server.out) == before


def test_a_referer_from_the_page_counts_as_its_origin(server):
    status, _ = server.write([_decision(server.out)], Origin="", Referer=server.origin + "/")
    assert status == 200
    status, _ = server.write(
        [_decision(server.out)], Origin="", Referer="http://evil.example/" + server.origin
    )
    assert status == 403


def test_another_host_name_is_refused_dns_rebinding(server):
    status, _ = server.request("GET", "/api/run", headers={"Host": "evil.example:80"})
    assert status == 400
    status, _ = server.write([_decision(server.out)], Host="evil.example")
    assert status == 400


def test_request_bodies_are_bounded(server):
    huge = b"{" + b" " * (MAX_BODY + 10) + b"}"
    headers = {
        "Content-Type": "application/json",
        "Origin": server.origin,
        TOKEN_HEADER: server.token,
    }
    assert server.request("POST", "/api/reviews", huge, headers)[0] == 413
    # A body that lies about its length is cut off while it is read.
    chunked = {**headers, "Transfer-Encoding": "chunked", "Content-Length": ""}
    chunks = (
        b"".join(b"%x\r\n%s\r\n" % (4096, b" " * 4096) for _ in range(MAX_BODY // 4096 + 2))
        + b"0\r\n\r\n"
    )
    assert (
        server.request("POST", "/api/reviews", chunks, {k: v for k, v in chunked.items() if v})[0]
        == 413
    )
    too_many = [_decision(server.out)] * 5001
    assert server.write(too_many)[0] in (400, 413)
    assert server.write([{**_decision(server.out), "note": "x" * 2001}])[0] == 400
    assert server.write([{**_decision(server.out), "decision": "maybe"}])[0] == 400
    status, _ = server.request(
        "POST", "/api/reviews", b"{}", {**headers, "Content-Type": "text/plain"}
    )
    assert status == 415


def test_a_decision_about_bytes_that_are_not_the_renders_is_refused(server):
    stale = {**_decision(server.out), "sha256": "0" * 64}
    assert server.write([stale])[0] == 409
    assert server.write([{**_decision(server.out), "render_id": 10**6}])[0] == 404
    assert server.write([{**_decision(server.out), "render_id": 2**63 - 1}])[0] == 404


def _seen_on_the_page(server: Server) -> dict[int, int | None]:
    """What a page loaded now shows: the standing review id of each render (None: none)."""
    status, body = server.request("GET", "/api/run")
    assert status == 200, body
    return {
        variant["render"]["id"]: (variant["render"]["review"] or {}).get("review_id")
        for variant in json.loads(body)["variants"]
    }


def test_a_decision_made_on_a_stale_view_is_refused_with_the_current_state(server):
    """Two reviewers load the page; bo rejects a variant; cy, still on the earlier view,
    approves it: 409 with bo's rejection, and bo's decision stands. A batch holding one
    such decision stores none of it."""
    out = server.out
    with review_server(out, "--reviewer", "cy") as other:
        first, second = _renders(out)[0][0], _renders(out)[1][0]
        seen_by_bo, seen_by_cy = _seen_on_the_page(server), _seen_on_the_page(other)
        assert seen_by_bo == seen_by_cy
        status, body = server.write(
            [{**_decision(out, 0, "reject"), "note": "colour off", "seen": seen_by_bo[first]}]
        )
        assert status == 200, body
        (rejection,) = json.loads(body)["reviews"]
        before = _reviews(out)

        # cy approves both on the stale view: nothing stored, the current state comes back.
        status, body = other.write(
            [
                {**_decision(out, 1, "approve"), "seen": seen_by_cy[second]},
                {**_decision(out, 0, "approve"), "seen": seen_by_cy[first]},
            ]
        )
        assert status == 409, body
        answer = json.loads(body)
        (conflict,) = answer["conflicts"]
        assert conflict["render_id"] == first and conflict["seen"] == seen_by_cy[first]
        assert conflict["review_state"] == "rejected"
        assert {
            key: conflict["review"][key]
            for key in ("review_id", "state", "reviewer", "note", "reviewed_at")
        } == {
            "review_id": rejection["review_id"],
            "state": "rejected",
            "reviewer": "bo",
            "note": "colour off",
            "reviewed_at": rejection["reviewed_at"],
        }
        assert conflict["latest"]["review_id"] == rejection["review_id"]
        assert "while you were looking" in answer["error"]
        assert _reviews(out) == before  # all or nothing: the fresh decision is not stored
        assert _standing(out, first) == rejection["review_id"]
        assert ledger_rows(
            out, "SELECT decision, reviewer FROM current_reviews WHERE render_id = ?", first
        ) == [("reject", "bo")]

        # Having seen the rejection, cy may overrule it; the page says who did.
        status, body = other.write(
            [{**_decision(out, 0, "approve"), "seen": conflict["review"]["review_id"]}]
        )
        assert status == 200, body
        assert ledger_rows(
            out, "SELECT decision, reviewer FROM current_reviews WHERE render_id = ?", first
        ) == [("approve", "cy")]

        # A reset withdraws a decision: a page that still shows it is stale too.
        shown = _standing(out, first)
        assert server.write([_decision(out, 0, "reset")])[0] == 200
        status, body = other.write([{**_decision(out, 0, "reject"), "seen": shown}])
        assert status == 409, body
        (conflict,) = json.loads(body)["conflicts"]
        assert conflict["review"] is None and conflict["review_state"] == "unreviewed"
        assert (conflict["latest"]["decision"], conflict["latest"]["reviewer"]) == ("reset", "bo")


def test_two_reviewers_deciding_at_once_cannot_both_pass(server):
    """The same stale view sent by two servers at the same moment: the check and the
    insert share one ledger transaction, so exactly one is stored and the other is 409."""
    out = server.out
    render_id = _renders(out)[2][0]
    with review_server(out, "--reviewer", "cy") as other:
        for round_ in range(5):
            before = _reviews(out)
            start = threading.Barrier(2)
            sends = [
                (server, _decision(out, 2, "approve"), start),
                (other, _decision(out, 2, "reject"), start),
            ]
            with ThreadPoolExecutor(2) as pool:
                statuses = sorted(pool.map(_send_at_once, sends))
            assert statuses == [200, 409], round_
            assert _reviews(out) == before + 1
            assert _standing(out, render_id) == max(ledger_rows(out, "SELECT id FROM reviews"))[0]


def _send_at_once(send: tuple[Server, dict, threading.Barrier]) -> int:
    target, decision, start = send
    start.wait()
    return target.write([decision])[0]


@pytest.mark.parametrize(
    "change",
    [
        {"seen": True},  # a bool is not a review id
        {"seen": 2**63},  # beyond SQLite's integers
        {"seen": "1"},
        {"seen": 1.0},
        {"seen": 0},
        {"seen": [1]},
        {"render_id": 2**63},
        {"render_id": -(2**70)},
        {"render_id": True},
        {"note": "\ud800"},  # a lone surrogate (sent as a JSON escape)
    ],
)
def test_malformed_decisions_are_refused_with_400(server, change):
    before = _reviews(server.out)
    status, body = server.write([{**_decision(server.out), **change}])
    assert status == 400, body
    assert "error" in json.loads(body)
    assert _reviews(server.out) == before


def test_a_decision_must_say_which_review_it_saw(server):
    decision = _decision(server.out)
    del decision["seen"]
    status, body = server.write([decision])
    assert status == 400 and b"seen" in body


def test_a_body_nested_too_deep_is_refused_with_400(server):
    headers = {
        "Content-Type": "application/json",
        "Origin": server.origin,
        TOKEN_HEADER: server.token,
    }
    for body in (
        b"[" * 100_000,
        b'{"decisions": ' + b"[" * 100_000,
        b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
    ):
        assert len(body) < MAX_BODY
        status, answer = server.request("POST", "/api/reviews", body, headers)
        assert status == 400, answer
    assert server.request("GET", "/api/run")[0] == 200


def test_oversized_heads_and_odd_lengths_are_refused_with_4xx(server):
    # A 100 KB header arrives whole in one read (h11 bounds only an unfinished head).
    status, answer = server.request("GET", "/api/run", headers={"X-Padding": "a" * 100_000})
    assert status == 431, answer
    status, _ = server.request("GET", "/api/run?" + "q" * 20_000)
    assert status == 431
    headers = {
        "Content-Type": "application/json",
        "Origin": server.origin,
        TOKEN_HEADER: server.token,
    }
    for length in ("\u00b2", "-1", "1e3"):  # a superscript two is "a digit" to Python
        status, _ = server.request(
            "POST", "/api/reviews", b"[]", {**headers, "Content-Length": length}
        )
        assert 400 <= status < 500, length
    assert server.request("GET", "/api/run")[0] == 200


def test_only_recorded_files_inside_the_output_folder_are_served(server, tmp_path):
    out = server.out
    _, _, sha256 = _renders(out)[0]
    assert server.request("GET", f"/files/{sha256}")[0] == 200
    assert server.request("GET", f"/thumbs/{sha256}/128")[0] == 200
    # Paths never name files: traversal, absolute paths and unknown hashes are all 404.
    for path in (
        "/files/../ledger.sqlite",
        "/files/%2e%2e%2fledger.sqlite",
        "/files/" + "0" * 64,
        "/files//etc/passwd",
        "/thumbs/" + sha256 + "/100",
        "/static/../review.py",
        "/ledger.sqlite",
        "/ship/report.html",
    ):
        assert server.request("GET", path)[0] == 404, path
    # A file of the ledger whose bytes changed is no longer served.
    (export_path, export_sha), *_ = ledger_rows(out, "SELECT path, sha256 FROM exports")
    exported = out / export_path
    original = exported.read_bytes()
    try:
        exported.write_bytes(original + b"x")
        assert server.request("GET", f"/files/{export_sha}")[0] == 404
        # A symlink out of the output folder is not followed, even to the right bytes.
        outside = tmp_path / exported.name
        outside.write_bytes(original)
        exported.unlink()
        exported.symlink_to(outside)
        assert server.request("GET", f"/files/{export_sha}")[0] == 404
    finally:
        exported.unlink()
        exported.write_bytes(original)
    assert server.request("GET", f"/files/{export_sha}")[0] == 200
    # A link planted in the thumbnail cache is not served; the thumbnail is made anew.
    planted = out / FOLDER / f"{sha256}-512.webp"
    planted.parent.mkdir(exist_ok=True)
    planted.unlink(missing_ok=True)
    planted.symlink_to("/etc/passwd")
    status, body = server.request("GET", f"/thumbs/{sha256}/512")
    assert status == 200 and body.startswith(b"RIFF") and b"root:" not in body
    # Brand references live outside the output folder: thumbnails only.
    (references,) = ledger_rows(out, "SELECT input_files_json FROM renders LIMIT 1")
    reference = next(entry for entry in json.loads(references[0]) if entry["role"] == "reference")
    assert server.request("GET", f"/files/{reference['sha256']}")[0] == 404
    assert server.request("GET", f"/thumbs/{reference['sha256']}/256")[0] == 200


def test_every_response_carries_the_security_headers(server):
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("GET", "/")
    response = connection.getresponse()
    response.read()
    assert "script-src 'self'" in response.getheader("content-security-policy")
    assert "frame-ancestors 'none'" in response.getheader("content-security-policy")
    assert response.getheader("x-content-type-options") == "nosniff"
    assert response.getheader("referrer-policy") == "no-referrer"
    connection.close()


def test_a_render_running_meanwhile_shows_on_reload_and_a_regate_too(server, run_out):
    """The page reads the ledger on every load: a render that is running adds its images,
    and the same bytes keep their reviews; a re-gated run shows its new decisions."""
    project_root = run_out.parent / "project"
    before = json.loads(server.request("GET", "/api/run")[1])
    approved = {
        v["render"]["variant_id"]
        for v in before["variants"]
        if v["render"]["review_state"] == "approved"
    }
    grown = shipping_project(project_root, seeds=(1, 2, 3, 4, 5), hostile=True)
    rendering = subprocess.Popen(
        [str(CAMPAIGN_BIN), "render", str(grown.campaign_path), "--out", str(run_out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    while rendering.poll() is None:  # the page keeps working while the render runs
        status, body = server.request("GET", "/api/run")
        assert status == 200
        seen.append(json.loads(body)["run"]["id"])
    assert rendering.returncode == 0 and seen, rendering.stderr.read()
    after = json.loads(server.request("GET", "/api/run")[1])
    assert after["run"]["id"] != before["run"]["id"] and len(after["variants"]) == 5
    assert {
        v["render"]["variant_id"]
        for v in after["variants"]
        if v["render"]["review_state"] == "approved"
    } == approved
    assert after["variants"][4]["render"]["review_state"] == "unreviewed"
    done = subprocess.run(
        [str(CAMPAIGN_BIN), "gate", "--out", str(run_out), "--set", "palette_adherence=off"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    regated = json.loads(server.request("GET", "/api/run")[1])
    assert {v["render"]["status"] for v in regated["variants"]} == {"pass"}
    assert regated["run"]["regatings"] == 1


def test_another_host_is_bound_only_when_asked_and_then_warns(run_out):
    process = subprocess.Popen(
        [str(CAMPAIGN_BIN), "review", "--out", str(run_out), "--port", "0", "--host", "127.0.0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.2:")
        server = Server(url, run_out)
        assert server.request("GET", "/api/run")[0] == 200
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert "warning: --host 127.0.0.2" in stderr
    busy = subprocess.run(
        [str(CAMPAIGN_BIN), "review", "--out", str(run_out / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert busy.returncode == 2 and "no ledger here" in busy.stderr
