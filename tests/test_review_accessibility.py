"""The review page for a keyboard and a screen reader: axe-core (Deque's accessibility
engine, pinned in tests/js/package.json) finds nothing on the grid or in the open viewer,
and the viewer takes focus, keeps it and gives it back (README, "campaign review").

The run and the server are test_review's: 4 variants of the small demo campaign."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from . import test_review
from .conftest import REPO
from .test_review import CHROMIUM, CHROMIUM_ARGS, review_server

run_out = test_review.run_out  # the same module-scoped fixture: a run of its own here

AXE = REPO / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"
# One lap of Tab through the open viewer, from the dialog itself: the title is text, the
# "another variant" select and the side pane show only when comparing.
VIEWER_TABS = [
    "lb-compare",
    "zoom-out",
    "zoom-in",
    "zoom-fit",
    "zoom-one",
    "lb-approve",
    "lb-reject",
    "lb-reset",
    "lb-prev",
    "lb-next",
    "lb-close",
    "viewport",
    "lb-info",
]
ACTIVE = "() => { const a = document.activeElement; return a.id || a.className || a.tagName; }"
IN_VIEWER = "() => document.activeElement.closest('#lightbox') !== null"
ACTIVE_CARD = "() => document.activeElement.closest('.card')?.dataset.index ?? null"


def with_axe(page: Page) -> Page:
    """axe-core in every document the page loads. An init script, not a <script> tag: the
    review page's Content-Security-Policy runs only its own scripts."""
    page.add_init_script(path=str(AXE))
    return page


def axe_violations(page: Page) -> list[str]:
    """Each violation axe-core finds in the page as it is now, whatever its impact (minor to
    critical): rule id, impact, what the rule wants and the selectors of the nodes."""
    found = page.evaluate(
        "() => axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map("
        "v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target)})))"
    )
    return [f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes']}" for v in found]


@contextmanager
def review_page(out: Path) -> Iterator[tuple[Page, list[str]]]:
    """The review page of the run in ``out``, loaded, with axe-core in it; and the script
    errors it raises."""
    with review_server(out, "--reviewer", "ana") as server, sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = with_axe(browser.new_page(viewport={"width": 1280, "height": 860}))
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url)
        page.wait_for_selector("#grid .card img")
        yield page, errors
        browser.close()


def _viewer_shows(page: Page, index: int) -> None:
    page.wait_for_selector("#lightbox", state="visible")
    variant = page.get_attribute(f"#grid .card >> nth={index}", "data-variant")
    page.wait_for_function(
        "v => document.getElementById('lb-title').textContent.startsWith(v.slice(0, 12))"
        " && document.getElementById('lb-image').complete"
        " && document.getElementById('lb-image').naturalWidth > 0",
        arg=variant,
    )


def test_axe_finds_nothing_on_the_grid_or_in_the_viewer(run_out):
    with review_page(run_out) as (page, errors):
        seen = {"grid": axe_violations(page)}
        page.locator("#grid .card").nth(0).focus()
        page.keyboard.press("Enter")
        _viewer_shows(page, 0)
        seen["viewer"] = axe_violations(page)
        page.keyboard.press("+")
        page.keyboard.press("+")  # the image outgrows its pane: it scrolls
        assert page.evaluate(
            "() => { const v = document.querySelector('#lightbox .viewport');"
            " return v.scrollWidth > v.clientWidth; }"
        )
        seen["zoomed"] = axe_violations(page)
        for mode in ("references", "variant", "exports"):
            page.select_option("#lb-compare", mode)
            page.wait_for_function(
                "() => { const s = Array.from(document.querySelectorAll('#lb-side img'));"
                " return s.length > 0 && s.every(i => i.complete && i.naturalWidth > 0); }"
            )
            seen[f"compared with {mode}"] = axe_violations(page)
        page.click("#lb-reject")
        page.wait_for_selector("#note-dialog[open]")
        seen["reject note over the viewer"] = axe_violations(page)
        page.keyboard.press("Escape")
        page.wait_for_selector("#note-dialog:not([open])", state="attached")
        assert page.evaluate(IN_VIEWER)  # the note closed; the viewer still holds focus
        found = [f"{name}: {line}" for name, lines in seen.items() for line in lines]
        assert found == [], "axe-core found:\n" + "\n".join(found)
        assert errors == []


