"""The worker side of a run: render a batch, post-process, score, encode, write the files.

A ``Producer`` holds the loaded models of one campaign. ``produce`` returns what the
driver needs to commit each image to the ledger (``Produced``); it never touches the
ledger, so the same code runs in-process (local executor) and inside Ray actors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .atomic import write_bytes_atomic
from .config import Campaign
from .hashing import sha256_bytes
from .metadata import encode_png
from .plan import Variant


@dataclass(frozen=True)
class Produced:
    """One finished image, on disk, as reported to the driver."""

    variant: Variant
    output_path: str  # relative to the output folder
    output_sha256: str
    output_bytes: int
    scores: Mapping[str, float]
    seconds: float  # this image's share of its batch's wall time
    batch: tuple[str, ...]  # the variant ids rendered in the same pipeline call
    environment: Mapping[str, Any]


def output_path(campaign: Campaign, variant: Variant) -> str:
    return f"{campaign.spec.name}/{variant.output_name}.png"


def finish_image(image: Image.Image, variant: Variant, logo: Image.Image | None) -> Image.Image:
    """Post-process as the variant's spec says (what is hashed is what is applied)."""
    from postprocess.overlay import LogoPlacement, overlay_logo

    settings = variant.spec["postprocess"]["logo"]
    if settings is None:
        return image
    placement = LogoPlacement(anchor=settings["anchor"], margin=settings["margin"],
                              scale=settings["scale"])
    return overlay_logo(image, logo, placement)


def open_image(path: Path, mode: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert(mode)


class Producer:
    """The models and brand assets of one campaign, loaded once."""

    def __init__(self, campaign: Campaign, log: Callable[[str], None]):
        from postprocess.scoring import ClipScorer

        from .render import DiffusersRenderer, RenderOptions

        self.campaign = campaign
        render = campaign.spec.render
        self.renderer = DiffusersRenderer(RenderOptions(
            device=render.device, dtype=render.dtype, compile=render.compile,
            channels_last=render.channels_last, vae_tiling=render.vae_tiling,
            vae_slicing=render.vae_slicing, cpu_offload=render.cpu_offload), log=log)
        self.scorer = ClipScorer.from_folder(campaign.clip_model,
                                             batch_size=campaign.spec.scoring.batch_size)
        self.logo = open_image(campaign.brand.logo.path, "RGBA")
        self.references = [open_image(ref.path, "RGB") for ref in campaign.brand.references]
        self._environment: dict[str, Any] | None = None

    def environment(self) -> dict[str, Any]:
        if self._environment is None:
            self._environment = self.renderer.fingerprint()
        return self._environment

    def batch_size(self) -> int:
        from .render import auto_batch_size

        requested = self.campaign.spec.render.batch_size
        return requested if isinstance(requested, int) else auto_batch_size(
            self.renderer.device, self.campaign.recipe.spec.family)

    def produce(self, batch: Sequence[Variant], out_dir: Path) -> list[Produced]:
        started = time.perf_counter()
        images = self.renderer.render_resilient(self.campaign.recipe, batch)
        finished = [finish_image(image, variant, self.logo)
                    for image, variant in zip(images, batch, strict=True)]
        scores = self.scorer.score(finished, [v.prompt for v in batch], self.references)
        seconds_each = (time.perf_counter() - started) / len(batch)
        produced = []
        for variant, image, score in zip(batch, finished, scores, strict=True):
            data = encode_png(image, variant.spec)
            relative = output_path(self.campaign, variant)
            write_bytes_atomic(out_dir / relative, data)
            produced.append(Produced(
                variant=variant, output_path=relative, output_sha256=sha256_bytes(data),
                output_bytes=len(data), scores=score.as_dict(),
                seconds=round(seconds_each, 4), batch=tuple(v.id for v in batch),
                environment=self.environment()))
        return produced
