"""A scratch recipe and campaign for tests that render one family with the tiny models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from renderer.core.hashing import sha256_path
from renderer.run.execute import render_campaign

from .conftest import REPO

MODELS = REPO / "models" / "demo"
BRAND = REPO / "campaigns" / "brands" / "kestrel"
SIZE = 64


class Scratch:
    """A folder with one recipe and a campaign of 2 products (the brand references) × 1
    background, 64×64, 4 steps; the references are copied beside it, and a 96×72 copy of
    each (``wide-…``) serves as a source of another size and aspect."""

    def __init__(
        self,
        root: Path,
        family: str = "sd15",
        checkpoint: str | None = None,
        *,
        output: str = "{{ product }}-{{ background }}",
    ):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for image in BRAND.glob("reference-*.png"):
            shutil.copy(image, root / image.name)
            with Image.open(image) as reference:
                reference.resize((96, 72)).save(root / f"wide-{image.name}")
        self.recipe = {
            "name": "r",
            "version": 1,
            "family": family,
            "checkpoint": self.model(checkpoint or family),
            "scheduler": "flow_euler" if family == "flux" else "euler",
            "steps": 4,
            "cfg": 5.0,
            "size": [SIZE, SIZE],
            "seed": 11,
            "prompt": "a {{ product }} on {{ background }}",
        }
        self.campaign = {
            "name": "c",
            "recipe": "r@1",
            "recipes_dir": "recipes",
            "brand": str(BRAND / "brand.yaml"),
            "matrix": {
                "axes": {"product": ["reference-1", "reference-2"], "background": ["studio"]}
            },
            "output": output,
            "logo": False,
            "scoring": {"clip_model": str(MODELS / "clip")},
        }

    @staticmethod
    def model(name: str) -> dict:
        return {"path": str(MODELS / name), "sha256": sha256_path(MODELS / name)}

    def campaign_path(self) -> Path:
        return self.root / "campaign.yaml"

    def write(self) -> Path:
        (self.root / "recipes").mkdir(exist_ok=True)
        (self.root / "recipes" / "r.yaml").write_text(yaml.safe_dump(self.recipe))
        path = self.campaign_path()
        path.write_text(yaml.safe_dump(self.campaign, sort_keys=False))
        return path

    def render(self, out: str, log: list[str] | None = None) -> dict[str, np.ndarray]:
        """Render in this process (the code the CLI runs, without its imports); the PNGs by
        file name without extension."""
        summary = render_campaign(
            self.write(),
            self.root / out,
            log=(log if log is not None else []).append,
            show_progress=False,
        )
        assert summary.failed == 0
        return {
            path.stem: pixels(path)
            for path in sorted((self.root / out).rglob("*.png"))
            if "exports" not in path.parts
        }

    def source(self, product: str) -> np.ndarray:
        """The wide source as the renderer sizes it: RGB, LANCZOS to the variant's size."""
        with Image.open(self.root / f"wide-{product}.png") as image:
            return np.asarray(
                image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.int16
            )


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)
