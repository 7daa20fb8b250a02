import os

os.environ["HF_HUB_OFFLINE"] = "1"

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageColor

from postprocess.text import MIN_CONTRAST, contrast_ratio, overlay_text, relative_luminance
from postprocess.text_layout import FontStack, TextBlock
from tests.synthetic import busy_background

KESTREL_PALETTE = ["#F26B1D", "#1D3557", "#F1FAEE", "#2A9D8F"]
HEADLINE = TextBlock("Fly further with Kestrel: the spring range")
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
DEJAVU_BOOK = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # fonts-dejavu-core
LEGAL = "Offer valid in participating stores while stocks last. Terms apply; see the site."


def measured_contrast(result_image, colour_hex, percentile=5):
    """Independent of overlay_text: the WCAG ratio of the text colour against the result's
    pixels in a thin ring around the glyphs (pixels exactly of the text colour)."""
    pixels = np.asarray(result_image)
    colour = np.array(ImageColor.getrgb(colour_hex))
    glyphs = np.all(pixels == colour, axis=-1).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    ring = cv2.dilate(glyphs, kernel, iterations=4) & ~cv2.dilate(glyphs, kernel, iterations=2)
    behind = relative_luminance(pixels[ring.astype(bool)])
    text = relative_luminance(colour)
    ratios = (np.maximum(behind, text) + 0.05) / (np.minimum(behind, text) + 0.05)
    return float(np.percentile(ratios, percentile))


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ((0, 0, 0), (255, 255, 255), 21.0),
        ((255, 255, 255), (255, 255, 255), 1.0),
        ((0x77, 0x77, 0x77), (255, 255, 255), 4.48),  # the classic just-failing gray
        ((255, 0, 0), (255, 255, 255), 4.0),
    ],
)
def test_contrast_ratio_follows_wcag(first, second, expected):
    assert contrast_ratio(first, second) == pytest.approx(expected, abs=0.01)
    assert contrast_ratio(second, first) == contrast_ratio(first, second)


def test_text_on_a_busy_background_reaches_4_5_to_1_as_measured():
    image = Image.fromarray(busy_background((640, 360)))
    before = image.tobytes()

    placed = overlay_text(image, HEADLINE, (40, 30, 600, 170), KESTREL_PALETTE)

    assert placed.contrast >= MIN_CONTRAST
    assert placed.scrim_opacity > 0  # no palette colour reads on black-to-white noise alone
    assert measured_contrast(placed.image, placed.colour) >= MIN_CONTRAST
    assert image.tobytes() == before
    untouched = np.asarray(image)[200:, :]
    np.testing.assert_array_equal(np.asarray(placed.image)[200:, :], untouched)


def test_plain_background_gets_the_best_palette_colour_and_no_scrim():
    light = Image.new("RGB", (400, 200), (245, 245, 240))
    dark = Image.new("RGB", (400, 200), (20, 25, 40))

    on_light = overlay_text(light, HEADLINE, (20, 20, 380, 180), KESTREL_PALETTE)
    on_dark = overlay_text(dark, HEADLINE, (20, 20, 380, 180), KESTREL_PALETTE)

    assert (on_light.colour, on_light.scrim_opacity) == ("#1D3557", 0.0)
    assert (on_dark.colour, on_dark.scrim_opacity) == ("#F1FAEE", 0.0)
    assert on_light.contrast == pytest.approx(
        contrast_ratio(ImageColor.getrgb("#1D3557"), (245, 245, 240)), abs=1e-6
    )


def test_text_is_fitted_as_large_as_the_box_allows_and_stays_inside_it():
    image = Image.new("RGB", (800, 400), "white")
    small = overlay_text(image, HEADLINE, (50, 50, 350, 130), KESTREL_PALETTE)
    large = overlay_text(image, HEADLINE, (50, 50, 750, 350), KESTREL_PALETTE)

    assert large.font_size > small.font_size
    for placed, box in ((small, (50, 50, 350, 130)), (large, (50, 50, 750, 350))):
        left, top, right, bottom = placed.text_box
        assert box[0] <= left and box[1] <= top and right <= box[2] and bottom <= box[3]
        assert len(placed.lines) <= 2


