"""The report as a person sees it: opened in headless Chromium (Debian's ``chromium``)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import re
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from postprocess.gate_rules import FAIL, PASS, REVIEW
from postprocess.report_page import (
    RecipeComparison,
    ReportGrid,
    ReportRow,
    ReportRun,
    report_html,
)

from .test_review import CHROMIUM_ARGS
from .test_review_accessibility import axe_violations, with_axe

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# Either would leave a trace if the prompt ran as code: a window property and a DOM mark.
HOSTILE_PROMPT = (
    "<script>window.__pwned=1;document.documentElement.setAttribute('data-pwned','1')</script>"
    " a bottle"
)
RUN = ReportRun(
    run_id="run-9",
    campaign="browser check",
    created_at="2026-01-01T00:00:00+00:00",
    counts={"passed": 1, "review": 1, "failed": 1},
    thresholds={"clip_brand": "min 0.200"},
)
# The page under test, framed by a driver page that clicks like a person and writes what
# it saw into its own DOM, which --dump-dom prints.
DRIVER = """<!DOCTYPE html><html><body>
<iframe id="report" src="report.html" width="1200" height="800"></iframe>
<script>
document.getElementById("report").addEventListener("load", function () {
  var page = this.contentWindow, doc = this.contentDocument;
  function order() {
    return Array.prototype.map.call(doc.querySelectorAll("#variants tbody tr"), function (r) {
      return r.hidden ? "-" : r.cells[1].textContent;
    }).join(",");
  }
  var seen = {pwned: String(page.__pwned), initial: order()};
  doc.querySelector('button.sort[data-column="6"]').click();
  seen.ascending = order();
  doc.querySelector('button.sort[data-column="6"]').click();
  seen.descending = order();
  var failed = doc.querySelector('#status-filter input[value="fail"]');
  failed.checked = true;
  failed.dispatchEvent(new Event("change"));
  seen.failed = order();
  Object.keys(seen).forEach(function (key) {
    document.body.setAttribute("data-" + key, seen[key]);
  });
});
</script></body></html>
"""


def row(letter, status, clip_prompt, prompt="a bottle", reasons=()):
    return ReportRow(
        variant_id=letter * 64,
        image_relpath=f"images/{letter}.png",
        axes={"product": "bottle"},
        prompt=prompt,
        seed=1,
        width=64,
        height=64,
        scores={"clip_prompt": clip_prompt, "clip_brand": 0.3},
        status=status,
        reasons=reasons,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser")
    (out / "images").mkdir()
    for letter, colour in zip("abc", ("#2A9D8F", "#F26B1D", "#1D3557"), strict=True):
        Image.new("RGB", (64, 64), colour).save(out / "images" / f"{letter}.png")
    rows = [
        row("a", PASS, 0.30),
        row("b", FAIL, 0.10, HOSTILE_PROMPT, ("clip_prompt 0.100 < min 0.200",)),
        row("c", REVIEW, 0.20, reasons=("faces 1.000 > max 0.000",)),
    ]
    (out / "report.html").write_text(report_html(RUN, rows), encoding="utf-8")
    (out / "driver.html").write_text(DRIVER, encoding="utf-8")
    return out


def chromium(tmp_path, *args):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    done = subprocess.run(
        command,
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_one_row_per_variant_failed_marked_and_the_prompt_shown_not_run(report, tmp_path):
    dom = chromium(tmp_path, "--dump-dom", (report / "report.html").as_uri())

    classes = re.findall(r'<tr data-status="(\w+)"(?: class="(\w+)")?>', dom)
    assert classes == [("pass", ""), ("fail", "failed"), ("review", "review")]
    assert "data-pwned" not in re.search(r"<html[^>]*>", dom).group(0)
    assert "&lt;script&gt;window.__pwned=1;" in dom  # there, as text


def test_sorting_and_filtering_work_and_the_prompt_never_executes(report, tmp_path):
    dom = chromium(
        tmp_path,
        "--allow-file-access-from-files",  # lets the driver page reach into the report
        "--virtual-time-budget=5000",
        "--dump-dom",
        (report / "driver.html").as_uri(),
    )
    body = dict(re.findall(r'data-(\w+)="([^"]*)"', re.search(r"<body[^>]*>", dom).group(0)))
    short = {letter: letter * 12 for letter in "abc"}
    assert body["pwned"] == "undefined"
    assert body["initial"] == ",".join(short[x] for x in "abc")
    assert body["ascending"] == ",".join(short[x] for x in "bca")
    assert body["descending"] == ",".join(short[x] for x in "acb")
    assert body["failed"] == ",".join(["-", "-", short["b"]])  # hidden rows keep their place


def test_screenshot_shows_the_rendered_report(report, tmp_path):
    shot = tmp_path / "report.png"
    chromium(
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1280,800",
        (report / "report.html").as_uri(),
    )

    with Image.open(shot) as image:
        assert image.size == (1280, 800)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # not a blank page
    fail_badge = np.all(np.abs(pixels.astype(int) - (0xFB, 0xE0, 0xDE)) <= 2, axis=-1)
    assert fail_badge.sum() > 50  # the failed row's badge is drawn
    thumbnail_teal = np.all(np.abs(pixels.astype(int) - (0x2A, 0x9D, 0x8F)) <= 2, axis=-1)
    assert thumbnail_teal.sum() > 1000  # the images load through their relative paths


def test_axe_finds_nothing_on_the_report(report):
    """Every part the page can show: a reviewed row, a failed one, the recipes compared and
    a grid. axe-core as in tests/test_review_accessibility.py."""
    rows = [
        replace(
            row("a", PASS, 0.30),
            review="approved",
            review_by="ana",
            review_at="2026-01-02T00:00:00+00:00",
            review_note="crop is fine",
        ),
        row("b", FAIL, 0.10, HOSTILE_PROMPT, ("clip_prompt 0.100 < min 0.200",)),
    ]
    compared = [
        RecipeComparison(
            recipe=recipe,
            family="sd15",
            variants=1,
            counts={"passed": 1, "review": 0, "failed": 0},
            scores={"clip_prompt": (0.3, 0.01)},
            consistency_within=0.9,
            consistency_across=0.8,
            seconds_per_image=1.5,
            usd_per_1000={"H100": 0.2},
        )
        for recipe in ("matte@1", "gloss@2")
    ]
    page_path = report / "full.html"
    grid = ReportGrid("images/c.png", "product × seed")
    page_path.write_text(report_html(RUN, rows, [grid], compared), encoding="utf-8")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = with_axe(browser.new_page(viewport={"width": 1280, "height": 800}))
        page.goto(page_path.as_uri())
        assert page.locator("#comparison").count() == 1 and page.locator("figure.grid").count()
        found = axe_violations(page)
        browser.close()
    assert found == [], "axe-core found:\n" + "\n".join(found)
