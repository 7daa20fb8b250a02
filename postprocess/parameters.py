"""The library's parameter sets: retouch steps, logo placement and safe zones, exports.

Each parameter and its range is declared once, on these models: the library checks its
own arguments with them, and the renderer's file schema uses the same models, so a range
in a campaign file can never disagree with what the library accepts. Frozen, strict
(``"8"`` is not 8) and closed (an unknown name is an error).

Declarations only, on pydantic: the operations that take them (``retouch``, ``overlay``,
``export``) load Pillow, numpy and OpenCV, and a command that only reads files (validate,
plan, history) imports none of that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ANCHORS",
    "EXTENSIONS",
    "MAX_SIDE",
    "OPERATIONS",
    "Anchor",
    "BrandGrade",
    "Denoise",
    "ExportSpec",
    "ExposureNormalisation",
    "Fraction",
    "LogoPlacement",
    "Parameters",
    "RetouchStep",
    "SafeZone",
    "Sharpen",
    "SkinSmoothing",
    "WhiteBalance",
]

# A share of something (a strength, a part of the frame): 0 to 1.
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Parameters(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, defer_build=True, allow_inf_nan=False
    )


# ---------------------------------------------------------------- retouch (``retouch``)


class WhiteBalance(Parameters):
    """Gray-world: scale the channels so the image's mean colour becomes neutral."""

    strength: Fraction = Field(
        default=1.0, description="0 leaves the image alone, 1 makes the mean exactly gray."
    )


class ExposureNormalisation(Parameters):
    """A gamma curve that moves the mean luminance to ``target`` (highlights never clip);
    the gamma is bounded to [1/4, 4], so a near-black or near-white frame gets only close."""

    target: float = Field(
        default=0.45, ge=0.05, le=0.95, description="Mean Rec. 709 luma as a fraction of white."
    )
    strength: Fraction = Field(
        default=1.0, description="0 leaves the image alone, 1 reaches the target."
    )


class BrandGrade(Parameters):
    """Match each CIELAB channel's histogram to the brand references', blended by strength."""

    strength: Fraction = Field(
        default=0.5, description="0 leaves the image alone, 1 matches the histograms fully."
    )


class Denoise(Parameters):
    """Edge-preserving noise removal: ``bilateral`` (fast) or ``nlmeans`` (non-local means:
    stronger, about 1 s at 1080×1080)."""

    method: Literal["bilateral", "nlmeans"] = "bilateral"
    strength: float = Field(
        default=8.0,
        gt=0.0,
        le=50.0,
        description="bilateral: colour sigma of 4 × strength levels; nlmeans: its h.",
    )
    radius: int = Field(
        default=2,
        ge=1,
        le=10,
        description="bilateral: neighbourhood radius in pixels (nlmeans: fixed 7/21 windows).",
    )


class Sharpen(Parameters):
    """Unsharp mask: add back ``amount`` × (image − blur), where the difference exceeds
    ``threshold`` levels (so flat areas and their noise are left alone)."""

    amount: float = Field(default=0.8, ge=0.0, le=5.0)
    radius: float = Field(
        default=1.5, ge=0.3, le=20.0, description="Gaussian sigma of the blur, in pixels."
    )
    threshold: int = Field(
        default=3,
        ge=0,
        le=255,
        description="Minimum |image − blur| in 8-bit levels to sharpen a pixel.",
    )


class SkinSmoothing(Parameters):
    """Bilateral smoothing inside detected faces, faded out at an elliptical edge."""

    strength: Fraction = Field(
        default=0.7, description="Blend of the smoothed face over the original."
    )
    feather: float = Field(
        default=0.15,
        gt=0.0,
        le=0.5,
        description="Width of the fade, as a fraction of the face size.",
    )


RetouchStep = WhiteBalance | ExposureNormalisation | BrandGrade | Denoise | Sharpen | SkinSmoothing
# The operations by the name a campaign file gives them (``postprocess.retouch`` list items).
OPERATIONS: dict[str, type[RetouchStep]] = {
    "white_balance": WhiteBalance,
    "exposure": ExposureNormalisation,
    "brand_grade": BrandGrade,
    "denoise": Denoise,
    "sharpen": Sharpen,
    "skin_smoothing": SkinSmoothing,
}


# ---------------------------------------------------------------- logo (``overlay``)

Anchor = Literal["top-left", "top-right", "bottom-left", "bottom-right", "center"]
ANCHORS: tuple[str, ...] = get_args(Anchor)


class LogoPlacement(Parameters):
    """Where a logo goes: sizes are fractions of the image's short side."""

    anchor: Anchor = "bottom-right"
    margin: float = Field(
        default=0.05,
        ge=0.0,
        lt=0.5,
        description="Gap to the image edges, a fraction of the short side.",
    )
    scale: float = Field(
        default=0.2, gt=0.0, le=1.0, description="Logo width, a fraction of the short side."
    )


class SafeZone(Parameters):
    """The part of the frame brand marks must stay inside, as fractions of width and height
    (e.g. a 9:16 story keeps clear of the top 14 % and bottom 20 %, where the app draws)."""

    left: Fraction = 0.0
    top: Fraction = 0.0
    right: Fraction = 1.0
    bottom: Fraction = 1.0

    @model_validator(mode="after")
    def _a_box(self) -> SafeZone:
        if not (self.left < self.right and self.top < self.bottom):
            raise ValueError(
                f"safe zone ({self.left}, {self.top}, {self.right}, {self.bottom}) is not a box "
                "inside the frame; give left < right and top < bottom"
            )
        return self

    @classmethod
    def from_box(cls, box: Sequence[float]) -> SafeZone:
        """From [left, top, right, bottom], the form brand kits write it in."""
        left, top, right, bottom = box
        return cls(left=left, top=top, right=right, bottom=bottom)

    def pixels(self, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The zone as a (left, top, right, bottom) pixel box; inner edges round inwards."""
        width, height = image_size
        # Rounded first: 0.14 * 200 is 28.000000000000004 in floating point, not 29 pixels.
        return (
            math.ceil(round(self.left * width, 6)),
            math.ceil(round(self.top * height, 6)),
            math.floor(round(self.right * width, 6)),
            math.floor(round(self.bottom * height, 6)),
        )


# ---------------------------------------------------------------- exports (``export``)

EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
MAX_SIDE = 16383  # WebP's largest side; PNG and JPEG allow more


class ExportSpec(Parameters):
    """One channel's file: its size, format and encoder settings."""

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
        description="The channel, e.g. feed-square; exports go to OUT/CAMPAIGN/exports/NAME/.",
    )
    width: int = Field(ge=8, le=MAX_SIDE)
    height: int = Field(ge=8, le=MAX_SIDE)
    format: Literal["png", "jpeg", "webp"] = "png"
    quality: int = Field(
        default=90, ge=1, le=100, description="JPEG and WebP: 1 (smallest) to 100 (best)."
    )
    png_compression: int = Field(
        default=1,
        ge=0,
        le=9,
        description="PNG, lossless: zlib "
        "level 0-9 (with run-length coding, higher levels cost more "
        "time for a few per cent).",
    )

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]
