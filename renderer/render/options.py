"""How a run drives its models (``RenderOptions``): device, precision, compilation and the
memory savers. None of it changes what a variant is; all of it is recorded in the
environment fingerprint, and the options that move pixels are opt-in (reproduce names them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Marks a render option whose setting moves pixels beyond float noise: reproduce names it.
_CHANGES_PIXELS = {"changes_pixels": True}


@dataclass(frozen=True)
class RenderOptions:
    """How to run the models; none of it changes what a variant is, all of it is recorded."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # auto (cuda: bfloat16, mps: float16, cpu: float32) | …; reduced precision moves pixels
    dtype: str = dataclasses.field(default="auto", metadata=_CHANGES_PIXELS)
    compile: bool = False  # torch.compile the UNet/transformer (slow first batch)
    compile_backend: str = "inductor"  # eager / aot_eager: dynamo's guards without kernels
    channels_last: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = False  # diffusers model CPU offload (CUDA only)
    # diffusers' First Block Cache threshold (a Flux transformer skips its other blocks
    # while the first block's residual changes less than this): faster, other pixels.
    first_block_cache: float | None = dataclasses.field(default=None, metadata=_CHANGES_PIXELS)
    # fp8 weight storage (diffusers' layerwise casting): the denoiser's weights are kept in
    # this dtype and cast up to ``dtype`` one layer at a time as it runs: less memory.
    storage_dtype: str | None = dataclasses.field(default=None, metadata=_CHANGES_PIXELS)

    @classmethod
    def known(cls) -> set[str]:
        return {item.name for item in dataclasses.fields(cls)}

    @classmethod
    def changing_pixels(cls) -> set[str]:
        """Options that are opt-in because they change pixels (reproduce names them)."""
        return {
            item.name for item in dataclasses.fields(cls) if item.metadata.get("changes_pixels")
        }
