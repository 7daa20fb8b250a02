"""Pixel boxes and size snapping: plain arithmetic, shared by the image code and the sizes.

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