@pytest.mark.parametrize(
    "text",
    [
        "Weiter fliegen mit Kestrel: die Frühlingskollektion",
        "Volez plus loin avec Kestrel : la collection de printemps",
    ],
)
def test_strings_from_a_language_axis_are_set_and_wrapped(text):
    placed = overlay_text(
        Image.new("RGB", (600, 300), "white"), TextBlock(text), (20, 20, 580, 280), KESTREL_PALETTE
    )
    assert " ".join(placed.lines) == text
    assert placed.contrast >= MIN_CONTRAST


def test_legal_line_wraps_to_more_lines_than_a_headline():
    legal = TextBlock(
        "Offer valid in participating stores while stocks last. Terms apply; see the site.",
        role="legal",
    )
    placed = overlay_text(
        Image.new("RGB", (500, 120), "white"), legal, (10, 10, 490, 110), ["#000"]
    )
    assert 1 < len(placed.lines) <= 3


def test_a_brand_font_file_is_used_when_given():
    image = Image.new("RGB", (600, 200), "white")
    bundled = overlay_text(image, HEADLINE, (10, 10, 590, 190), KESTREL_PALETTE)
    brand = overlay_text(
        image, TextBlock(HEADLINE.text, font_path=DEJAVU), (10, 10, 590, 190), KESTREL_PALETTE
    )
    assert brand.image.tobytes() != bundled.image.tobytes()


def test_text_that_cannot_fit_or_bad_input_says_how_to_fix_it(tmp_path):
    image = Image.new("RGB", (200, 100), "white")
    with pytest.raises(ValueError, match="enlarge the box or shorten the text"):
        overlay_text(image, TextBlock("x" * 200), (0, 0, 60, 12), KESTREL_PALETTE)
    with pytest.raises(ValueError, match=r"\(0, 0, 300, 50\) is not inside the 200x100 image"):
        overlay_text(image, HEADLINE, (0, 0, 300, 50), KESTREL_PALETTE)
    with pytest.raises(ValueError, match="no palette colours"):
        overlay_text(image, HEADLINE, (0, 0, 200, 100), [])
    with pytest.raises(ValueError, match="does not exist"):
        TextBlock("hi", font_path=tmp_path / "missing.ttf")
    with pytest.raises(ValueError, match="'footer' is not known"):
        TextBlock("hi", role="footer")
    with pytest.raises(ValueError, match=r"fallback font file .*missing\.ttf does not exist"):
        TextBlock("hi", fallback_paths=(tmp_path / "missing.ttf",))


# ---------------------------------------------------------------- fallback fonts


def ink_boxes(before: Image.Image, after: Image.Image) -> tuple[int, int, int, int]:
    """The box of the pixels the text changed, measured apart from overlay_text."""
    changed = np.any(np.asarray(before) != np.asarray(after), axis=-1)
    ys, xs = np.nonzero(changed)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize(
    ("block", "box", "digest"),
    [
        (
            HEADLINE,
            (40, 30, 600, 170),
            "6f51a939109805bb4a01c5cc719d9e413c2563a0d7bc1aca4bb0ad03776e22d6",
        ),
        (
            TextBlock(LEGAL, "legal", align="right"),
            (40, 250, 600, 340),
            "d592ff987093d6c97eeb005452dc8779a93f36599bd6552a90871f5e25a751a3",
        ),
    ],
)
def test_text_without_fallbacks_sets_the_pixels_it_set_before_them(block, box, digest):
    # Digests of the pixels from before fallback fonts existed (commit 9b016ca), in Pillow's
    # bundled font, which ships with the pinned Pillow: every existing image stays the same.
    image = Image.fromarray(busy_background((640, 360)))
    placed = overlay_text(image, block, box, KESTREL_PALETTE)
    assert hashlib.sha256(placed.image.tobytes()).hexdigest() == digest
    with_fallback = TextBlock(block.text, block.role, align=block.align, fallback_paths=(DEJAVU,))
    unneeded = overlay_text(image, with_fallback, box, KESTREL_PALETTE)
    assert unneeded.image.tobytes() == placed.image.tobytes()  # ASCII: the fallback is unused


