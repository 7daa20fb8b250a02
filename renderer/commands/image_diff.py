"""Compare a re-rendered image with the recorded one: bytes, then pixels (max difference
and SSIM), and say what differs when only the bytes do."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from renderer.core.hashing import sha256_bytes


@dataclass
class Comparison:
    identical_bytes: bool
    # Both None: not comparable (the recorded file is gone, altered or another size).
    max_pixel_difference: int | None = None  # in 1/255 steps, per channel
    ssim: float | None = None
    notes: list[str] = field(default_factory=list)


def compare(
    original: Path | None, original_sha256: str | None, data: bytes, reproduced: Path
) -> Comparison:
    """``data`` (written at ``reproduced``) against the recorded file and its sha256."""
    if sha256_bytes(data) == original_sha256:
        result = Comparison(identical_bytes=True, max_pixel_difference=0, ssim=1.0)
        if original is not None and not original.is_file():
            result.notes.append(
                f"the recorded file {original} is missing; the re-render is "
                f"byte-identical to it: restore it from {reproduced}"
            )
        elif original is not None and sha256_bytes(original.read_bytes()) != original_sha256:
            result.notes.append(
                f"the recorded file {original} was altered since it was "
                f"rendered; the re-render matches the recorded sha256: restore "
                f"it from {reproduced}"
            )
        return result
    if (
        original is None
        or not original.is_file()
        or sha256_bytes(original.read_bytes()) != original_sha256
    ):
        state = "missing" if original is None or not original.is_file() else "altered"
        return Comparison(
            identical_bytes=False,
            notes=[
                f"the recorded file is {state}, so only its recorded sha256 {original_sha256} can "
                f"be compared: the re-render's is {sha256_bytes(data)}"
            ],
        )
    old_bytes = original.read_bytes()
    old, new = pixels(old_bytes), pixels(data)
    if old.shape != new.shape:
        return Comparison(
            identical_bytes=False,
            notes=[
                f"size differs: recorded {old.shape[1]}x{old.shape[0]}, re-rendered "
                f"{new.shape[1]}x{new.shape[0]}"
            ],
        )
    result = Comparison(
        identical_bytes=False,
        max_pixel_difference=int(np.abs(old - new).max()),
        ssim=ssim(old, new),
    )
    if result.max_pixel_difference == 0:
        result.notes += metadata_differences(old_bytes, data) or ["encoding differs"]
        result.notes.append("pixels are identical; only the file's bytes differ")
    return result


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def ssim(first: np.ndarray, second: np.ndarray, window: int = 7) -> float:
    """Mean structural similarity of two HxWxC images (0-255), uniform window as
    scikit-image's default (7x7, sample covariance)."""
    a, b = first.astype(np.float64), second.astype(np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    window = min(window, a.shape[0], a.shape[1])
    window -= 1 - window % 2  # odd
    if window < 3:
        return 1.0 if np.array_equal(a, b) else 0.0
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    n = window * window
    norm = n / (n - 1)
    mean_a, mean_b = _box_mean(a, window), _box_mean(b, window)
    var_a = norm * (_box_mean(a * a, window) - mean_a**2)
    var_b = norm * (_box_mean(b * b, window) - mean_b**2)
    cov = norm * (_box_mean(a * b, window) - mean_a * mean_b)
    value = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / (
        (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(value.mean())


def _box_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean over every window x window square (valid positions only), via an integral image."""
    total = np.pad(x, ((1, 0), (1, 0), (0, 0))).cumsum(0).cumsum(1)
    sums = (
        total[window:, window:]
        - total[:-window, window:]
        - total[window:, :-window]
        + total[:-window, :-window]
    )
    means: np.ndarray = sums / (window * window)
    return means


def metadata_differences(first: bytes, second: bytes) -> list[str]:
    with Image.open(io.BytesIO(first)) as a, Image.open(io.BytesIO(second)) as b:
        old, new = dict(getattr(a, "text", {})), dict(getattr(b, "text", {}))
    return [
        f"PNG text chunk {key!r} differs"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
