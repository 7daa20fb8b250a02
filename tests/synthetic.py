"""Synthetic test images: drawn, deterministic, and small enough to keep tests fast."""

from __future__ import annotations

import cv2
import numpy as np


def draw_face(
    size: tuple[int, int] = (256, 256),
    face_height: int = 120,
    center: tuple[int, int] | None = None,
    background: tuple[int, int, int] = (90, 110, 130),
) -> np.ndarray:
    """A schematic frontal face (skin, hair, eyes, brows, nose, mouth), softly blurred:
    enough structure for OpenCV's frontal-face Haar cascade to find it."""
    width, height = size
    image = np.full((height, width, 3), background, np.uint8)
    cx, cy = center or (width // 2, height // 2)
    unit = face_height / 110  # the drawing below is 110 units tall

    def point(x: float, y: float) -> tuple[int, int]:
        return int(cx + x * unit), int(cy + y * unit)

    def axes(a: float, b: float) -> tuple[int, int]:
        return int(a * unit), int(b * unit)

    cv2.ellipse(image, point(0, 0), axes(42, 55), 0, 0, 360, (210, 170, 140), -1)  # skin
    cv2.ellipse(image, point(0, -52), axes(46, 20), 0, 180, 360, (60, 40, 30), -1)  # hair
    for side in (-1, 1):
        cv2.ellipse(image, point(side * 17, -12), axes(10, 5), 0, 0, 360, (40, 30, 30), -1)
        cv2.ellipse(image, point(side * 17, -24), axes(12, 3), 0, 0, 360, (80, 50, 40), -1)
    cv2.ellipse(image, point(0, 8), axes(6, 12), 0, 0, 360, (185, 140, 115), -1)  # nose
    cv2.ellipse(image, point(0, 30), axes(16, 5), 0, 0, 360, (150, 70, 70), -1)  # mouth
    return cv2.GaussianBlur(image, (0, 0), 2 * unit)


def shapes(size: int = 128, seed: int = 0) -> np.ndarray:
    """Flat-coloured rectangles and circles on a gradient: edges, flat areas, colour."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(60, 190, size).astype(np.uint8)
    image = np.empty((size, size, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = ramp[None, :], ramp[:, None], 128
    for _ in range(8):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = (int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x, y), (x + size // 5, y + size // 6), colour, -1)
        else:
            cv2.circle(image, (x, y), size // 8, colour, -1)
    return image


def with_noise(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def busy_background(size: tuple[int, int], block: int = 6, seed: int = 0) -> np.ndarray:
    """Random colour blocks from black to white: every text colour meets its worst case."""
    width, height = size
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // block + 1, width // block + 1, 3), dtype=np.uint8)
    return blocks.repeat(block, 0).repeat(block, 1)[:height, :width].copy()


def laplacian_variance(image: np.ndarray) -> float:
    """Sharpness (and noise): the variance of the gray image's Laplacian."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())