def test_a_line_is_cut_into_runs_each_in_the_first_font_that_has_its_characters():
    fonts = FontStack.load((None, DEJAVU_BOOK), 20)

    def named(text: str) -> list[tuple[str, str]]:
        return [(font.getname()[0] or "", run) for font, run in fonts.runs(text)]

    assert named("Grüße aus Köln") == [
        ("Aileron", "Gr"),
        ("DejaVu Sans", "üß"),
        ("Aileron", "e aus K"),
        ("DejaVu Sans", "ö"),
        ("Aileron", "ln"),
    ]
    # White space stays with the run it follows (the block's font's at the start); a
    # character no font has stays in the block's font, which sets its empty box.
    assert named(" ü x") == [("Aileron", " "), ("DejaVu Sans", "ü "), ("Aileron", "x")]
    assert named("a東") == [("Aileron", "a東")]
    assert fonts.length("Grüße") == pytest.approx(
        sum(font.getlength(run) for font, run in fonts.runs("Grüße"))
    )


def test_characters_the_font_lacks_are_drawn_in_the_fallback_not_as_empty_boxes():
    white = Image.new("RGB", (400, 120), "white")
    box = (0, 0, 400, 120)

    def drawn(block: TextBlock) -> bytes:
        return overlay_text(white, block, box, ["#000000"]).image.tobytes()

    # Text entirely in the fallback is set exactly as that font sets it on its own.
    fallback = drawn(TextBlock("üß", fallback_paths=(DEJAVU_BOOK,)))
    assert fallback == drawn(TextBlock("üß", font_path=DEJAVU_BOOK))
    assert fallback != drawn(TextBlock("üß"))  # the bundled font's empty boxes
    mixed = drawn(TextBlock("Grüße", fallback_paths=(DEJAVU_BOOK,)))
    assert mixed not in (
        drawn(TextBlock("Grüße")),
        drawn(TextBlock("Grüße", font_path=DEJAVU_BOOK)),
    )


@pytest.mark.parametrize("fallbacks", [(), (DEJAVU_BOOK,)])
def test_line_boxes_hold_each_lines_ink_in_order(fallbacks):
    white = Image.new("RGB", (500, 160), "white")
    text = "Grüße aus Köln: " + LEGAL if fallbacks else LEGAL
    block = TextBlock(text, "legal", fallback_paths=fallbacks)
    placed = overlay_text(white, block, (10, 10, 490, 150), ["#000000"])

    assert len(placed.lines) == len(placed.line_boxes) == 3
    tops = [top for _, top, _, _ in placed.line_boxes]
    assert tops == sorted(tops)
    for line_box in placed.line_boxes:
        left, top, right, bottom = line_box
        assert 10 <= left < right <= 490 and 10 <= top < bottom <= 150
        # Tight: ink on every edge of the box.
        ink = np.any(np.asarray(placed.image)[top:bottom, left:right] != 255, axis=-1)
        assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any()
    # Every changed pixel lies in a line box; together they make the text box.
    changed = np.any(np.asarray(placed.image) != np.asarray(white), axis=-1)
    for left, top, right, bottom in placed.line_boxes:
        changed[top:bottom, left:right] = False
    assert not changed.any()
    assert ink_boxes(white, placed.image) == placed.text_box


def test_the_x_height_is_that_of_the_drawn_text():
    white = Image.new("RGB", (600, 200), "white")
    for block in (TextBlock("xxxx"), TextBlock("xxxx", font_path=DEJAVU)):
        placed = overlay_text(white, block, (0, 0, 600, 200), ["#000000"])
        (line_box,) = placed.line_boxes
        assert placed.x_height == line_box[3] - line_box[1]  # x: no ascender, no descender
        assert placed.x_height < placed.font_size
