"""The LoRA trainer's input: one frozen ``TrainingJob`` of plain values, and its checks.

A job names everything that decides the trained file's bytes — the family, the checkpoint,
the dataset (image path, sha256, caption), the LoRA and train settings, the sample prompts —
plus what the file should say about where it came from (``spec_hash``, ``training_id``,
``started_at``).
``to_dict()``/``from_dict()`` round-trip it through JSON; ``fingerprint`` (sha256 of that
canonical JSON) ties checkpoints to the job that wrote them. Plain values throughout
(precisions by name), so building a job imports no torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from renderer.core.errors import HashMismatchError, InputError, MissingFileError
from renderer.core.families import FAMILIES, SIZE_MULTIPLE
from renderer.core.hashing import HashCache, sha256_json
from renderer.load.training_schema import (
    LoraTrainingSpec,
    TrainingSamplesSpec,
    TrainingSettingsSpec,
)
from renderer.validate.training_buckets import DEFAULT_RESOLUTION

# Default LoRA targets, as diffusers' DreamBooth LoRA scripts choose them: the UNet's attention
# projections (self and cross), Flux's joint-attention projections and feed-forwards of both
# streams; text encoders (SD/SDXL, when trained): the CLIP attention projections.
DEFAULT_TARGETS = {
    "sd15": ("to_q", "to_k", "to_v", "to_out.0"),
    "sdxl": ("to_q", "to_k", "to_v", "to_out.0"),
    "flux": (
        "attn.to_q",
        "attn.to_k",
        "attn.to_v",
        "attn.to_out.0",
        "attn.add_q_proj",
        "attn.add_k_proj",
        "attn.add_v_proj",
        "attn.to_add_out",
        "ff.net.0.proj",
        "ff.net.2",
        "ff_context.net.0.proj",
        "ff_context.net.2",
    ),
}
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
# A training spec's unset settings take the dataclasses' defaults below, except these, which
# follow the family: the resolution its base models were trained at, the guidance its
# pipelines sample with.
FAMILY_DEFAULTS: dict[str, dict[str, dict[str, float]]] = {
    family: {"train": {"resolution": DEFAULT_RESOLUTION[family]}, "samples": {"guidance": guidance}}
    for family, guidance in (("sd15", 7.5), ("sdxl", 5.0), ("flux", 3.5))
}


@dataclass(frozen=True)
class TrainingItem:
    image: Path
    sha256: str
    caption: str


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: float = 16.0  # update scale alpha / rank, as kohya and peft
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ()  # empty: DEFAULT_TARGETS[family]
    train_text_encoder: bool = False  # SD1.5 / SDXL (both encoders)
    text_encoder_target_modules: tuple[str, ...] = ()  # empty: TEXT_ENCODER_TARGETS
    save_precision: str = "fp32"  # fp32 | fp16 | bf16


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 1000  # optimizer steps
    learning_rate: float = 1e-4
    text_encoder_learning_rate: float | None = None  # None: learning_rate
    schedule: str = "constant"  # constant | cosine | linear, after the warm-up
    warmup_steps: int = 0
    batch_size: int = 1
    gradient_accumulation: int = 1
    resolution: int = 512  # bucket area resolution²; never upscales
    seed: int = 0
    mixed_precision: str = "none"  # none | bf16 | fp16 (frozen weights; LoRA fp32)
    gradient_checkpointing: bool = False
    save_every: int = 0  # 0: one checkpoint, at the end
    max_grad_norm: float = 1.0
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | adamw8bit (CUDA + bitsandbytes)
    guidance: float = 3.5  # Flux: the guidance embedding while training
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps


@dataclass(frozen=True)
class SampleSettings:
    prompts: tuple[str, ...] = ()  # rendered at every checkpoint, each with
    seeds: tuple[int, ...] = (0,)  # every seed
    steps: int = 20
    guidance: float = 5.0  # CFG for SD/SDXL, embedded guidance for Flux
    negative_prompt: str = ""
    size: tuple[int, int] | None = None  # (width, height); None: the resolution


@dataclass(frozen=True)
class TrainingJob:
    family: str  # sd15 | sdxl | flux
    checkpoint: Path  # diffusers folder or single-file .safetensors
    items: tuple[TrainingItem, ...]
    spec_hash: str  # embedded in the file: what asked for it
    training_id: str
    checkpoint_config: Path | None = None  # single files: the local diffusers config folder
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    samples: SampleSettings = field(default_factory=SampleSettings)
    name: str = "lora"  # output file name without .safetensors
    comment: str = ""  # ss_training_comment
    # The training's first start (ISO 8601 with offset, as the ledger records it): the header's
    # only time (modelspec.date, ss_training_started_at); None leaves both out.
    started_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = _plain(self)
        return plain

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingJob:
        try:
            job: TrainingJob = _from_plain(cls, data)
            return job
        except (TypeError, KeyError, ValueError) as err:
            raise InputError(
                f"not a training job: {err}", expected="TrainingJob.to_dict() output"
            ) from None

    @property
    def fingerprint(self) -> str:
        """sha256 of the job's canonical JSON: a checkpoint resumes only the same job."""
        return sha256_json(self.to_dict())


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return str(value) if isinstance(value, Path) else value


