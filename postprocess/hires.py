"""Hires fix helpers with A1111's semantics: the second pass's size, and the latent upscale.

A hires fix renders at the base size, enlarges the result (in latent space here, or as
pixels with ``postprocess.upscale``) and denoises it again at the larger size.
``hires_size`` gives that size: from a factor, or A1111's "resize width/height to" where
a 0 side follows the other at the base aspect; derived sides snap to the family's
multiple (8 for SD, 16 for Flux) as campaign sizes do. ``upscale_latents`` resizes a
latent tensor with the modes A1111's "Latent" upscalers use; ``LATENT_UPSCALERS`` names
them as recipes and A1111's ``Hires upscaler`` field do. Sizes import no torch (recipe
validation computes them); ``upscale_latents`` imports it when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from postprocess.geometry import snap

if TYPE_CHECKING:
    import torch

__all__ = ["LATENT_MODES", "LATENT_UPSCALERS", "LatentUpscaler", "hires_size", "upscale_latents"]

LATENT_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic")


@dataclass(frozen=True)
class LatentUpscaler:
    mode: str  # torch's interpolation mode
    antialias: bool
    a1111_name: str  # what A1111's PNG info shows as ``Hires upscaler``


# A1111's latent upscalers, by the name a recipe gives them.
LATENT_UPSCALERS = {
    "latent": LatentUpscaler("bilinear", False, "Latent"),
    "latent-antialiased": LatentUpscaler("bilinear", True, "Latent (antialiased)"),
    "latent-bicubic": LatentUpscaler("bicubic", False, "Latent (bicubic)"),
    "latent-bicubic-antialiased": LatentUpscaler("bicubic", True, "Latent (bicubic antialiased)"),
    "latent-nearest": LatentUpscaler("nearest", False, "Latent (nearest)"),
    "latent-nearest-exact": LatentUpscaler("nearest-exact", False, "Latent (nearest-exact)"),
}
_ANTIALIASED_MODES = ("bilinear", "bicubic")  # torch antialiases only these
VAE_FACTOR = 8  # pixels per latent cell: SD1.5, SDXL and Flux VAEs alike


def hires_size(
    base: tuple[int, int],
    *,
    factor: float | None = None,
    size: tuple[int, int] | None = None,
    multiple: int = 8,
) -> tuple[int, int]:
    """(width, height) of the second pass: ``base`` × ``factor``, or ``size`` (a side of 0
    follows the other at the base aspect). Exactly one of factor and size."""
    width, height = base
    if width <= 0 or height <= 0 or width % multiple or height % multiple:
        raise ValueError(
            f"base size {base!r} must be positive multiples of {multiple}, as the render's is"
        )
    if (factor is None) == (size is None):
        raise ValueError(
            f"give exactly one of factor ({factor!r}) and size ({size!r}), e.g. factor=2"
        )
    if factor is not None:
        if not 1 <= factor <= 8:
            raise ValueError(f"hires factor {factor!r} is out of range; use 1 to 8, e.g. 2")
        return snap(width * factor, multiple), snap(height * factor, multiple)
    assert size is not None  # exactly one of factor and size, checked above
    target_width, target_height = size
    if target_width < 0 or target_height < 0 or target_width == target_height == 0:
        raise ValueError(
            f"hires size {size!r} needs a positive width or height (0 follows the other side)"
        )
    if target_width % multiple or target_height % multiple:
        raise ValueError(
            f"hires size {size!r} is not a multiple of {multiple}; round each side to a "
            f"multiple of {multiple} (or give 0 for a side to follow the base aspect)"
        )
    if target_height == 0:
        return target_width, snap(target_width * height / width, multiple)
    if target_width == 0:
        return snap(target_height * width / height, multiple), target_height
    # Both given: a different aspect would stretch the image (A1111 crops instead).
    if abs(target_width * height / width - target_height) > multiple:
        raise ValueError(
            f"hires size {size!r} does not keep the base aspect of {width}x{height}; give 0 "
            f"for one side, e.g. ({target_width}, 0)"
        )
    return target_width, target_height


def upscale_latents(
    latents: torch.Tensor,
    size: tuple[int, int],
    *,
    mode: str = "bilinear",
    antialias: bool = False,
) -> torch.Tensor:
    """(batch, channels, h, w) latents resized for a ``size`` (width, height) in pixels."""
    import torch.nn.functional as F

    if mode not in LATENT_MODES:
        raise ValueError(f"latent upscale mode {mode!r} is not known; use one of {LATENT_MODES}")
    if antialias and mode not in _ANTIALIASED_MODES:
        raise ValueError(
            f"antialias works with bilinear or bicubic, not {mode!r}; drop it or change mode"
        )
    if latents.ndim != 4:
        raise ValueError(
            f"latents have shape {tuple(latents.shape)}; pass (batch, channels, height, width)"
        )
    width, height = size
    if width % VAE_FACTOR or height % VAE_FACTOR:
        raise ValueError(f"size {size!r} is not a multiple of {VAE_FACTOR}; use hires_size")
    return F.interpolate(
        latents, size=(height // VAE_FACTOR, width // VAE_FACTOR), mode=mode, antialias=antialias
    )
