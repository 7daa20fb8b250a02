"""Thumbnails for the review page, made once and kept in ``OUT/.thumbnails/``.

A thumbnail is named by the sha256 of the image it was made from and its size
(``SHA256-SIZE.webp``), so it is made once per content and size, stays valid across runs
and re-gates, and outlives its source: an earlier render whose file a re-render replaced
can still be shown at the sizes it was seen at. WebP, not PNG, so no thumbnail is ever
taken for a rendered image (tests and tools look for ``*.png`` under the output folder).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from renderer.plan.output_folder import THUMBNAILS, OutputFolder, PathRefused

FOLDER = THUMBNAILS
SIZES = (128, 256, 512, 1024, 2048)  # longest side, pixels
_QUALITY = 85


def thumbnail_path(out_dir: Path, sha256: str, size: int) -> Path:
    return out_dir / _relative(sha256, size)


def _relative(sha256: str, size: int) -> str:
    return f"{FOLDER}/{sha256}-{size}.webp"


def cached_thumbnail(out_dir: Path, sha256: str, size: int) -> Path | None:
    """The cached thumbnail, if one was made (a link planted there is not one of ours)."""
    path = thumbnail_path(out_dir, sha256, size)
    return path if path.is_file() and not path.is_symlink() else None


def make_thumbnail(source: Path, sha256: str, size: int, out_dir: Path) -> bytes:
    """The thumbnail of ``source`` (whose bytes hash to ``sha256``): at most ``size`` pixels
    on its longest side, never enlarged; made and written atomically unless cached."""
    from PIL import Image

    if size not in SIZES:
        raise ValueError(f"thumbnail size {size} is not one of {SIZES}")
    if (cached := cached_thumbnail(out_dir, sha256, size)) is not None:
        return cached.read_bytes()
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=_QUALITY)
    data = buffer.getvalue()
    # A render starting now sweeps temp files (renderer.ledger.locking): the cache is only a
    # saving, so a write it interrupts costs the next request the same work again. A cache
    # folder the owner refuses (a link out of the output folder) is not written at all.
    with contextlib.suppress(FileNotFoundError, PathRefused):
        OutputFolder(out_dir).write(_relative(sha256, size), data, "thumbnail")
    return data