def test_the_viewer_takes_focus_keeps_it_and_gives_it_back(run_out):
    with review_page(run_out) as (page, errors):
        cards = page.locator("#grid .card")
        cards.nth(1).focus()
        page.keyboard.press("Enter")
        _viewer_shows(page, 1)
        assert page.evaluate(IN_VIEWER), page.evaluate(ACTIVE)
        assert page.evaluate(ACTIVE) == "lightbox"  # the dialog itself, named by its title:
        variant = cards.nth(1).get_attribute("data-variant")
        assert page.get_by_role("dialog", name=variant[:12]).count() == 1

        # Shift+Tab from the dialog goes to its last stop; Tab walks its controls and wraps;
        # Shift+Tab walks them back.
        page.keyboard.press("Shift+Tab")
        assert page.evaluate(ACTIVE) == VIEWER_TABS[-1]
        laps = 2
        forward = []
        for _ in range(laps * len(VIEWER_TABS)):
            page.keyboard.press("Tab")
            assert page.evaluate(IN_VIEWER), (forward, page.evaluate(ACTIVE))
            forward.append(page.evaluate(ACTIVE))
        assert forward == VIEWER_TABS * laps
        backward = []
        for _ in range(laps * len(VIEWER_TABS)):
            page.keyboard.press("Shift+Tab")
            assert page.evaluate(IN_VIEWER), (backward, page.evaluate(ACTIVE))
            backward.append(page.evaluate(ACTIVE))
        assert backward == (VIEWER_TABS[-2::-1] + VIEWER_TABS[-1:]) * laps

        # Esc closes it and the card that opened it has focus again.
        page.keyboard.press("Escape")
        page.wait_for_selector("#lightbox", state="hidden")
        assert page.evaluate(ACTIVE_CARD) == "1"

        # The viewer's shortcuts work with focus inside it: zoom, next, approve; Esc then
        # lands on the card of the variant it showed last.
        page.keyboard.press("Enter")
        _viewer_shows(page, 1)
        fitted = page.inner_text("#zoom-shown")
        page.keyboard.press("+")
        assert fitted.startswith("fit ") and page.inner_text("#zoom-shown") != fitted
        page.keyboard.press("ArrowRight")
        _viewer_shows(page, 2)
        page.keyboard.press("a")
        page.wait_for_function(
            "() => document.getElementById('lb-title').textContent.endsWith('approved')"
        )
        assert page.evaluate(IN_VIEWER)  # the decision redrew the grid; focus stayed
        # ↑ ↓ scroll the focused region (here the details), as they would anywhere else.
        page.focus("#lb-info")
        page.keyboard.press("ArrowDown")
        page.wait_for_function("() => document.getElementById('lb-info').scrollTop > 0")
        page.keyboard.press("Escape")
        page.wait_for_selector("#lightbox", state="hidden")
        assert page.evaluate(ACTIVE_CARD) == "2"
        assert "state-approved" in cards.nth(2).get_attribute("class")

        # The close button, pressed from the keyboard, does the same.
        page.keyboard.press("Enter")
        _viewer_shows(page, 2)
        page.focus("#lb-close")
        page.keyboard.press("Enter")
        page.wait_for_selector("#lightbox", state="hidden")
        assert page.evaluate(ACTIVE_CARD) == "2"

        # Enter on a card's own button presses it: it does not open the viewer.
        cards.nth(3).locator("button.approve").focus()
        page.keyboard.press("Enter")
        page.wait_for_function(
            "() => document.querySelectorAll('#grid .card')[3].classList.contains('state-approved')"
        )
        assert not page.evaluate("() => document.getElementById('lightbox').open")
        assert errors == []
