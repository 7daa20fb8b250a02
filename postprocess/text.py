"""Headline and legal-line text on an image, readable by WCAG 2.x contrast.

The lines and font size come from ``postprocess.text_layout`` (the largest that fits the
box). The text colour is the palette colour with the best contrast against the pixels behind
the glyphs. "Behind" is measured, not assumed: the glyph shapes, grown by a stroke, select
the background pixels, and the contrast that counts is the 5th percentile over them
(busy backgrounds have a few pixels as bright as the text; 95 % of the text's
surroundings must reach the ratio). Only when no palette colour reaches 4.5:1 is a
semi-opaque black or white scrim laid under the text, as light as will do.

Each line is drawn run by run (``FontStack.runs``: the block's font, then its fallbacks), on
one baseline, and its ink box is returned with the x-height, for checks that read the text
back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageColor, ImageDraw

from postprocess.geometry import Box, grown
from postprocess.text_layout import LINE_SPACING, FontStack, TextBlock, block_height, fit

MIN_CONTRAST = 4.5  # WCAG 2.x AA for normal text
SCRIM_OPACITIES = (0.3, 0.45, 0.6, 0.75, 0.9, 1.0)
_BEHIND_PERCENTILE = 5
_BEHIND_SAMPLE = 4096
_SCRIM_COLOURS = ((0, 0, 0), (255, 255, 255))


@dataclass(frozen=True, eq=False)
class PlacedText:
    image: Image.Image  # a new RGB image with the text (and any scrim)
    contrast: float  # measured WCAG ratio of the text colour against what is behind it
    colour: str  # the palette colour chosen, as given
    font_size: int
    lines: tuple[str, ...]
    text_box: Box  # the box the glyphs occupy
    scrim_opacity: float  # 0.0 when no scrim was needed
    # The ink box of each line that draws any (a blank line draws none), in order.
    line_boxes: tuple[Box, ...]
    x_height: float  # pixels: the ink height of "x" at font_size, as the block's fonts set it


def relative_luminance(rgb: np.ndarray | Sequence[float]) -> np.ndarray:
    """WCAG 2.x relative luminance of sRGB colours in 0..255 (last axis: R, G, B)."""
    channels = np.asarray(rgb, dtype=np.float64) / 255
    linear = np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    luminance: np.ndarray = linear @ np.array([0.2126, 0.7152, 0.0722])
    return luminance


def contrast_ratio(rgb1: Sequence[float], rgb2: Sequence[float]) -> float:
    """WCAG 2.x contrast ratio, from 1 (same luminance) to 21 (black on white)."""
    return float(_ratio(relative_luminance(rgb1), relative_luminance(rgb2)))


def overlay_text(
    image: Image.Image, block: TextBlock, box: Box, palette: Sequence[str]
) -> PlacedText:
    """Set ``block`` as large as fits ``box`` in the palette colour that reads best."""
    if not palette:
        raise ValueError("no palette colours given; pass the brand palette as hex strings")
    left, top, right, bottom = box
    if not (0 <= left < right <= image.width and 0 <= top < bottom <= image.height):
        raise ValueError(
            f"text box {box} is not inside the {image.width}x{image.height} image; "
            "pass (left, top, right, bottom) within it"
        )
    fonts, lines = fit(block, right - left, bottom - top)
    font_size = fonts.size
    # Everything below works on the box's own pixels; the rest of the image is untouched.
    region = np.array(image.convert("RGB").crop(box))
    coverage, line_boxes = _coverage(region.shape[1::-1], fonts, lines, block.align)
    ys, xs = np.nonzero(coverage)
    glyphs = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    stroke = max(1, font_size // 10)
    behind = cv2.dilate(
        (coverage > 0).astype(np.uint8), np.ones((2 * stroke + 1,) * 2, np.uint8)
    ).astype(bool)
    # An even sample of the pixels behind measures a percentile as well as all of them.
    behind = np.flatnonzero(behind)
    behind = behind[:: max(1, len(behind) // _BEHIND_SAMPLE)]

    colours = np.array([ImageColor.getrgb(colour)[:3] for colour in palette], dtype=np.float64)
    colour_luminances = relative_luminance(colours)
    best = _best_colour(relative_luminance(region.reshape(-1, 3)[behind]), colour_luminances)
    scrim_opacity = 0.0
    if best[1] < MIN_CONTRAST:
        scrim_box = grown(glyphs, 2 * stroke, region.shape[1::-1])
        best, scrim_opacity = _lay_lightest_scrim(region, behind, scrim_box, colour_luminances)
    colour_index, contrast = best

    text_layer = Image.fromarray(region)
    text_layer.paste(
        tuple(int(v) for v in colours[colour_index]), mask=Image.fromarray(coverage, "L")
    )
    canvas = image.convert("RGB")  # a new image: the caller's is never modified
    canvas.paste(text_layer, (left, top))
    return PlacedText(
        image=canvas,
        contrast=contrast,
        colour=palette[colour_index],
        font_size=font_size,
        lines=tuple(lines),
        text_box=_moved(glyphs, left, top),
        scrim_opacity=scrim_opacity,
        line_boxes=tuple(_moved(line_box, left, top) for line_box in line_boxes),
        x_height=fonts.x_height(),
    )


def _coverage(
    size: tuple[int, int], fonts: FontStack, lines: Sequence[str], align: str
) -> tuple[np.ndarray, list[Box]]:
    """The glyphs' anti-aliased coverage (0..255) in a box of ``size``, centred vertically,
    and the ink box of each line that draws any."""
    mask = Image.new("L", size, 0)
    width, height = size
    ascent, _ = fonts.metrics(lines)
    y = (height - block_height(fonts, lines)) // 2
    line_boxes = []
    for line in lines:
        line_width = fonts.length(line)
        x = {"left": 0, "center": (width - line_width) / 2, "right": width - line_width}[align]
        # Each line on a layer of its own gives its ink box; pasting the layer blends as
        # drawing on the mask does, so the pixels are those of drawing it there.
        layer = Image.new("L", size, 0)
        draw = ImageDraw.Draw(layer)
        for font, run in fonts.runs(line):
            # On the baseline, so runs in fonts of different ascent line up.
            draw.text((x, y + ascent), run, fill=255, font=font, anchor="ls")
            x += font.getlength(run)
        if (ink := layer.getbbox()) is not None:
            line_boxes.append(ink)
            mask.paste(255, mask=layer)
        y += round(fonts.size * LINE_SPACING)
    return np.asarray(mask), line_boxes


def _moved(box: Box, left: int, top: int) -> Box:
    """``box`` moved by (left, top): from the text box's pixels to the image's."""
    return (box[0] + left, box[1] + top, box[2] + left, box[3] + top)


def _ratio(luminance_a: np.ndarray, luminance_b: np.ndarray) -> np.ndarray:
    lighter, darker = np.maximum(luminance_a, luminance_b), np.minimum(luminance_a, luminance_b)
    ratio: np.ndarray = (lighter + 0.05) / (darker + 0.05)
    return ratio


def _best_colour(behind_luminances: np.ndarray, colour_luminances: np.ndarray) -> tuple[int, float]:
    """(palette index, measured contrast) of the colour with the best measured contrast."""
    ratios = _ratio(colour_luminances[:, None], behind_luminances[None, :])
    measured = np.percentile(ratios, _BEHIND_PERCENTILE, axis=1)
    index = int(np.argmax(measured))
    return index, float(measured[index])


def _lay_lightest_scrim(
    region: np.ndarray, behind: np.ndarray, scrim_box: Box, colour_luminances: np.ndarray
) -> tuple[tuple[int, float], float]:
    """Lay the least opaque black or white scrim over ``scrim_box`` of ``region`` (in place)
    under which a palette colour reaches MIN_CONTRAST; ``behind``: flat indices of the
    pixels behind the text. Returns ((palette index, contrast), opacity)."""
    behind_pixels = region.reshape(-1, 3)[behind].astype(np.float64)
    # The last, opaque step always succeeds: every colour reaches at least 4.58:1 against
    # black or against white.
    for opacity in SCRIM_OPACITIES:
        candidates = []
        for scrim in _SCRIM_COLOURS:
            # Rounded as the pixels will be, so the contrast is that of the result.
            tinted = np.round(behind_pixels * (1 - opacity) + np.array(scrim) * opacity)
            candidates.append((_best_colour(relative_luminance(tinted), colour_luminances), scrim))
        best, scrim = max(candidates, key=lambda candidate: candidate[0][1])
        if best[1] >= MIN_CONTRAST:
            break
    left, top, right, bottom = scrim_box
    covered = region[top:bottom, left:right].astype(np.float64)
    region[top:bottom, left:right] = np.round(covered * (1 - opacity) + np.array(scrim) * opacity)
    return best, opacity
