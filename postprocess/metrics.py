"""Brand scores besides CLIP: palette adherence and logo in place (faces are counted by
``postprocess.faces``; campaign consistency, from the CLIP embeddings alone, is
``postprocess.consistency``).

Plain numpy and OpenCV, no model: each image-level measure works on a copy at most a few
hundred pixels across (what it measures does not need more), so a batch of 1080×1080
images scores at many images per second. Images follow ``postprocess.imaging``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageColor

from postprocess.geometry import Box
from postprocess.imaging import require_rgb
from postprocess.overlay import logo_in_safe_zone
from postprocess.parameters import SafeZone

__all__ = [
    "LogoScore",
    "ciede2000",
    "logo_score",
    "near_palette_table",
    "palette_adherence",
    "srgb_to_lab",
]

PALETTE_SAMPLE_SIDE = 256
# The colour table bins 4 levels per channel: a pixel is judged by its bin centre, on
# average 0.5 ΔE00 away (at most ~3 in the darkest shades, where CIELAB is steepest).
PALETTE_BITS = 6
LOGO_SEARCH_SIDE = 128  # search for the logo on a copy about this size (short side)
LOGO_IN_PLACE_IOU = 0.5  # found and expected logo boxes must overlap at least this much


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65; L 0..100) of sRGB values 0..255, any shape ending in 3."""
    pixels = np.asarray(rgb, dtype=np.float32).reshape(-1, 1, 3) / 255
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2Lab).reshape(np.shape(rgb)).astype(np.float64)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1), broadcast over leading axes.

    Follows Sharma, Wu and Dalal (2005), "The CIEDE2000 Color-Difference Formula:
    Implementation Notes, Supplementary Test Data, and Mathematical Observations".
    """
    lab1, lab2 = np.asarray(lab1, dtype=np.float64), np.asarray(lab2, dtype=np.float64)
    l1, a1, b1 = np.moveaxis(lab1, -1, 0)
    l2, a2, b2 = np.moveaxis(lab2, -1, 0)
    mean_chroma = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(mean_chroma**7 / (mean_chroma**7 + 25.0**7)))
    a1_prime, a2_prime = (1 + g) * a1, (1 + g) * a2
    c1, c2 = np.hypot(a1_prime, b1), np.hypot(a2_prime, b2)
    h1 = np.degrees(np.arctan2(b1, a1_prime)) % 360
    h2 = np.degrees(np.arctan2(b2, a2_prime)) % 360
    achromatic = c1 * c2 == 0  # a hue is undefined for a gray: its difference counts 0

    hue_step = h2 - h1
    hue_step = np.where(hue_step > 180, hue_step - 360, hue_step)
    hue_step = np.where(hue_step < -180, hue_step + 360, hue_step)
    hue_step = np.where(achromatic, 0.0, hue_step)
    delta_l, delta_c = l2 - l1, c2 - c1
    delta_h = 2 * np.sqrt(c1 * c2) * np.sin(np.radians(hue_step / 2))

    mean_l, mean_c = (l1 + l2) / 2, (c1 + c2) / 2
    hue_sum = h1 + h2
    mean_h = np.where(
        np.abs(h1 - h2) <= 180,
        hue_sum / 2,
        np.where(hue_sum < 360, (hue_sum + 360) / 2, (hue_sum - 360) / 2),
    )
    mean_h = np.where(achromatic, hue_sum, mean_h)
    t = (
        1
        - 0.17 * np.cos(np.radians(mean_h - 30))
        + 0.24 * np.cos(np.radians(2 * mean_h))
        + 0.32 * np.cos(np.radians(3 * mean_h + 6))
        - 0.20 * np.cos(np.radians(4 * mean_h - 63))
    )
    rotation = 30 * np.exp(-(((mean_h - 275) / 25) ** 2))
    chroma_weight = 2 * np.sqrt(mean_c**7 / (mean_c**7 + 25.0**7))
    s_l = 1 + 0.015 * (mean_l - 50) ** 2 / np.sqrt(20 + (mean_l - 50) ** 2)
    s_c = 1 + 0.045 * mean_c
    s_h = 1 + 0.015 * mean_c * t
    r_t = -np.sin(np.radians(2 * rotation)) * chroma_weight
    lightness, chroma, hue = delta_l / s_l, delta_c / s_c, delta_h / s_h
    difference: np.ndarray = np.sqrt(lightness**2 + chroma**2 + hue**2 + r_t * chroma * hue)
    return difference


def palette_adherence(
    image: np.ndarray, palette_hex: Sequence[str], max_delta_e: float = 10.0
) -> float:
    """The share of pixels within CIEDE2000 ``max_delta_e`` of some palette colour (0..1).

    Pixels are sampled on a grid at most PALETTE_SAMPLE_SIDE across (no blending: every
    sample is a real pixel colour) and looked up in a table of every colour at
    PALETTE_BITS bits per channel, computed once per palette and threshold.
    """
    if not palette_hex:
        raise ValueError("no palette colours given; pass the brand palette as hex strings")
    if max_delta_e <= 0:
        raise ValueError(f"max_delta_e {max_delta_e!r} must be positive, e.g. 10")
    near = near_palette_table(tuple(palette_hex), float(max_delta_e))
    height, width = require_rgb(image).shape[:2]
    stride = math.ceil(max(height, width) / PALETTE_SAMPLE_SIDE)
    levels = image[::stride, ::stride].reshape(-1, 3) >> (8 - PALETTE_BITS)
    index = (
        (levels[:, 0].astype(np.int32) << 2 * PALETTE_BITS)
        | (levels[:, 1].astype(np.int32) << PALETTE_BITS)
        | levels[:, 2]
    )
    return float(near[index].mean())


@functools.lru_cache(maxsize=16)
def near_palette_table(palette_hex: tuple[str, ...], max_delta_e: float) -> np.ndarray:
    """For every colour binned to PALETTE_BITS per channel (at the bin's centre): whether
    it lies within ``max_delta_e`` of a palette colour. Flat, indexed by (r, g, b) bits.
    Made once per palette and threshold (about 0.5 s of numpy, which releases the GIL)."""
    palette_lab = srgb_to_lab(np.array([ImageColor.getrgb(hex_)[:3] for hex_ in palette_hex]))
    step = 1 << (8 - PALETTE_BITS)
    centres = np.arange(step // 2, 256, step)
    colours = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(-1, 3)
    nearest = np.full(len(colours), np.inf)
    for colour_lab in palette_lab:  # one palette colour at a time keeps memory small
        nearest = np.minimum(nearest, ciede2000(srgb_to_lab(colours), colour_lab))
    return nearest <= max_delta_e


@dataclass(frozen=True)
class LogoScore:
    match: float  # normalised cross-correlation of the best match, -1..1 (1: identical)
    found_box: Box  # where the best match is, in image pixels
    in_place: bool  # the best match overlaps the expected box (IoU >= LOGO_IN_PLACE_IOU)

    def in_safe_zone(self, image_size: tuple[int, int], zone: SafeZone) -> bool:
        return logo_in_safe_zone(self.found_box, image_size, zone)


def logo_score(image: np.ndarray, logo: Image.Image, expected_box: Box) -> LogoScore:
    """Look for ``logo`` at the size of ``expected_box`` anywhere in ``image``.

    The match ignores the logo's transparent pixels (its alpha is the template mask).
    """
    height, width = require_rgb(image).shape[:2]
    left, top, right, bottom = expected_box
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise ValueError(
            f"expected logo box {expected_box} is not inside the {width}x{height} image; "
            "pass the box logo_box() gives for this image"
        )
    # A whole-number reduction: OpenCV's fast path, and every search pixel the same area.
    factor = max(1, min(width, height) // LOGO_SEARCH_SIDE)
    search = cv2.resize(
        image, (width // factor, height // factor), interpolation=cv2.INTER_AREA
    ).astype(np.float32)
    template_size = (max(1, round((right - left) / factor)), max(1, round((bottom - top) / factor)))
    template = np.asarray(logo.convert("RGBA").resize(template_size, Image.Resampling.LANCZOS))
    colour, alpha = template[..., :3].astype(np.float32), template[..., 3:]
    # The transparent pixels show whatever is behind the logo: leave them out of the match
    # (a mask costs OpenCV several times more, so an opaque logo goes without).
    mask = None if alpha.min() == 255 else np.repeat(alpha.astype(np.float32) / 255, 3, axis=2)
    scores = cv2.matchTemplate(search, colour, cv2.TM_CCOEFF_NORMED, mask=mask)
    # A flat template or window has no correlation to speak of (OpenCV gives inf or nan).
    scores = np.nan_to_num(scores, nan=-1.0, posinf=-1.0, neginf=-1.0)
    _, match, _, (found_x, found_y) = cv2.minMaxLoc(scores)
    found_left, found_top = found_x * factor, found_y * factor
    found = (found_left, found_top, found_left + right - left, found_top + bottom - top)
    return LogoScore(
        match=float(match),
        found_box=found,
        in_place=_iou(found, expected_box) >= LOGO_IN_PLACE_IOU,
    )


def _iou(first: Box, second: Box) -> float:
    overlap_w = max(0, min(first[2], second[2]) - max(first[0], second[0]))
    overlap_h = max(0, min(first[3], second[3]) - max(first[1], second[1]))
    overlap = overlap_w * overlap_h

    def area(box: Box) -> int:
        return (box[2] - box[0]) * (box[3] - box[1])

    return overlap / (area(first) + area(second) - overlap)
