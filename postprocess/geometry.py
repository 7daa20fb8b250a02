"""Pixel boxes and size snapping: plain arithmetic, shared by the image code, the sizes and
the layout checks.

Boxes are (left, top, right, bottom) in pixels, right and bottom exclusive, as
``overlay.logo_box`` returns them. No image library is imported here, so the file schema's
size checks (campaign sizes, hires targets) load no numpy or OpenCV.
"""

from __future__ import annotations

import math

Box = tuple[int, int, int, int]


def snap(value: float, multiple: int) -> int:
    """``value`` to the nearest multiple (halves up), at least one multiple: how every size
    snaps to a model family's 8 or 16 (campaign sizes, hires targets)."""
    return max(multiple, math.floor(value / multiple + 0.5) * multiple)


def grown(box: Box, pad: int, size: tuple[int, int]) -> Box:
    """``box`` with ``pad`` pixels more on every side, inside a frame of ``size``."""
    left, top, right, bottom = box
    return (
        max(left - pad, 0),
        max(top - pad, 0),
        min(right + pad, size[0]),
        min(bottom + pad, size[1]),
    )


def overlap(a: Box, b: Box) -> bool:
    """Whether two boxes share any pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def separation(a: Box, b: Box) -> int:
    """The widest margin around ``a`` that stays clear of ``b``: ``grown(a, p)`` misses ``b``
    for every ``p`` up to it. Zero when they touch, negative when they overlap (by how much
    ``a`` must shrink)."""
    horizontal = max(b[0] - a[2], a[0] - b[2])
    vertical = max(b[1] - a[3], a[1] - b[3])
    return max(horizontal, vertical)


def inside(inner: Box, outer: Box) -> bool:
    """Whether every pixel of ``inner`` is in ``outer``."""
    return (
        outer[0] <= inner[0]
        and outer[1] <= inner[1]
        and inner[2] <= outer[2]
        and inner[3] <= outer[3]
    )


def crop_size(size: tuple[int, int], target_ratio: float) -> tuple[int, int]:
    """The largest (width, height) of aspect ``target_ratio`` (width / height) inside
    ``size``: ``size`` itself when the aspects agree (nothing is cropped)."""
    if target_ratio <= 0:
        raise ValueError(f"target ratio {target_ratio!r} must be positive, e.g. 1080 / 1920")
    width, height = size
    return min(width, round(height * target_ratio)), min(height, round(width / target_ratio))
