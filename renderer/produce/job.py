"""The values a job (``renderer.plan.jobs.Job``) passes through the worker's stages, and what
it hands back.

A job is one pipeline call's batch and the members to write: the others are co-members,
rendered again only so the written ones come out as they do beside them (an image's bytes
depend on its batch by float rounding); their fresh bytes are compared with the record,
never written. The render stage makes a ``RenderedJob``, the finish stage a
``FinishedJob`` (every member's bytes, no file touched) and the write stage a ``JobResult``:
the ``Produced`` images for the driver to commit, the co-members' fresh hashes and the
images that failed (``FailedImage``: not written, so the next run renders them).
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from postprocess.parameters import ExportSpec
from renderer.plan.jobs import Job
from renderer.plan.variants import Variant


@dataclass(frozen=True)
class ExportFile:
    """One channel export of an image, on disk."""

    name: str
    path: str  # relative to the output folder
    sha256: str
    bytes: int
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class Produced:
    """One finished image, on disk, as reported to the driver."""

    variant: Variant
    output_path: str  # relative to the output folder
    output_sha256: str
    output_bytes: int
    scores: Mapping[str, float]
    seconds: float  # this image's share of its batch's wall time, model loading excluded
    batch: tuple[str, ...]  # the variant ids rendered in the same pipeline call
    environment: Mapping[str, Any]
    embedding: bytes | None = None  # CLIP image embedding, float32 little-endian
    exports: tuple[ExportFile, ...] = ()
    steps: tuple[tuple[str, float], ...] = ()  # (step, this image's share of its seconds)


@dataclass(frozen=True)
class FailedImage:
    """An image the finish stage could not make: not written, so the next run renders it
    (a co-member's file stays as it is, only its comparison is lost)."""

    variant: Variant
    step: str  # postprocess, score or write (the encoding)
    error: str  # the exception and the line that raised it
    co_member: bool = False

    @classmethod
    def of(cls, variant: Variant, step: str, error: Exception, job: Job) -> FailedImage:
        where = traceback.extract_tb(error.__traceback__)[-1]
        return cls(
            variant,
            step,
            f"{type(error).__name__}: {error} (at {Path(where.filename).name}:{where.lineno})",
            co_member=variant.id not in job.write,
        )

    def describe(self) -> str:
        return f"{self.variant.output_path} ({self.step}: {self.error})"


@dataclass(frozen=True)
class JobResult:
    produced: tuple[Produced, ...]  # written, to commit
    rechecked: tuple[tuple[Variant, str], ...] = ()  # co-members and their fresh sha256
    failed: tuple[FailedImage, ...] = ()  # not written


@dataclass(frozen=True, eq=False)
class RenderedJob:
    """The render stage's output: a job's images, in batch order."""

    job: Job
    images: tuple[tuple[Image.Image, tuple[int, ...]], ...]  # each with the indices (into
    # the batch) of the pipeline call that rendered it
    seconds: float  # the stage's wall time, model loading excluded
    steps: tuple[tuple[str, float], ...]  # the renderer's seconds per step (base, refiner, …)
    environment: Mapping[str, Any]


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """A member finished and encoded: written (a written member) or compared (a co-member)."""

    variant: Variant
    call: tuple[int, ...]  # the indices (into the batch) of the call that rendered it
    master: bytes  # the PNG, with its metadata
    exports: tuple[tuple[ExportSpec, bytes], ...] = ()  # written members only
    scores: Mapping[str, float] | None = None  # written members only
    embedding: bytes | None = None  # CLIP image embedding, float32 little-endian


@dataclass(frozen=True, eq=False)
class FinishedJob:
    """The finish stage's output: every member's bytes, ready to write; no file touched."""

    job: Job
    images: tuple[EncodedImage, ...]  # in batch order, the failed ones left out
    failed: tuple[FailedImage, ...]
    seconds: float  # the render and finish stages' wall times, model loading excluded
    steps: Mapping[str, float]  # every step's seconds so far (write: the encoding)
    environment: Mapping[str, Any]
