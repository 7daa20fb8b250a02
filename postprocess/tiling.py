"""What an upscaler is and how images are cut for it: plain values, no torch, so validation
reads them without loading the model library (``postprocess.upscale`` runs them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BLENDS", "Tiling", "UpscalerInfo"]

BLENDS = ("linear", "cosine")


@dataclass(frozen=True)
class Tiling:
    """How ``upscale_images`` cuts images: sizes in input pixels."""

    tile: int = 512  # side of a square tile
    overlap: int = 32  # pixels neighbouring tiles share: a quarter context each, half blended
    blend: Literal["linear", "cosine"] = "cosine"  # the weight ramp across an overlap
    batch: int = 4  # tiles per model call

    def __post_init__(self) -> None:
        if self.tile < 32:
            raise ValueError(f"tile {self.tile!r} is too small; use at least 32 pixels, e.g. 512")
        if not 0 <= 2 * self.overlap < self.tile:
            raise ValueError(
                f"overlap {self.overlap!r} does not fit tile {self.tile}; use 0 to "
                f"{(self.tile - 1) // 2} pixels (less than half a tile), e.g. "
                f"{min(32, (self.tile - 1) // 2)}"
            )
        if self.blend not in BLENDS:
            raise ValueError(f"blend {self.blend!r} is not known; use linear or cosine")
        if self.batch < 1:
            raise ValueError(f"batch {self.batch!r} must be at least 1 tile per model call")


@dataclass(frozen=True)
class UpscalerInfo:
    """What an upscaler file is, as validation needs it before any weight loads."""

    architecture: str
    scale: int
    tiles: bool  # False: the architecture tiles internally, so it runs untiled
    multiple_of: int  # tiles and overlaps must be multiples of this
    minimum: int  # the smallest input side it takes
