"""A validated training spec: what ``renderer.validate.training`` hands to ``campaign train``.

Frozen values with every path resolved and every file hashed, like ``renderer.validate.inputs`` for
campaigns: the parsed file, its base recipe, and each dataset image with its caption
already rendered. Settings the file leaves unset stay unset here; the trainer's defaults
fill them when the job is built (``renderer.train.command``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from renderer.load.training_schema import TrainingFile
from renderer.load.yamlsource import KeyPath, YamlDocument
from renderer.validate.inputs import Recipe, ResolvedFile


@dataclass(frozen=True)
class DatasetImage:
    file: ResolvedFile  # the image, its sha256 checked against its pin (or its folder's)
    caption: str  # as rendered from the caption template
    key_path: KeyPath  # where the spec names it (its entry, or the folder)


@dataclass(frozen=True)
class TrainingSpec:
    spec: TrainingFile
    source: Path
    document: YamlDocument
    base: Recipe
    images: tuple[DatasetImage, ...]
    sample_prompts: tuple[str, ...]  # the sample prompt templates, rendered

    @property
    def ref(self) -> str:
        return f"{self.spec.name}@{self.spec.version}"

    def files(self) -> list[ResolvedFile]:
        """Every file a training reads: the base checkpoint and the images."""
        return [self.base.checkpoint, *(image.file for image in self.images)]
