"""The pixel convention shared by retouch, faces, metrics and export.

Array functions take and return RGB ``uint8`` numpy arrays of shape (height, width, 3);
Pillow images convert with ``np.asarray(image.convert("RGB"))`` and back with
``Image.fromarray(array)``. Boxes in them are ``geometry.Box``.
"""

from __future__ import annotations

import cv2
import numpy as np


def require_rgb(image: np.ndarray, what: str = "image") -> np.ndarray:
    """``image`` itself when it is an RGB uint8 array, else a ValueError saying how to fix it."""
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"{what} is a {type(image).__name__}, not a numpy array; "
            'pass np.asarray(pil_image.convert("RGB"))'
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{what} has dtype {image.dtype} and shape {image.shape}; pass an RGB uint8 array "
            "of shape (height, width, 3)"
        )
    return image


def shrink_to(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` resized (area-averaged) to at most ``side`` pixels across; itself if smaller."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
