"""Aspect buckets: which size a training image is trained at. Plain arithmetic on sizes and
model configs, so ``campaign validate`` refuses an image too small for any bucket before
``campaign train`` writes anything, by the same rule the trainer follows.

* A bucket step is the pixel multiple both sides of a training image must be: the VAE's
  downsampling times the UNet's (SD, SDXL), or times Flux's 2x2 latent packing.
* Buckets downscale, never upscale: an image larger than ``resolution²`` pixels is scaled to
  that area; a smaller one keeps its size. Both sides are then floored to the bucket step
  and the image is resized to cover the bucket (Lanczos) and centre-cropped, so the crop
  loses at most one step per side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from renderer.core.errors import InputError

# The bucket area's side when a training spec sets no train.resolution: the resolution each
# family's base models were trained at.
DEFAULT_RESOLUTION = {"sd15": 512, "sdxl": 1024, "flux": 1024}


def bucket_step(family: str, vae_blocks: Sequence[int], denoiser_blocks: Sequence[int]) -> int:
    """The bucket step from the VAE's and the denoiser's ``block_out_channels``."""
    # int ** int is typed Any (a negative power is a float): every count here is at least 1.
    vae_scale: int = 2 ** (len(vae_blocks) - 1)
    if family == "flux":
        return vae_scale * 2  # latents are packed in 2x2 patches
    denoiser_scale: int = 2 ** (len(denoiser_blocks) - 1)
    return vae_scale * denoiser_scale


def trainable(bucket: tuple[int, int], step: int, channels_per_group: int | None) -> bool:
    """Whether a bucket can be trained at: at least one step a side, and — for a UNet, whose
    GroupNorm needs two values per group — its deepest feature map (the bucket over the
    step) times the UNet's fewest channels per norm group at least 2 (batch size 1)."""
    cells = (bucket[0] // step) * (bucket[1] // step)
    return cells >= 1 and (channels_per_group is None or channels_per_group * cells >= 2)


@dataclass(frozen=True)
class Geometry:
    """How one image becomes one bucket (SDXL conditions on all of it)."""

    original: tuple[int, int]  # (width, height) of the file
    resized: tuple[int, int]  # (width, height) after the cover resize
    crop: tuple[int, int]  # (left, top) of the crop in the resized image
    bucket: tuple[int, int]  # (width, height) trained at

    @property
    def sdxl_time_ids(self) -> tuple[int, int, int, int, int, int]:
        """original (h, w), crop top-left (y, x), target (h, w): SDXL's micro-conditioning."""
        (width, height), (left, top), (bw, bh) = self.original, self.crop, self.bucket
        return (height, width, top, left, bh, bw)


def bucket_of(size: tuple[int, int], resolution: int, step: int) -> tuple[int, int]:
    """The bucket an image of ``size`` is trained at; a side of 0 means it fits none."""
    width, height = size
    area = resolution * resolution
    # Scaled to the area in integers (the floor of the exact root): no float picks a bucket.
    scaled = (
        (math.isqrt(area * width // height), math.isqrt(area * height // width))
        if width * height > area
        else size
    )
    return (scaled[0] // step * step, scaled[1] // step * step)


def geometry(path: Path, size: tuple[int, int], resolution: int, step: int) -> Geometry:
    width, height = size
    bucket = bucket_of(size, resolution, step)
    if min(bucket) == 0:
        raise InputError(
            f"image is {width}x{height}, smaller than one bucket step of {step} px on a side",
            file=path,
            expected=f"both sides at least {step} px (buckets never upscale)",
            fix="use a larger image or drop it from the dataset",
        )
    cover = max(bucket[0] / width, bucket[1] / height)
    resized = (max(bucket[0], round(width * cover)), max(bucket[1], round(height * cover)))
    crop = ((resized[0] - bucket[0]) // 2, (resized[1] - bucket[1]) // 2)
    return Geometry(size, resized, crop, bucket)


def image_size(path: Path) -> tuple[int, int]:
    """The upright size (EXIF orientation applied) without decoding the pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            rotated = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except OSError as err:
        raise InputError(
            f"cannot read the image: {err}", file=path, fix="give a PNG, JPEG or WebP file"
        ) from None
    return (height, width) if rotated else (width, height)
