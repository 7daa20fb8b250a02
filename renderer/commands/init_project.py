"""``campaign init DIR --checkpoint FILE``: a working project to start from.

It writes a pinned recipe for the checkpoint, a brand kit with a placeholder logo, palette
and reference images, a campaign with a small matrix, channel exports per aspect ratio and
gates, and a ``.gitignore`` for the output folder and the render service's state; then the
files are validated as ``campaign validate`` would. The YAML files are templates in
``renderer/data/init/``, with comments that teach the format. Nothing is written over an
existing file: a target that holds any of them is refused before anything is written.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from PIL import Image, ImageDraw

from renderer.commands.pin import pin
from renderer.core.atomic import write_bytes_atomic
from renderer.core.errors import InputError
from renderer.core.families import SIZE_MULTIPLE
from renderer.core.project_files import SERVICE_STATE
from renderer.validate.matrix import size_for_aspect

# What a family renders well at, and how: the recipe's defaults for a new project.
NATIVE_SIDE = {"sd15": 512, "sdxl": 1024, "flux": 1024}
SAMPLING = {
    "sd15": {"scheduler": "dpmpp_2m_karras", "steps": 25, "cfg": 7.0},
    "sdxl": {"scheduler": "dpmpp_2m_karras", "steps": 30, "cfg": 6.0},
    "flux": {"scheduler": "flow_euler", "steps": 28, "cfg": 3.5},
}
# The placeholder brand's colours (the template's palette): navy, red, cream, steel blue.
NAVY, RED, CREAM, STEEL = (29, 53, 87), (230, 57, 70), (241, 250, 238), (69, 123, 157)


@dataclass(frozen=True)
class Project:
    """The files ``init`` writes, relative to its folder."""

    folder: Path
    name: str

    @property
    def recipe(self) -> Path:
        return self.folder / "recipes" / f"{self.name}.yaml"

    @property
    def brand(self) -> Path:
        return self.folder / "brand" / "brand.yaml"

    @property
    def campaign(self) -> Path:
        return self.folder / "campaigns" / f"{self.name}.yaml"

    @property
    def images(self) -> list[Path]:
        return _brand_images(self.brand)

    @property
    def gitignore(self) -> Path:
        return self.folder / ".gitignore"

    def files(self) -> list[Path]:
        return [self.recipe, self.brand, self.campaign, *self.images, self.gitignore]


def init_project(
    folder: Path,
    checkpoint: Path,
    family: str,
    *,
    outputs: Path,
    config: Path | None = None,
    clip: Path | None = None,
    short_side: int | None = None,
) -> Project:
    """Write a new project in ``folder`` (created if needed) for ``checkpoint`` of
    ``family``; ``outputs``: the output folder, relative to ``folder``, that git ignores;
    ``config``: a single-file checkpoint's diffusers config folder; ``clip``: an open_clip
    folder to score with (else ViT-B-32, which open_clip downloads once)."""
    project = Project(folder, _project_name(folder))
    taken = [path for path in project.files() if path.exists()]
    if taken:
        raise InputError(
            f"{folder} already holds {len(taken)} of the files init writes",
            file=taken[0],
            found=", ".join(str(path.relative_to(folder)) for path in taken),
            fix="pass an empty or new folder (init never writes over a file)",
        )
    side = short_side or NATIVE_SIDE[family]
    multiple = SIZE_MULTIPLE[family]
    if side % multiple:
        raise InputError(
            f"a short side of {side} px is not a multiple of {multiple}, as {family} needs",
            found=str(side),
            fix=f"pass --short-side {side - side % multiple or multiple}",
        )
    wide, _ = size_for_aspect("16:9", short_side=side, pixels=None, multiple=multiple)
    values = {
        "name": project.name,
        "recipe": project.name,
        "brand": project.name.replace("-", " ").title(),
        "family": family,
        "checkpoint": yaml_path(checkpoint, project.recipe.parent),
        "config": f"\n  config: {yaml_path(config, project.recipe.parent)}" if config else "",
        "side": str(side),
        "wide": str(wide),
        "seed": "20270101",
        "scoring": _scoring(clip, project.campaign.parent),
        **{key: str(value) for key, value in SAMPLING[family].items()},
    }
    for path, template in ((project.recipe, "recipe.yaml"), (project.campaign, "campaign.yaml")):
        write_template(path, template, values)
    write_brand(project.brand, values["brand"])
    # The outputs, and campaign serve's queue and token file (README, "Render service").
    ignored = f"/{outputs.as_posix()}/\n/{SERVICE_STATE}/\n"
    write_bytes_atomic(project.gitignore, ignored.encode())
    pin(project.campaign)  # the recipe's and the brand kit's files, hashed in place
    return project


def write_brand(path: Path, name: str) -> None:
    """A placeholder brand kit at ``path`` named ``name``: the template, a logo and three
    reference images in its palette beside it (``campaign import`` writes one too)."""
    write_template(path, "brand.yaml", {"brand": json.dumps(name)})
    for file, image in zip(
        _brand_images(path), [_logo(), *map(_reference, (0, 1, 2))], strict=True
    ):
        write_bytes_atomic(file, _png(image))


def write_template(path: Path, template: str, values: Mapping[str, str]) -> None:
    """``renderer/data/init/TEMPLATE`` with ``$name`` placeholders filled, written atomically."""
    text = Template(_template(template)).substitute(values)
    write_bytes_atomic(path, text.encode("utf-8"))


def _brand_images(brand: Path) -> list[Path]:
    return [brand.parent / "logo.png"] + [
        brand.parent / f"reference-{index}.png" for index in (1, 2, 3)
    ]


def _project_name(folder: Path) -> str:
    """The folder's name as a recipe and campaign name (letters, digits, - and _)."""
    name = re.sub(r"[^a-z0-9_-]+", "-", folder.resolve().name.lower()).strip("-_")
    return name or "campaign"