def _from_plain(kind: Any, value: Any) -> Any:
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{name: _from_plain(hints[name], item) for name, item in value.items()})
    origin = typing.get_origin(kind)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        return _from_plain(next(a for a in typing.get_args(kind) if a is not type(None)), value)
    if origin is tuple:
        return tuple(_from_plain(typing.get_args(kind)[0], item) for item in value)
    return Path(value) if kind is Path else value


def check_job(job: TrainingJob, hashes: HashCache) -> None:
    """Bad input stops here, before any model loads; each error names the key or file. The
    ranges are the training spec's own (``load/schema.py``), checked on the job's values; the
    rules between settings are the job's."""
    for group, model in (
        ("lora", LoraTrainingSpec),
        ("train", TrainingSettingsSpec),
        ("samples", TrainingSamplesSpec),
    ):
        # An empty tuple is the job's "the default" (target modules), as unset is the spec's.
        values = {
            key: value
            for key, value in dataclasses.asdict(getattr(job, group)).items()
            if value != ()
        }
        try:
            model.model_validate(values, strict=False)
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            key = ".".join([group, *map(str, first["loc"])])
            raise InputError(
                "invalid training setting",
                key_path=key,
                expected=first["msg"],
                found=repr(first.get("input")),
            ) from None
    lora, settings = job.lora, job.train
    rules = [
        ("family", job.family in FAMILIES, "sd15, sdxl or flux"),
        (
            "lora.train_text_encoder",
            not (lora.train_text_encoder and job.family == "flux"),
            "false for flux (text-encoder training is for sd15/sdxl)",
        ),
        (
            "train.warmup_steps",
            settings.warmup_steps < settings.steps,
            "0 <= warmup_steps < steps",
        ),
        (
            "samples.size",
            job.samples.size is None
            or all(side % SIZE_MULTIPLE.get(job.family, 8) == 0 for side in job.samples.size),
            f"[width, height], multiples of {SIZE_MULTIPLE.get(job.family, 8)}",
        ),
        ("items", len(job.items) >= 1, "at least one image"),
        (
            "started_at",
            job.started_at is None or _is_time(job.started_at),
            "an ISO 8601 time with its UTC offset, e.g. 2026-12-01T10:58:13+00:00",
        ),
    ]
    for key, ok, expected in rules:
        if not ok:
            raise InputError(
                "invalid training setting",
                key_path=key,
                expected=expected,
                found=repr(_lookup(job, key)),
            )
    if not job.checkpoint.exists():
        raise MissingFileError("the checkpoint does not exist", file=job.checkpoint)
    if job.checkpoint.is_file() and not (job.checkpoint_config and job.checkpoint_config.is_dir()):
        raise InputError(
            "a single-file checkpoint needs its local diffusers config folder",
            file=job.checkpoint,
            key_path="checkpoint_config",
            fix="set checkpoint_config to a folder with the model's configs",
        )
    for item in job.items:
        if not item.image.is_file():
            raise MissingFileError("a training image does not exist", file=item.image)
        found = hashes.sha256_file(item.image)
        if found != item.sha256:
            raise HashMismatchError(
                "the training image changed",
                file=item.image,
                expected=item.sha256,
                found=found,
                fix="restore the image or update its sha256 in the job",
            )


def _is_time(text: str) -> bool:
    try:
        return datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


def _lookup(job: TrainingJob, key: str) -> Any:
    value: Any = job
    for part in key.split("."):
        value = getattr(value, part)
    return value
