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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import sync_playwright

from renderer.review import MAX_BODY, TOKEN_HEADER
from renderer.thumbnails import FOLDER

from .conftest import CAMPAIGN_BIN, REPO, ledger_rows
from .shipping_support import HOSTILE_NAME, render, shipping_project

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
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

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        parts = urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            headers = dict(headers or {})
            connection.putrequest(method, path, skip_host="Host" in headers,
                                  skip_accept_encoding=True)
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
        sent = {"Content-Type": "application/json", "Origin": self.origin,
                "X-Review-Token": self.token, **headers}
        return self.request("POST", "/api/reviews", json.dumps({"decisions": decisions})
                            .encode(), {key: value for key, value in sent.items() if value})


@contextmanager
def review_server(out: Path, *args: str) -> Iterator[Server]:
    """The real `campaign review` on a free port; stopped with Ctrl-C (SIGINT)."""
    process = subprocess.Popen(
        [str(CAMPAIGN_BIN), "review", "--out", str(out), "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
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
        page.on("console", lambda message: errors.append(message.text)
                if message.type == "error" else None)
        page.goto(server.url)
        page.wait_for_selector(".card img")
        cards = page.locator("#grid .card")
        assert cards.count() == 4
        # Campaign axis order: seeds 1..4, as planned.
        assert [cards.nth(i).get_attribute("data-variant") for i in range(4)] == \
            [variant for _, variant, _ in ids]
        # The hostile prompt is text, and never ran.
        assert page.evaluate("() => window.__pwned") is None
        assert page.evaluate("() => document.documentElement.getAttribute('data-pwned')") is None
        assert HOSTILE_NAME in cards.nth(0).inner_text()

        # Two approvals by click, one by keyboard, one rejection with a note.
        cards.nth(0).locator("button.approve").click()
        page.wait_for_selector('#grid .card.state-approved >> nth=0')
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
        page.wait_for_selector("#lightbox:not([hidden])")
        page.wait_for_function("() => document.getElementById('lb-image').naturalWidth > 0")
        assert page.get_attribute("#lb-image", "src") == f"/files/{ids[3][2]}"
        page.select_option("#lb-compare", "references")
        page.wait_for_function("() => Array.from(document.querySelectorAll('#lb-side img'))"
                               ".every(i => i.complete && i.naturalWidth > 0)")
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
            "#grid .card", "cards => cards.map(c => c.querySelector('.badge.approved, "
            ".badge.rejected, .badge.unreviewed').textContent)")
        assert states == ["approved", "approved", "approved", "rejected"]
        assert "logo too close to the edge" in cards.nth(3).inner_text()
        page.screenshot(path=str(tmp_path / "grid.png"))
        assert page.inner_text("#reviews").split() == \
            ["approved", "3", "rejected", "1", "to", "review", "0"]

        assert errors == []  # no script error, no failed load, until the refusals below
        # From the page itself: a write without the token, a path outside the folder.
        status = page.evaluate("""() => fetch('/api/reviews', {method: 'POST',
            headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({decisions: []})}).then(r => r.status)""")
        assert status == 403
        assert page.evaluate("() => fetch('/files/..%2F..%2Fledger.sqlite')"
                             ".then(r => r.status)") == 404
        assert page.evaluate("() => fetch('/static/..%2Freview.py').then(r => r.status)") == 404
        browser.close()
        if os.environ.get("CAMPAIGN_UPDATE_DOCS") == "1":  # README's screenshots, on request
            for name in ("grid", "lightbox"):
                (DOCS / f"review-{name}.png").write_bytes((tmp_path / f"{name}.png").read_bytes())

    rows = ledger_rows(run_out, "SELECT render_id, sha256, decision, reviewer, note FROM "
                       "reviews ORDER BY id")
    assert rows == [(render_id, sha, decision, "ana", note) for (render_id, _, sha), decision,
                    note in zip(ids, ["approve", "approve", "approve", "reject"],
                                ["", "", "", "logo too close to the edge"], strict=True)]
    assert ledger_rows(run_out, "SELECT decision FROM current_reviews ORDER BY render_id") == \
        [("approve",), ("approve",), ("approve",), ("reject",)]
    # Thumbnails were made once, by content and size, in the output folder.
    thumbnails = sorted(path.name for path in (run_out / FOLDER).iterdir())
    assert thumbnails and all(name.endswith(".webp") for name in thumbnails)
    # Stopping the server rewrote the run's report with the reviews.
    (report,) = (run_out / "ship").glob("report-*.html")
    assert "approved by ana" in report.read_text() and "logo too close" in report.read_text()
    # history and show say the same.
    details = json.loads(subprocess.run(
        [str(CAMPAIGN_BIN), "show", ids[3][1], "--out", str(run_out), "--json"],
        capture_output=True, text=True, check=True).stdout)
    assert details["review_state"] == "rejected"
    assert details["review"]["note"] == "logo too close to the edge"


# ---------------------------------------------------------------- refusals, over HTTP


@pytest.fixture(scope="module")
def server(run_out) -> Iterator[Server]:
    with review_server(run_out, "--reviewer", "bo") as running:
        status, body = running.request("GET", "/api/run")
        assert status == 200, body
        yield running


def _decision(out: Path, index: int = 0, decision: str = "reset") -> dict:
    render_id, _, sha256 = _renders(out)[index]
    return {"render_id": render_id, "sha256": sha256, "decision": decision}


def _reviews(out: Path) -> int:
    return ledger_rows(out, "SELECT COUNT(*) FROM reviews")[0][0]


def test_a_write_with_the_token_and_the_page_origin_is_stored(server):
    before = _reviews(server.out)
    status, body = server.write([_decision(server.out)])
    assert status == 200, body
    assert json.loads(body)["reviews"][0]["reviewer"] == "bo"
    assert _reviews(server.out) == before + 1


@pytest.mark.parametrize("headers", [
    {"X-Review-Token": ""},                          # no token
    {"X-Review-Token": "not-the-token"},             # a wrong one
    {"Origin": "http://evil.example"},               # another site, with the token
    {"Origin": "null"},                              # a sandboxed frame or file://
    {"Origin": ""},                                  # neither Origin nor Referer
])
def test_a_write_without_the_token_or_from_another_origin_is_refused(server, headers):
    before = _reviews(server.out)
    status, _ = server.write([_decision(server.out)], **headers)
    assert status == 403
    assert _reviews(server.out) == before


def test_a_referer_from_the_page_counts_as_its_origin(server):
    status, _ = server.write([_decision(server.out)], Origin="",
                             Referer=server.origin + "/")
    assert status == 200
    status, _ = server.write([_decision(server.out)], Origin="",
                             Referer="http://evil.example/" + server.origin)
    assert status == 403


def test_another_host_name_is_refused_dns_rebinding(server):
    status, _ = server.request("GET", "/api/run", headers={"Host": "evil.example:80"})
    assert status == 400
    status, _ = server.write([_decision(server.out)], Host="evil.example")
    assert status == 400


def test_request_bodies_are_bounded(server):
    huge = b"{" + b" " * (MAX_BODY + 10) + b"}"
    headers = {"Content-Type": "application/json", "Origin": server.origin,
               TOKEN_HEADER: server.token}
    assert server.request("POST", "/api/reviews", huge, headers)[0] == 413
    # A body that lies about its length is cut off while it is read.
    chunked = {**headers, "Transfer-Encoding": "chunked", "Content-Length": ""}
    chunks = b"".join(b"%x\r\n%s\r\n" % (4096, b" " * 4096)
                      for _ in range(MAX_BODY // 4096 + 2)) + b"0\r\n\r\n"
    assert server.request("POST", "/api/reviews", chunks,
                          {k: v for k, v in chunked.items() if v})[0] == 413
    too_many = [_decision(server.out)] * 5001
    assert server.write(too_many)[0] in (400, 413)
    assert server.write([{**_decision(server.out), "note": "x" * 2001}])[0] == 400
    assert server.write([{**_decision(server.out), "decision": "maybe"}])[0] == 400
    status, _ = server.request("POST", "/api/reviews", b"{}", {**headers,
                                                               "Content-Type": "text/plain"})
    assert status == 415


def test_a_decision_about_bytes_that_are_not_the_renders_is_refused(server):
    stale = {**_decision(server.out), "sha256": "0" * 64}
    assert server.write([stale])[0] == 409
    assert server.write([{**_decision(server.out), "render_id": 10 ** 6}])[0] == 404


def test_only_recorded_files_inside_the_output_folder_are_served(server, tmp_path):
    out = server.out
    _, _, sha256 = _renders(out)[0]
    assert server.request("GET", f"/files/{sha256}")[0] == 200
    assert server.request("GET", f"/thumbs/{sha256}/128")[0] == 200
    # Paths never name files: traversal, absolute paths and unknown hashes are all 404.
    for path in ("/files/../ledger.sqlite", "/files/%2e%2e%2fledger.sqlite",
                 "/files/" + "0" * 64, "/files//etc/passwd", "/thumbs/" + sha256 + "/100",
                 "/static/../review.py", "/ledger.sqlite", "/ship/report.html"):
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
    reference = next(entry for entry in json.loads(references[0])
                     if entry["role"] == "reference")
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
    approved = {v["render"]["variant_id"] for v in before["variants"]
                if v["render"]["review_state"] == "approved"}
    grown = shipping_project(project_root, seeds=(1, 2, 3, 4, 5), hostile=True)
    rendering = subprocess.Popen([str(CAMPAIGN_BIN), "render", str(grown.campaign_path),
                                  "--out", str(run_out)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    seen = []
    while rendering.poll() is None:  # the page keeps working while the render runs
        status, body = server.request("GET", "/api/run")
        assert status == 200
        seen.append(json.loads(body)["run"]["id"])
    assert rendering.returncode == 0 and seen, rendering.stderr.read()
    after = json.loads(server.request("GET", "/api/run")[1])
    assert after["run"]["id"] != before["run"]["id"] and len(after["variants"]) == 5
    assert {v["render"]["variant_id"] for v in after["variants"]
            if v["render"]["review_state"] == "approved"} == approved
    assert after["variants"][4]["render"]["review_state"] == "unreviewed"
    done = subprocess.run([str(CAMPAIGN_BIN), "gate", "--out", str(run_out), "--set",
                           "palette_adherence=off"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    regated = json.loads(server.request("GET", "/api/run")[1])
    assert {v["render"]["status"] for v in regated["variants"]} == {"pass"}
    assert regated["run"]["regatings"] == 1


def test_another_host_is_bound_only_when_asked_and_then_warns(run_out):
    process = subprocess.Popen(
        [str(CAMPAIGN_BIN), "review", "--out", str(run_out), "--port", "0", "--host",
         "127.0.0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.2:")
        server = Server(url, run_out)
        assert server.request("GET", "/api/run")[0] == 200
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert "warning: --host 127.0.0.2" in stderr
    busy = subprocess.run([str(CAMPAIGN_BIN), "review", "--out", str(run_out / "nowhere")],
                          capture_output=True, text=True)
    assert busy.returncode == 2 and "no ledger here" in busy.stderr
