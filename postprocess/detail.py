"""Region detailer geometry, as ADetailer does it: crop, resize, paste back feathered.

A detailer redoes a small region (a face from ``faces.detect_faces``, a blob of a mask)
at the inpainting model's own resolution. ``plan_detail`` picks the crop: the region's
box grown by the feather and the padding, widened to the model's aspect, kept inside the
image; and the size the model takes it at (its native pixel count at the crop's aspect).
``detail_crop`` cuts and resizes it, the renderer inpaints it (``DetailPlan.mask`` says
where), and ``paste_details`` blends the results back through ``DetailPlan.alpha``: 1 on
the region, fading to 0 within ``feather`` pixels of it. Pixels where alpha is 0, all but
the region and its feather, keep exactly their original values. Plans are made from the
original image, so the crops of many regions and images can be inpainted in one batch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from postprocess.geometry import Box, snap
from postprocess.imaging import require_rgb

__all__ = ["Detail", "DetailPlan", "detail_crop", "mask_boxes", "paste_details", "plan_detail"]

FALLOFFS = ("gaussian", "linear")


@dataclass(frozen=True)
class Detail:
    """How a region is cropped for the inpainting model and pasted back."""

    size: tuple[int, int] = (512, 512)  # the model's native (width, height)
    padding: int = 32  # context pixels around the feathered region, on each side
    padding_fraction: float = 0.0  # more context: a fraction of the region's longer side
    feather: int = 8  # pixels beyond the region over which the paste fades out
    falloff: Literal["gaussian", "linear"] = "gaussian"  # the fade's profile
    multiple: int = 8  # the model takes sides that are multiples of this (8 SD, 16 Flux)

    def __post_init__(self) -> None:
        if self.multiple < 1:
            raise ValueError(f"multiple {self.multiple!r} must be at least 1, e.g. 8")
        width, height = self.size
        if (
            width < self.multiple
            or height < self.multiple
            or width % self.multiple
            or (height % self.multiple)
        ):
            raise ValueError(
                f"detail size {self.size!r} must be positive multiples of {self.multiple}, "
                "e.g. (512, 512) for SD1.5 or (1024, 1024) for SDXL"
            )
        if self.padding < 0:
            raise ValueError(f"detail padding {self.padding!r} must be 0 or more pixels")
        if not 0 <= self.padding_fraction <= 4:
            raise ValueError(
                f"detail padding_fraction {self.padding_fraction!r} is out of range; use 0 to 4"
            )
        if not 0 <= self.feather <= 256:
            raise ValueError(f"detail feather {self.feather!r} is out of range; use 0 to 256 px")
        if self.falloff not in FALLOFFS:
            raise ValueError(
                f"detail falloff {self.falloff!r} is not known; use gaussian or linear"
            )


@dataclass(frozen=True, eq=False)
class DetailPlan:
    """Where one region is cropped, at what size it is inpainted, and how it is pasted."""

    image_size: tuple[int, int]  # (width, height) of the image planned for
    box: Box  # the region's box, image pixels
    crop: Box  # the crop, inside the image
    size: tuple[int, int]  # (width, height) the crop is resized to for the model
    alpha: np.ndarray  # (crop height, crop width) float32 paste weight; 0 keeps the original
    mask: np.ndarray  # (size height, size width) uint8, 255 where the model repaints


def mask_boxes(mask: np.ndarray, min_area: int = 1) -> list[Box]:
    """Boxes of the 8-connected blobs of a (height, width) mask (nonzero = in) of at least
    ``min_area`` pixels, largest first."""
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype.kind not in "biu":
        raise ValueError(
            f"mask is {getattr(mask, 'dtype', type(mask).__name__)} of shape "
            f"{getattr(mask, 'shape', None)}; pass a 2-D bool or integer array (nonzero = in)"
        )
    if min_area < 1:
        raise ValueError(f"min_area {min_area!r} must be at least 1 pixel")
    count, _, stats, _ = cv2.connectedComponentsWithStats(
        (mask != 0).astype(np.uint8), connectivity=8
    )
    blobs = [stats[label].tolist() for label in range(1, count)]  # label 0: the background
    blobs.sort(key=lambda blob: (-blob[4], blob[1], blob[0]))
    return [(x, y, x + w, y + h) for x, y, w, h, area in blobs if area >= min_area]


def plan_detail(
    image: np.ndarray, box: Box, detail: Detail = Detail(), region: np.ndarray | None = None
) -> DetailPlan:
    """The crop for redoing ``box``: the pixels of ``region`` (a mask of the image's shape)
    inside it when given, else the whole box."""
    height, width = require_rgb(image).shape[:2]
    if len(box) != 4 or not all(isinstance(side, numbers.Integral) for side in box):
        raise ValueError(f"box {box!r} is not 4 whole pixels (left, top, right, bottom)")
    left, top, right, bottom = (int(side) for side in box)
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise ValueError(
            f"box {box!r} is not a non-empty (left, top, right, bottom) box inside the "
            f"{width}x{height} image; clip it to the image first"
        )
    reach = (
        detail.feather
        + detail.padding
        + math.ceil(detail.padding_fraction * max(right - left, bottom - top))
    )
    crop_width, crop_height = _at_aspect(
        right - left + 2 * reach, bottom - top + 2 * reach, detail.size
    )
    # The image's extent caps a side (the crop's aspect then differs from the model's).
    crop_width, crop_height = min(crop_width, width), min(crop_height, height)
    # Centred on the box, then moved inside the image: it still covers the box grown by
    # ``reach`` wherever that lies inside the image.
    crop_left = min(max((left + right - crop_width) // 2, 0), width - crop_width)
    crop_top = min(max((top + bottom - crop_height) // 2, 0), height - crop_height)
    crop = (crop_left, crop_top, crop_left + crop_width, crop_top + crop_height)
    inside = np.zeros((crop_height, crop_width), np.float32)
    box_in_crop = (
        slice(top - crop_top, bottom - crop_top),
        slice(left - crop_left, right - crop_left),
    )
    if region is None:
        inside[box_in_crop] = 1
    else:
        if not isinstance(region, np.ndarray) or region.shape != (height, width):
            raise ValueError(
                f"region has shape {getattr(region, 'shape', None)}; pass a mask of the "
                f"image's shape {(height, width)}"
            )
        inside[box_in_crop] = region[top:bottom, left:right] != 0
        if not inside.any():
            raise ValueError(
                f"region has no pixel inside box {box!r}; pass the box of one of its blobs "
                "(mask_boxes)"
            )
    alpha = _feathered(inside, detail)
    size = _model_size(crop_width, crop_height, detail)
    mask = cv2.resize((alpha > 0).astype(np.uint8) * 255, size, interpolation=cv2.INTER_NEAREST)
    return DetailPlan((width, height), (left, top, right, bottom), crop, size, alpha, mask)


def detail_crop(image: np.ndarray, plan: DetailPlan) -> np.ndarray:
    """The plan's crop of ``image`` at ``plan.size``, for the inpainting model."""
    _require_planned_for(image, plan)
    left, top, right, bottom = plan.crop
    return _resize(image[top:bottom, left:right], plan.size)


def paste_details(
    image: np.ndarray, plans: Sequence[DetailPlan], inpainted: Sequence[np.ndarray]
) -> np.ndarray:
    """``image`` with each inpainted crop (at its plan's size) blended back, in order (a
    later region wins where feathers overlap); with no plans, an unchanged copy."""
    if len(plans) != len(inpainted):
        raise ValueError(
            f"{len(plans)} plans but {len(inpainted)} inpainted crops; pass one crop per plan"
        )
    result = require_rgb(image).copy()
    for index, (plan, crop) in enumerate(zip(plans, inpainted, strict=True)):
        _require_planned_for(image, plan)
        require_rgb(crop, f"inpainted crop {index}")
        if crop.shape[1::-1] != plan.size:
            raise ValueError(
                f"inpainted crop {index} is {crop.shape[1]}x{crop.shape[0]}; the plan "
                f"inpaints at {plan.size[0]}x{plan.size[1]}: pass the model's output at that "
                "size"
            )
        left, top, right, bottom = plan.crop
        original = result[top:bottom, left:right]
        back = _resize(crop, (right - left, bottom - top)).astype(np.float32)
        # Where alpha is 0 this is the original exactly: whole numbers survive float32.
        blended = original + plan.alpha[..., None] * (back - original)
        result[top:bottom, left:right] = np.clip(np.rint(blended), 0, 255)
    return result


def _at_aspect(width: int, height: int, size: tuple[int, int]) -> tuple[int, int]:
    """The smallest (width, height) at least as large as given, at ``size``'s aspect."""
    if width * size[1] < height * size[0]:
        return math.ceil(height * size[0] / size[1]), height
    return width, math.ceil(width * size[1] / size[0])


def _model_size(crop_width: int, crop_height: int, detail: Detail) -> tuple[int, int]:
    """The model's native pixel count at the crop's aspect, sides snapped to its multiple:
    exactly ``detail.size`` for a crop at the model's aspect."""
    pixels = detail.size[0] * detail.size[1]
    aspect = crop_width / crop_height
    return (
        snap(math.sqrt(pixels * aspect), detail.multiple),
        snap(math.sqrt(pixels / aspect), detail.multiple),
    )


def _feathered(inside: np.ndarray, detail: Detail) -> np.ndarray:
    """1 on ``inside``, falling to 0 within ``feather`` pixels (chessboard distance) of it:
    grow by half the feather, then blur over the other half, so the blur's reach ends at
    the feather and every pixel of the region keeps weight 1."""
    grow, radius = math.ceil(detail.feather / 2), detail.feather // 2
    alpha = cv2.dilate(inside, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) if grow else inside
    if radius:
        kernel = (2 * radius + 1, 2 * radius + 1)
        # Replicated borders: at the image's edge the region continues, it does not fade.
        if detail.falloff == "linear":  # a box blur of a step is a linear ramp
            alpha = cv2.blur(alpha, kernel, borderType=cv2.BORDER_REPLICATE)
        else:
            alpha = cv2.GaussianBlur(alpha, kernel, radius / 2, borderType=cv2.BORDER_REPLICATE)
    return alpha


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # Area averaging to shrink, Lanczos (as A1111 resizes) to enlarge.
    shrinking = size[0] * size[1] < pixels.shape[0] * pixels.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    return cv2.resize(pixels, size, interpolation=interpolation)


def _require_planned_for(image: np.ndarray, plan: DetailPlan) -> None:
    size = require_rgb(image).shape[1::-1]
    if size != plan.image_size:
        raise ValueError(
            f"the image is {size[0]}x{size[1]} but the plan was made for "
            f"{plan.image_size[0]}x{plan.image_size[1]}; plan on this image"
        )
