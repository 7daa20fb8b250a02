"""Control inputs made with OpenCV, no downloads: ControlNet maps, masks, source images,
and what img2img/inpaint results keep of their source.

Every function is pure (PIL image in, PIL image out) and deterministic. The control map
is computed at the variant's size, so a pose or edge map lines up with the latents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def load_rgb(path: Path, size: tuple[int, int]) -> Image.Image:
    """The image at path as RGB, resized (LANCZOS) to exactly ``size`` = (width, height)."""
    with Image.open(path) as image:
        return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def canny(image: Image.Image, low: int = 100, high: int = 200) -> Image.Image:
    gray = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
    return _gray_to_rgb(cv2.Canny(gray, low, high))


def softedge(image: Image.Image) -> Image.Image:
    """Soft edges (HED-like): the gradient magnitude of a smoothed image, normalised."""
    gray = cv2.GaussianBlur(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY), (0, 0), 1.5)
    magnitude = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    return _gray_to_rgb(_normalise(magnitude))


def lineart(image: Image.Image) -> Image.Image:
    """White lines on black: an adaptive threshold of the grayscale image."""
    gray = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
    lines = cv2.adaptiveThreshold(
        gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, blockSize=11, C=4
    )
    return _gray_to_rgb(lines)


def depth(image: Image.Image) -> Image.Image:
    """A depth-like map (near = bright): distance from strong edges, blended with a blurred
    luminance, heavily smoothed. No model, so it is a cue for layout, not true depth."""
    gray = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(gray, 50, 150)
    distance = cv2.distanceTransform(255 - edges, cv2.DIST_L2, 5)
    blurred = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), max(image.size) / 16)
    mixed = 0.5 * _normalise(distance).astype(np.float32) + 0.5 * blurred
    return _gray_to_rgb(_normalise(cv2.GaussianBlur(mixed, (0, 0), 2.0)))


PREPROCESSORS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "none": lambda image: image,
    "canny": canny,
    "softedge": softedge,
    "lineart": lineart,
    "depth": depth,
}


def batch_array(images: Sequence[Image.Image]) -> np.ndarray:
    """Same-size RGB images as one float batch (N, H, W, 3) in [0, 1], the values diffusers'
    image processor makes of PIL images."""
    return np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images]) / 255


def region_mask(size: tuple[int, int], region: Sequence[float]) -> Image.Image:
    """A white box (the part to repaint) on black; region = fractions [x0, y0, x1, y1]."""
    width, height = size
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = (
        round(value * side)
        for value, side in zip(region, (width, height, width, height), strict=True)
    )
    mask[y0:y1, x0:x1] = 255
    return Image.fromarray(mask).convert("RGB")


def keeps_source(strength: float, steps: int) -> bool:
    """Whether an img2img/inpaint render denoises less than one step, so its result is the
    source itself (strength 0 is the limit case). diffusers' SD/SDXL pipelines run
    int(steps x strength) steps and fail on 0 (ValueError; SD1.5 img2img a RuntimeError on an
    empty timestep tensor); Flux's run 0 < steps x strength < 1 as one whole step."""
    return steps * strength < 1


def paste_source_outside_mask(
    source: Image.Image, generated: Image.Image, mask: Image.Image
) -> Image.Image:
    """The generated image where the mask is white, the source where it is black, blended
    in between (A1111's inpaint overlay). The pipeline only keeps the unmasked latents, and
    the VAE round trip changes those pixels; this puts the source's own pixels back.

    diffusers' VaeImageProcessor.apply_overlay does the same through PIL's premultiplied
    RGBa, which rounds partly masked pixels twice; here there is one rounding, and none
    at mask 0 or 255.
    """
    weight = np.asarray(mask.convert("L"), dtype=np.float32)[..., None] / 255.0
    kept = np.asarray(source.convert("RGB"), dtype=np.float32)
    painted = np.asarray(generated.convert("RGB"), dtype=np.float32)
    return Image.fromarray(np.rint(kept + (painted - kept) * weight).astype(np.uint8))


def _normalise(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:
        return np.zeros(values.shape, dtype=np.uint8)
    return ((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(gray).convert("RGB")
