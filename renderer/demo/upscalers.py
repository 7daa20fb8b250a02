"""The demo Real-ESRGAN upscalers: RRDBNet weights in BasicSR's key layout (x4, and x2 behind a
pixel-unshuffle), whose output follows the input image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from renderer.demo.seeding import seeded

# Real-ESRGAN's RRDBNet (BasicSR key layout): spandrel fixes the dense blocks' growth at 32
# channels, so only the trunk width and the block count can shrink.
UPSCALER_FEATURES, UPSCALER_GROWTH, UPSCALER_BLOCKS = 8, 32, 1


def upscaler_builder(scale: int) -> Callable[[Path], None]:
    """An RRDBNet upscaler in the layout of RealESRGAN_x4plus (scale 4) or _x2plus (scale 2:
    the x4 network behind a 2x pixel-unshuffle, so 12 input channels)."""

    def build(out: Path) -> None:
        weights = seeded(f"upscaler-x{scale}", lambda: _rrdb_weights(unshuffle=4 // scale))
        save_file(weights, out, metadata={"format": "pt"})

    return build


def _rrdb_weights(unshuffle: int) -> dict[str, torch.Tensor]:
    """RRDBNet tensors under BasicSR's names (``conv_first``, ``body.N.rdbM.convK``, ...).

    Random weights alone make noise unrelated to the input, and a test of tiling needs an
    output that follows the image. So the first three channels carry RGB through: the mean
    of each unshuffled block, binomial smoothing in the up-convolutions. The random dense
    blocks add, through ``conv_body``, a texture about a tenth as strong that depends on
    every pixel within their receptive field.
    """
    features, growth, phases = UPSCALER_FEATURES, UPSCALER_GROWTH, unshuffle**2
    centre = torch.zeros(3, 3)
    centre[1, 1] = 1
    binomial = torch.tensor([1.0, 2.0, 1.0])
    smooth = torch.outer(binomial, binomial) / 16
    tensors = {}

    def add(
        name: str,
        out_channels: int,
        in_channels: int,
        std: float,
        rgb_kernel: torch.Tensor | None = None,
        rgb_phases: int = 1,
    ) -> None:
        weight = torch.randn(out_channels, in_channels, 3, 3) * std / (9 * in_channels) ** 0.5
        if rgb_kernel is not None:  # output channel c reads only colour c, through the kernel
            weight[:3] = 0
            for channel in range(3):
                inputs = slice(channel * rgb_phases, (channel + 1) * rgb_phases)
                weight[channel, inputs] = rgb_kernel / rgb_phases
        tensors[f"{name}.weight"] = weight
        tensors[f"{name}.bias"] = torch.zeros(out_channels)

    # torch.pixel_unshuffle puts colour c's phases at channels c*phases ... (c+1)*phases-1.
    add("conv_first", features, 3 * phases, 0.5, centre, phases)
    for block in range(UPSCALER_BLOCKS):
        for rdb in (1, 2, 3):
            for index in range(1, 6):
                add(
                    f"body.{block}.rdb{rdb}.conv{index}",
                    features if index == 5 else growth,
                    features + (index - 1) * growth,
                    1.0,
                )
    add("conv_body", features, features, 0.1)
    add("conv_up1", features, features, 0.05, smooth)
    add("conv_up2", features, features, 0.05, smooth)
    add("conv_hr", features, features, 0.05, centre)
    add("conv_last", 3, features, 0.05, centre)
    return tensors
