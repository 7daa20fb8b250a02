"""Retouch: small, pure, deterministic image → image operations with campaign parameters.

Every operation takes an RGB uint8 array (see ``postprocess.imaging``) and a frozen
parameter object and returns a new array; the input is never modified. ``apply_retouch``
runs a campaign's ordered list of steps. Statistics (channel means, histograms) are
estimated on a copy at most ``ESTIMATE_SIDE`` pixels across and per-pixel curves are
applied through lookup tables, so at 1080×1080 each operation costs 5-25 ms on one core
(``Denoise(method="nlmeans")`` excepted: about a second).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from postprocess.faces import detect_faces
from postprocess.geometry import Box
from postprocess.imaging import require_rgb, shrink_to
from postprocess.parameters import (
    BrandGrade,
    Denoise,
    ExposureNormalisation,
    RetouchStep,
    Sharpen,
    SkinSmoothing,
    WhiteBalance,
)

ESTIMATE_SIDE = 256
_LEVELS = np.arange(256, dtype=np.float64)
# Rec. 709 weights on the encoded values: what "how bright does it look" means here.
_LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722])
_GAMMA_BISECTIONS = 24  # log-gamma to within 1e-7


@dataclass(frozen=True, eq=False)
class BrandReference:
    """The brand references' cumulative CIELAB histograms: what ``grade_to_brand`` aims at.

    Built once per campaign with ``from_images``; each reference counts equally whatever
    its size.
    """

    cdf: np.ndarray  # (3, 256): cumulative share of pixels at or below each L, a, b level

    @classmethod
    def from_images(cls, references: Sequence[np.ndarray]) -> BrandReference:
        if not references:
            raise ValueError("no brand reference images given; add some to the brand kit")
        histograms = [
            _lab_histograms(
                cv2.cvtColor(require_rgb(reference, f"brand reference {index}"), cv2.COLOR_RGB2Lab)
            )
            for index, reference in enumerate(references)
        ]
        return cls(cdf=_cumulative(sum(histograms[1:], start=histograms[0])))


def white_balance(image: np.ndarray, params: WhiteBalance) -> np.ndarray:
    means = _sample_pixels(image).mean(axis=0)
    gains = means.mean() / np.maximum(means, 1.0)
    gains = 1 + params.strength * (gains - 1)
    return _apply_curves(image, np.clip(_LEVELS[None] * gains[:, None], 0, 255))


def normalise_exposure(image: np.ndarray, params: ExposureNormalisation) -> np.ndarray:
    pixels = _sample_pixels(image)
    # Mean luma after a gamma curve, from the channel histograms: exact for the sample,
    # and 256 values per channel to sum instead of every pixel per trial.
    weighted_levels = sum(
        weight * np.bincount(pixels[:, channel], minlength=256) / len(pixels)
        for channel, weight in enumerate(_LUMA_WEIGHTS)
    )

    def mean_luma_after(gamma: float) -> float:
        return float(weighted_levels @ (_LEVELS / 255) ** gamma)

    # A larger gamma darkens, monotonically: bisect log(gamma) within [1/4, 4]. Black and
    # white stay put under any gamma, so highlights never clip.
    low, high = math.log(1 / 4), math.log(4)
    for _ in range(_GAMMA_BISECTIONS):
        middle = (low + high) / 2
        if mean_luma_after(math.exp(middle)) > params.target:
            low = middle
        else:
            high = middle
    gamma = math.exp((low + high) / 2 * params.strength)
    return _apply_curves(image, np.tile(255 * (_LEVELS / 255) ** gamma, (3, 1)))


def grade_to_brand(image: np.ndarray, references: BrandReference, params: BrandGrade) -> np.ndarray:
    if params.strength == 0:  # an 8-bit CIELAB round trip alone would move some pixels
        return require_rgb(image).copy()
    lab = cv2.cvtColor(require_rgb(image), cv2.COLOR_RGB2Lab)
    source_cdf = _cumulative(_lab_histograms(lab))
    # np.interp needs increasing x: a negligible ramp breaks the ties of empty levels.
    target_cdf = references.cdf + _LEVELS[None] * 1e-9
    matched = np.stack(
        [np.interp(source_cdf[channel], target_cdf[channel], _LEVELS) for channel in range(3)]
    )
    curves = (1 - params.strength) * _LEVELS[None] + params.strength * matched
    return cv2.cvtColor(_apply_curves(lab, curves), cv2.COLOR_Lab2RGB)


def denoise(image: np.ndarray, params: Denoise) -> np.ndarray:
    require_rgb(image)
    if params.method == "nlmeans":
        return cv2.fastNlMeansDenoisingColored(image, None, params.strength, params.strength, 7, 21)
    sigma_color = params.strength * 4
    return cv2.bilateralFilter(image, 2 * params.radius + 1, sigma_color, params.radius)


def sharpen(image: np.ndarray, params: Sharpen) -> np.ndarray:
    blurred = cv2.GaussianBlur(require_rgb(image), (0, 0), params.radius)
    sharpened = cv2.addWeighted(image, 1 + params.amount, blurred, -params.amount, 0)
    return np.where(cv2.absdiff(image, blurred) >= params.threshold, sharpened, image)


def smooth_skin(
    image: np.ndarray, params: SkinSmoothing, faces: Sequence[Box] | None = None
) -> np.ndarray:
    """Smooth inside ``faces`` (detected when None; pass them to detect once per image)."""
    faces = detect_faces(image) if faces is None else faces
    result = require_rgb(image).copy()
    for left, top, right, bottom in faces:
        pad = round(params.feather * max(right - left, bottom - top))
        x0, y0 = max(left - pad, 0), max(top - pad, 0)
        x1, y1 = min(right + pad, image.shape[1]), min(bottom + pad, image.shape[0])
        region = result[y0:y1, x0:x1]
        # Filter and feather at most ESTIMATE_SIDE across: a bilateral filter's cost grows
        # with its diameter squared, and both results are smooth enough to upscale.
        small = shrink_to(region, ESTIMATE_SIDE)
        scale = small.shape[1] / region.shape[1]
        diameter = max(3, round(min(small.shape[:2]) / 20) | 1)  # a fixed share of the face
        smoothed = cv2.bilateralFilter(small, diameter, 30, diameter / 2)
        mask: np.ndarray = np.zeros(small.shape[:2], dtype=np.float32)
        center = (
            round(((left + right) / 2 - x0) * scale),
            round(((top + bottom) / 2 - y0) * scale),
        )
        axes = (round((right - left) / 2 * scale), round((bottom - top) * 0.6 * scale))
        cv2.ellipse(mask, center, axes, 0, 0, 360, params.strength, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(pad * scale / 2, 1.0))
        size = region.shape[1::-1]
        smoothed = cv2.resize(smoothed, size, interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR)[..., None]
        result[y0:y1, x0:x1] = np.round(region + mask * (smoothed - region.astype(np.float32)))
    return result


def apply_retouch(
    image: np.ndarray,
    steps: Sequence[RetouchStep],
    references: BrandReference | None = None,
    faces: Sequence[Box] | None = None,
) -> np.ndarray:
    """Apply ``steps`` in order. ``references`` is needed by a BrandGrade step; ``faces``
    (detected when None) by SkinSmoothing."""
    result = require_rgb(image)
    for step in steps:
        match step:
            case WhiteBalance():
                result = white_balance(result, step)
            case ExposureNormalisation():
                result = normalise_exposure(result, step)
            case BrandGrade():
                if references is None:
                    raise ValueError(
                        "a brand_grade step needs the brand references; pass "
                        "references=BrandReference.from_images(brand reference images)"
                    )
                result = grade_to_brand(result, references, step)
            case Denoise():
                result = denoise(result, step)
            case Sharpen():
                result = sharpen(result, step)
            case SkinSmoothing():
                result = smooth_skin(result, step, faces)
            case _:
                raise ValueError(
                    f"retouch step {step!r} is not known; use one of "
                    "WhiteBalance, ExposureNormalisation, BrandGrade, Denoise, Sharpen, "
                    "SkinSmoothing"
                )
    return result if result is not image else image.copy()  # always a new array


def _sample_pixels(image: np.ndarray) -> np.ndarray:
    """(pixels, 3): the image at most ESTIMATE_SIDE across, for statistics."""
    return shrink_to(require_rgb(image), ESTIMATE_SIDE).reshape(-1, 3)


def _lab_histograms(lab_image: np.ndarray) -> np.ndarray:
    """(3, 256) per-channel histograms of an 8-bit CIELAB image, as shares of its pixels."""
    lab = _sample_pixels(lab_image)
    counts = np.stack([np.bincount(lab[:, channel], minlength=256) for channel in range(3)])
    return counts / len(lab)


def _cumulative(histograms: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(histograms, axis=1)
    shares: np.ndarray = cdf / cdf[:, -1:]
    return shares


def _apply_curves(image: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Map each channel through its 256-entry curve (3, 256) of levels."""
    table = np.clip(np.round(curves), 0, 255).astype(np.uint8).T.reshape(256, 1, 3)
    return cv2.LUT(image, table)