def yaml_path(path: Path, start: Path) -> str:
    """``path`` as a YAML string: relative to the folder ``start`` when it lies in the
    project (which then moves whole), else absolute."""
    resolved, project = path.resolve(), start.resolve().parent
    inside = resolved.is_relative_to(project)
    return json.dumps(os.path.relpath(resolved, start.resolve()) if inside else str(resolved))


def _scoring(clip: Path | None, start: Path) -> str:
    if clip is not None:
        return f"  clip_model: {yaml_path(clip, start)}   # an open_clip folder"
    return (
        "  clip_name: ViT-B-32           # open_clip downloads these weights once\n"
        "  clip_pretrained: laion2b_s34b_b79k"
    )


def _template(name: str) -> str:
    return (resources.files("renderer") / "data" / "init" / name).read_text(encoding="utf-8")


def _logo(size: int = 128) -> Image.Image:
    """A placeholder mark: a navy disc with a red bar, on transparency."""
    logo = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    pen = ImageDraw.Draw(logo)
    pen.ellipse((2, 2, size - 3, size - 3), fill=(*NAVY, 255), outline=(*CREAM, 255), width=5)
    pen.rectangle((size * 0.25, size * 0.44, size * 0.75, size * 0.56), fill=(*RED, 255))
    return logo


def _reference(index: int, size: int = 128) -> Image.Image:
    """A placeholder reference in the palette: a cream-to-steel ground with navy and red
    shapes, each a little different."""
    image = Image.new("RGB", (size, size), CREAM)
    pen = ImageDraw.Draw(image)
    for y in range(size):
        t = y / (size - 1) * (0.5 + 0.25 * index)
        colour = tuple(round(c + (s - c) * t) for c, s in zip(CREAM, STEEL, strict=True))
        pen.line([(0, y), (size, y)], fill=colour)
    shift = 16 * index
    pen.rectangle((16 + shift, 64, 56 + shift, 104), fill=NAVY)
    pen.ellipse((64, 16 + shift // 2, 104, 56 + shift // 2), fill=RED)
    return image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
