"""The validated inputs of a run: what ``renderer.validate.campaign`` hands to the plan.

Frozen values with every path resolved and every referenced file hashed: the recipe, the
brand kit, the campaign and, for each variant of its matrix, a ``Point`` holding every
per-variant value already rendered and checked (templates, size, seed, control images).
``FileIndex`` finds a file's path by its sha256, for the renderer and the post-process
worker, which know files only by name and hash (as a variant's spec names them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from renderer.core.errors import MissingFileError
from renderer.load.campaign_schema import (
    DEFAULT_TEXT_BOXES,
    AxisValue,
    BrandKitFile,
    CampaignFile,
    PlacementSpec,
    TextBoxSpec,
)
from renderer.load.schema import FileId, RecipeFile
from renderer.load.yamlsource import KeyPath, YamlDocument


@dataclass(frozen=True)
class ResolvedFile:
    """A referenced file, its absolute location and its sha256 (verified or computed)."""

    path: Path
    sha256: str

    @property
    def identity(self) -> FileId:
        return FileId(name=self.path.name, sha256=self.sha256)


@dataclass(frozen=True)
class Recipe:
    spec: RecipeFile
    source: Path
    document: YamlDocument
    checkpoint: ResolvedFile
    checkpoint_config: Path | None
    loras: tuple[tuple[ResolvedFile, float], ...]
    controlnets: tuple[ResolvedFile, ...] = ()
    ip_adapter: ResolvedFile | None = None
    # The refine block's model files by the key path naming them (refine.refiner.checkpoint,
    # refine.upscale.model, refine.detail.0.checkpoint, …).
    refine_files: Mapping[KeyPath, ResolvedFile] = field(default_factory=dict)
    upscale_scale: int | None = None  # refine.upscale's model scale, read from its header
    refiner_config: Path | None = None  # a single-file refine.refiner's config folder

    def configs(self) -> dict[str, Path]:
        """Each single-file model's config folder (the checkpoint's, the refiner's), by the
        model's sha256."""
        refiner = self.refine_files.get(("refine", "refiner", "checkpoint"))
        return {
            model.sha256: config
            for model, config in [
                (self.checkpoint, self.checkpoint_config),
                (refiner, self.refiner_config),
            ]
            if model is not None and config is not None
        }

    @property
    def ref(self) -> str:
        return f"{self.spec.name}@{self.spec.version}"

    def files(self) -> list[ResolvedFile]:
        return [
            self.checkpoint,
            *(lora for lora, _ in self.loras),
            *self.controlnets,
            *([self.ip_adapter] if self.ip_adapter else []),
            *self.refine_files.values(),
        ]


@dataclass(frozen=True)
class BrandKit:
    spec: BrandKitFile
    source: Path
    logo: ResolvedFile
    references: tuple[ResolvedFile, ...]
    fonts: Mapping[str, ResolvedFile] = field(default_factory=dict)  # role -> font file
    # Tried in order, for every role, for the characters the role's font lacks.
    font_fallbacks: tuple[ResolvedFile, ...] = ()
    logo_size: tuple[int, int] = (1, 1)  # the logo image's (width, height)

    def placement_for(self, aspect: str | None) -> PlacementSpec:
        placements = self.spec.placement
        return placements.get(aspect or "", placements.get("default", PlacementSpec()))

    def text_box_for(self, aspect: str | None, role: str) -> TextBoxSpec:
        """The box of ``role`` text: the aspect's, else the brand's default, else built in."""
        for key in (aspect or "", "default"):
            placement = self.spec.text.get(key)
            box: TextBoxSpec | None = None if placement is None else getattr(placement, role)
            if box is not None:
                return box
        return DEFAULT_TEXT_BOXES[role]

    def files(self) -> list[ResolvedFile]:
        return [self.logo, *self.references, *self.fonts.values(), *self.font_fallbacks]


@dataclass(frozen=True)
class ClipChoice:
    """Which CLIP scores a campaign: a local folder, or a name with a tag or weights file."""

    folder: Path | None = None
    name: str | None = None
    pretrained: str | None = None


@dataclass(frozen=True)
class Point:
    """One variant of the matrix with every per-variant value resolved and checked."""

    recipe: Recipe
    axes: Mapping[str, AxisValue]
    seed: int
    aspect: str | None  # the value of the campaign's size axis, if it has one
    width: int
    height: int
    steps: int
    cfg: float
    lora_weights: tuple[float, ...]  # in the recipe's LoRA order
    prompt: str
    negative_prompt: str
    output_name: str
    texts: Mapping[str, str]  # text role -> the text as rendered (non-empty ones only)
    images: Mapping[KeyPath, ResolvedFile]  # control images by the recipe key naming them
    # The refine block's templates as rendered for this variant, by recipe key.
    refine_prompts: Mapping[KeyPath, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Campaign:
    spec: CampaignFile
    source: Path
    document: YamlDocument
    recipes: tuple[Recipe, ...]  # the one recipe, or the recipe axis's, in axis order
    brand: BrandKit
    clip: ClipChoice
    points: tuple[Point, ...]

    def recipe(self, ref: str) -> Recipe:
        """The campaign's recipe ``name@version``."""
        return next(recipe for recipe in self.recipes if recipe.ref == ref)

    @property
    def recipe_refs(self) -> str:
        """Its recipes as a person reads them: ``demo-sd15@1`` or ``a@1 + b@2``."""
        return " + ".join(recipe.ref for recipe in self.recipes)

    def files(self) -> FileIndex:
        """Every file a render of this campaign reads, by sha256."""
        images = (file for point in self.points for file in point.images.values())
        configs = {sha: path for recipe in self.recipes for sha, path in recipe.configs().items()}
        recipes = [file for recipe in self.recipes for file in recipe.files()]
        return FileIndex.of([*recipes, *self.brand.files(), *images], configs)


@dataclass(frozen=True)
class FileIndex:
    """Files by sha256: how the renderer and the worker find what a spec names by name and
    hash. ``configs`` holds the local diffusers config folder of single-file checkpoints."""

    paths: Mapping[str, Path]
    configs: Mapping[str, Path] = field(default_factory=dict)

    @classmethod
    def of(
        cls, files: Iterable[ResolvedFile], configs: Mapping[str, Path] | None = None
    ) -> FileIndex:
        return cls({file.sha256: file.path for file in files}, dict(configs or {}))

    def path(self, file: FileId) -> Path:
        """Where the file a spec names is on this machine."""
        path = self.paths.get(file.sha256)
        if path is None:
            raise MissingFileError(
                f"{file.name} (sha256 {file.sha256}) was not found",
                fix="restore the file, or pass its folder with --search",
            )
        return path

    def config(self, checkpoint: FileId) -> Path | None:
        return self.configs.get(checkpoint.sha256)
