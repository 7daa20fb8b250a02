import os

os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageColor

from postprocess.text import MIN_CONTRAST, contrast_ratio, overlay_text, relative_luminance
from postprocess.text_layout import TextBlock
from tests.synthetic import busy_background

KESTREL_PALETTE = ["#F26B1D", "#1D3557", "#F1FAEE", "#2A9D8F"]
HEADLINE = TextBlock("Fly further with Kestrel: the spring range")
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


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
