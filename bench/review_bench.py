"""Review page first paint for a 1,000-variant run (issue: review and delivery).

The run is the demo grown to 1,000 variants (bench/ledger_bench.py's campaign: 5 products
x 4 backgrounds x 5 aspect ratios x 10 seeds, logo on) at a 512-pixel short side, without
retouch, text or exports, populated through the real execute path with the diffusers
pipeline and CLIP stubbed (flat images, fixed scores), as ledger_bench.py does.

Timed, with the real ``campaign review`` in its own process and headless Chromium (Debian's,
driven by Playwright) in a fresh browser context each time (no browser cache):

* ``/api/run`` alone (the ledger read and the JSON of 1,000 variants);
* first paint: from navigation until every card image in the first screen (1280x800) has
  loaded — the page, its script, the run's data and the first screen of thumbnails;
* the same a second time: the thumbnails are now cached in OUT/.thumbnails/.

Usage: python bench/review_bench.py [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.ledger_bench import CAMPAIGN_BIN, populate_with_stubs, thousand_variant_campaign  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
FIRST_SCREEN = """() => {
  const cards = Array.from(document.querySelectorAll('#grid .card img'));
  const inView = cards.filter(img => img.getBoundingClientRect().top < innerHeight);
  return inView.length > 0 && inView.every(img => img.complete && img.naturalWidth > 0)
    ? inView.length : 0;
}"""


def campaign_at(folder: Path, short_side: int) -> Path:
    path = thousand_variant_campaign(folder)
    campaign = yaml.safe_load(path.read_text())
    campaign["size"] = {"axis": "aspect", "short_side": short_side}
    campaign.pop("postprocess", None)
    path.write_text(yaml.safe_dump(campaign, sort_keys=False))
    return path


def first_paint(driver, url: str) -> tuple[float, int, list[str]]:
    browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        thumbs: list[str] = []
        page.on(
            "request",
            lambda request: (
                thumbs.append(request.url)
                if "/thumbs/" in request.url or "/files/" in request.url
                else None
            ),
        )
        started = time.perf_counter()
        page.goto(url)
        shown = page.wait_for_function(FIRST_SCREEN, timeout=300_000).json_value()
        return time.perf_counter() - started, shown, thumbs
    finally:
        browser.close()


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="/api/run timings")
    parser.add_argument("--short-side", type=int, default=512)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory(prefix="review-bench-") as temp:
        folder = Path(temp)
        out = folder / "out"
        populated = populate_with_stubs(campaign_at(folder, args.short_side), out)
        server = subprocess.Popen(
            [str(CAMPAIGN_BIN), "review", "--out", str(out), "--port", "0", "--reviewer", "bench"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            url = server.stdout.readline().strip()
            base = url.split("/#", 1)[0]
            api = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                with urllib.request.urlopen(base + "/api/run") as response:
                    body = response.read()
                api.append(time.perf_counter() - started)
            variants = len(json.loads(body)["variants"])
            with sync_playwright() as driver:
                cold, shown, requested = first_paint(driver, url)
                cached = len(list((out / ".thumbnails").glob("*.webp")))
                warm, _, _ = first_paint(driver, url)
        finally:
            server.terminate()
            server.wait(timeout=60)
    result = {
        "variants": variants,
        "short_side": args.short_side,
        "populated_s": round(populated, 1),
        "api_run_s": [round(s, 3) for s in api],
        "api_run_bytes": len(body),
        "first_paint_cold_s": round(cold, 3),
        "first_paint_cached_s": round(warm, 3),
        "first_screen_images": shown,
        "image_requests_cold": len(requested),
        "thumbnails_cached_after_first_load": cached,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    print(
        f"review page of a {variants}-variant run: /api/run {statistics.median(api):.2f} s "
        f"({len(body) / 1e6:.1f} MB); first paint with {shown} thumbnails {cold:.2f} s cold "
        f"(made {cached} thumbnails), {warm:.2f} s cached",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
