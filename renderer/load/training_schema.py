"""The LoRA training spec (``recipes/NAME.train.yaml``), as pydantic models (README, "LoRA
training"): dataset, LoRA shape, training and sample settings, each range declared once.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from renderer.core.families import Family
from renderer.load.schema import (
    DEVICE_PATTERN,
    RECIPE_REF_PATTERN,
    Cfg,
    Name,
    PinnedFileRef,
    Seed,
    Size,
    Steps,
    Strict,
    Version,
)

# The choices a training spec offers, with what the engine maps each to (names only).
TRAINING_SCHEDULES = {
    "constant": "constant_with_warmup",
    "cosine": "cosine",
    "linear": "linear",
}  # -> diffusers.optimization.get_scheduler names
MIXED_PRECISIONS = {"none": "float32", "bf16": "bfloat16", "fp16": "float16"}  # -> torch dtype
SAVE_PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # -> torch dtype
OPTIMIZERS = ("adamw", "adamw8bit")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# What a caption template can read besides ``trigger`` (when the dataset names one).
CAPTION_NAMES = ("text", "name", "index")
Positive = Annotated[float, Field(gt=0.0)]
Modules = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class DatasetSpec(Strict):
    """The training images, each pinned by sha256, and how each gets its caption."""

    images: list[PinnedFileRef] = Field(
        default_factory=list,
        description="Images (PNG, JPEG, WebP) by path (relative to this "
        "file) and sha256, in this order.",
    )
    folder: PinnedFileRef | None = Field(
        default=None,
        description="A folder of images: every .png/.jpg/.jpeg/.webp directly "
        "in it, in name order, after `images`. Its sha256 is the folder hash over every "
        "non-hidden file in it, caption files included (`campaign pin` writes it).",
    )
    trigger: str | None = Field(
        default=None,
        min_length=1,
        description="The trigger word: "
        "caption templates and sample prompts read it as {{ trigger }}.",
    )
    caption: str = Field(
        default="{{ text }}",
        min_length=1,
        description="Jinja template of each image's "
        "caption. It reads text (the .txt file beside the image: reference-1.txt for "
        "reference-1.png), name (the file name without extension), index (from 0) and "
        "trigger. The default is the .txt file as it is.",
    )


class LoraTrainingSpec(Strict):
    """The adapter. Unset keys take the engine's defaults (the resolved spec, in the ledger
    and `campaign train --json`, shows every value)."""

    rank: int | None = Field(default=None, ge=1, le=1024)
    alpha: Positive | None = Field(
        default=None,
        description="The update is scaled by alpha / rank (kohya, peft); unset: the rank.",
    )
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    target_modules: Modules | None = Field(
        default=None,
        description="Denoiser module names (peft); unset: the family's "
        "attention projections (and Flux's feed-forwards), as diffusers' DreamBooth scripts.",
    )
    train_text_encoder: bool | None = Field(
        default=None, description="Also adapt the text encoder(s): sd15 and sdxl only."
    )
    text_encoder_target_modules: Modules | None = None
    save_precision: Literal[tuple(SAVE_PRECISIONS)] | None = None  # type: ignore[valid-type]


class TrainingSettingsSpec(Strict):
    """The optimisation. Unset keys take the engine's defaults (resolution: the family's)."""

    steps: int | None = Field(default=None, ge=1, le=10_000_000, description="Optimizer steps.")
    learning_rate: Positive | None = None
    text_encoder_learning_rate: Positive | None = None
    schedule: Literal[tuple(TRAINING_SCHEDULES)] | None = Field(  # type: ignore[valid-type]
        default=None, description="After the warm-up."
    )
    warmup_steps: int | None = Field(default=None, ge=0)
    batch_size: int | None = Field(default=None, ge=1, le=4096)
    gradient_accumulation: int | None = Field(default=None, ge=1, le=4096)
    resolution: int | None = Field(
        default=None,
        ge=16,
        le=8192,
        description="Bucket area resolution²: larger images are "
        "scaled down to that area, smaller ones keep their size (never upscaled).",
    )
    seed: Seed | None = None
    mixed_precision: Literal[tuple(MIXED_PRECISIONS)] | None = Field(  # type: ignore[valid-type]
        default=None, description="Of the frozen weights; the LoRA trains in float32."
    )
    gradient_checkpointing: bool | None = None
    save_every: int | None = Field(
        default=None,
        ge=0,
        description="A checkpoint (LoRA file, "
        "samples, resumable state) every N steps; 0: at the end only.",
    )
    max_grad_norm: Positive | None = None
    weight_decay: float | None = Field(default=None, ge=0.0)
    optimizer: Literal[OPTIMIZERS] | None = None  # type: ignore[valid-type]
    guidance: float | None = Field(
        default=None, ge=0.0, le=30.0, description="Flux: the guidance embedding while training."
    )
    device: str | None = Field(default=None, pattern=DEVICE_PATTERN)


class TrainingSamplesSpec(Strict):
    """Images rendered at every checkpoint: each prompt with each seed."""

    prompts: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Jinja templates; they read {{ trigger }}."
    )
    seeds: Annotated[list[Seed], Field(min_length=1)] | None = None
    steps: Steps | None = None
    guidance: Cfg | None = Field(
        default=None, description="CFG for sd15/sdxl, the embedded guidance for flux."
    )
    negative_prompt: str | None = None
    size: Size | None = Field(
        default=None, description="[width, height]; unset: the training resolution, square."
    )


class TrainingFile(Strict):
    """``recipes/NAME.train.yaml``: a LoRA training, pinned and versioned."""

    name: Name
    version: Version
    family: Family = Field(description="The family the LoRA is for; the base recipe must be of it.")
    base: str = Field(
        pattern=RECIPE_REF_PATTERN,
        description="name@version of the recipe "
        "in recipes_dir whose checkpoint (and its pin) is trained on; its LoRAs "
        "are not part of the training.",
    )
    recipes_dir: str = Field(
        default=".",
        description="Where base is looked up, relative to this file (default: beside it).",
    )
    dataset: DatasetSpec
    lora: LoraTrainingSpec = LoraTrainingSpec()
    train: TrainingSettingsSpec = TrainingSettingsSpec()
    samples: TrainingSamplesSpec = TrainingSamplesSpec()
    comment: str = Field(default="", description="Written into the file as ss_training_comment.")
