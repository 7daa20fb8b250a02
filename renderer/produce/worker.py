"""The worker path, the one way an image is made: render a batch (halving it on out of
memory) → post-process → score → encode → write the master and its channel exports.

It runs in three stages, each a ``Worker`` method passing a frozen value to the next
(``renderer.produce.job``): ``render(job)`` → ``RenderedJob`` (the images; the only stage
that uses the denoiser), ``finish(rendered)`` → ``FinishedJob`` (post-processed, scored and
encoded bytes; no file is touched) and ``write(finished, out_dir)`` → ``JobResult`` (the
files in place). ``produce(job, out_dir)`` runs the three in a row: the local executor's
serial path, the Ray actors and ``campaign reproduce`` use it; ``OverlappedStages`` runs the
same three with one job's finish on a thread of its own, so the denoiser renders the next
batch while this one is finished (the pipelined executor, ``renderer.run.executors``). No
stage touches the ledger; the driver commits what ``write`` returns (``Produced``).
Everything follows the variant's spec alone — what is hashed into the id is what is
applied — with files found by sha256 (``FileIndex``), so a reproduction from a stored spec
runs exactly this code, the recipe's refine steps included (they run inside the render: its
images are the refined masters).

Every file carries what decides its bytes besides its spec (its call's members, options,
config folder: ``campaign_render``, ``render_contexts``), so it is reproduced from the file
alone; channel exports are made from the master alone (``renderer.produce.exports``). An
image whose post-processing (``renderer.produce.finishing``), scoring
(``renderer.produce.scoring``) or encoding raises is reported (``FailedImage``) and not
written; the rest of its batch is. Each image reports its share of every step's time
(``Produced.steps``: base, refiner, hires, upscale, detail, postprocess, score, write).

What the finish stage reads is made at start-up in a thread of its own while the diffusers
pipeline loads (``prepare_in_background``): open_clip's import, the CLIP load, the brand
references' embeddings, the post-process library's imports, logos and fonts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from PIL import Image

from renderer.core.hashing import hash_file, sha256_bytes
from renderer.core.json_value import JsonValue
from renderer.core.terminal import Log
from renderer.load.schema import FileId
from renderer.plan.jobs import Job
from renderer.plan.output_folder import OutputFolder
from renderer.plan.variant_spec import RecipeUse, VariantSpec
from renderer.plan.variants import Variant
from renderer.produce.exports import export_files, write_export
from renderer.produce.finishing import Assets, Finished, detect, finish_image
from renderer.produce.job import (
    EncodedImage,
    FailedImage,
    FinishedJob,
    JobResult,
    Produced,
    RenderedJob,
)
from renderer.produce.metadata import LoraHashes, RenderContext, encode_png, render_context
from renderer.produce.scoring import Scoring, score_images
from renderer.produce.warm import warm_models
from renderer.render.diffusers_renderer import DiffusersRenderer
from renderer.render.options import RenderOptions
from renderer.validate.inputs import Campaign, FileIndex

Value = TypeVar("Value")


class Renderer(Protocol):
    """What the worker uses of its renderer: ``DiffusersRenderer``, or a test's double."""

    device: str  # where it renders (the batch sizes are chosen for it)
    load_seconds: float  # spent loading models so far (kept out of the images' times)

    def render_resilient(
        self, specs: Sequence[VariantSpec], files: FileIndex
    ) -> list[tuple[Image.Image, tuple[int, ...]]]: ...

    def fingerprint(self) -> dict[str, JsonValue]: ...

    def release(self) -> None: ...


# How the finish stage maps a function over a batch's images: ``map`` (one after the
# other) or a thread pool's ``map`` (OpenCV, Pillow's encoders and torch release the GIL).
MapImages = Callable[..., Iterator[Any]]


class Worker:
    """The loaded models of one run: renders, finishes, scores and writes batches.

    ``scoring`` may still be in the making (a ``Future``, from ``prepare_in_background``):
    the finish stage waits for it, out of the images' timed seconds."""

    def __init__(
        self,
        renderer: Renderer,
        files: FileIndex,
        scoring: Scoring | Future[Scoring] | None,
        *,
        keep_pipelines: bool = True,
        assets: Assets | None = None,
        configs: Mapping[str, FileId] | None = None,
    ):
        self.renderer, self.files = renderer, files
        self._scoring = scoring if isinstance(scoring, Future) else _done(scoring)
        self.assets = assets or Assets(files)
        self.lora_hashes = LoraHashes(files.path)
        # Checkpoint sha256 -> its config folder as the files name it: given (reproduce: as
        # recorded, wherever it was found under whatever name), else hashed once.
        self._configs: dict[str, FileId | None] = dict(configs or {})
        # Without keep_pipelines, a job of another recipe than the last releases the last
        # one's pipelines first (jobs come grouped by recipe: each loads once per run).
        self.keep_pipelines = keep_pipelines
        self._recipe: str | None = None
        self._environment: dict[str, Any] | None = None

    @classmethod
    def for_campaign(cls, campaign: Campaign, log: Log) -> Worker:
        options = RenderOptions(**campaign.spec.render.model_dump(include=RenderOptions.known()))
        allow_pickle = any(recipe.spec.allow_pickle for recipe in campaign.recipes)
        if (warm := warm_models()) is not None:  # the render service's runner keeps them
            renderer = warm.renderer(options, allow_pickle, campaign.recipes, log)
        else:
            renderer = DiffusersRenderer(
                options, allow_pickle=allow_pickle, log=log, recipes=campaign.recipes
            )
        files = campaign.files()
        assets = Assets(files)
        return cls(
            renderer,
            files,
            prepare_in_background(campaign, assets),
            keep_pipelines=campaign.spec.render.keep_pipelines,
            assets=assets,
        )

    @property
    def scoring(self) -> Scoring | None:
        """The campaign's scorer, once start-up has made it (start-up's error raises here)."""
        return self._scoring.result()

    def environment(self) -> dict[str, Any]:
        if self._environment is None:
            self._environment = self.renderer.fingerprint()
        return self._environment

    def produce(self, job: Job, out_dir: Path) -> JobResult:
        """Render (with the refine steps), finish, score and write one job, one stage after
        the other; the files are in place on return."""
        return self.write(self.finish(self.render(job)), out_dir)

    def render(self, job: Job) -> RenderedJob:
        """The render stage: the job's batch through the denoiser and the refine steps."""
        started, loading = time.perf_counter(), self.renderer.load_seconds
        self.switch_recipe(job.batch[0].spec.recipe)
        # The renderer's breakdown of its time by step; a renderer double may keep none.
        timings = getattr(self.renderer, "timings", {})
        timings.clear()
        images = self.renderer.render_resilient([variant.spec for variant in job.batch], self.files)
        elapsed = time.perf_counter() - started
        steps = dict(timings) or {"render": elapsed}
        return RenderedJob(
            job,
            tuple(images),
            elapsed - (self.renderer.load_seconds - loading),
            tuple(steps.items()),
            self.environment(),
        )

    def finish(self, rendered: RenderedJob, map_images: MapImages = map) -> FinishedJob:
        """The finish stage: post-process every member, score the ones to write, encode
        them all (a co-member's master only, to compare it); nothing is written. An image
        whose step raises is reported and left out, the others go on."""
        scoring = self.scoring  # waited for before the clock starts: it is start-up's time
        job, steps = rendered.job, dict(rendered.steps)
        started = clock = time.perf_counter()

        def post_processed(variant: Variant, image: Image.Image) -> Finished | FailedImage:
            try:
                return finish_image(image, variant.spec, self.assets, detect(image))
            except Exception as err:  # this image's own failure: the batch goes on
                return FailedImage.of(variant, "postprocess", err, job)

        done = list(map_images(post_processed, job.batch, [image for image, _ in rendered.images]))
        failed = [item for item in done if isinstance(item, FailedImage)]
        members = [
            (variant, call, item)
            for variant, (_, call), item in zip(job.batch, rendered.images, done, strict=True)
            if isinstance(item, Finished)
        ]
        steps["postprocess"], clock = time.perf_counter() - clock, time.perf_counter()
        scored, unscored = score_images(
            scoring,
            [(variant, item) for variant, _, item in members if variant.id in job.write],
            job,
        )
        failed += unscored
        members = [
            member for member in members if member[0].id in scored or member[0].id not in job.write
        ]
        steps["score"], clock = time.perf_counter() - clock, time.perf_counter()
        # LoraHashes and the config hashes cache in plain dicts: filled here, in this one
        # thread.
        lora_hashes = {variant.id: self.lora_hashes.of(variant.spec) for variant, _, _ in members}
        contexts = self.render_contexts(
            job, [(variant, call) for variant, call, _ in members], rendered.environment
        )

        def encoded(
            variant: Variant, call: tuple[int, ...], image: Finished
        ) -> EncodedImage | FailedImage:
            hashes, context = lora_hashes[variant.id], contexts[variant.id]
            try:
                master = encode_png(image.image, variant.spec, hashes, context)
                if variant.id not in job.write:  # a co-member: compared, never written
                    return EncodedImage(variant, call, master)
                exports = tuple(export_files(image.image, variant.spec, hashes, context))
            except Exception as err:  # this image's own failure: the batch goes on
                return FailedImage.of(variant, "write", err, job)
            scores, embedding = scored[variant.id]
            return EncodedImage(variant, call, master, exports, scores, embedding)

        results = list(map_images(encoded, *zip(*members, strict=True))) if members else []
        failed += [item for item in results if isinstance(item, FailedImage)]
        steps["write"] = time.perf_counter() - clock
        return FinishedJob(
            job,
            tuple(item for item in results if isinstance(item, EncodedImage)),
            tuple(failed),
            rendered.seconds + time.perf_counter() - started,
            steps,
            rendered.environment,
        )

    def write(self, finished: FinishedJob, out_dir: Path) -> JobResult:
        """The write stage: each written member's exports, then its master, atomically; a
        co-member's fresh sha256 is handed back to compare with the record."""
        clock = time.perf_counter()
        job, produced, rechecked = finished.job, [], []
        for image in finished.images:
            variant = image.variant
            if variant.id not in job.write:
                rechecked.append((variant, sha256_bytes(image.master)))
                continue
            exports = tuple(
                write_export(variant, export, data, out_dir) for export, data in image.exports
            )
            OutputFolder(out_dir).write(variant.output_path, image.master, "master")
            produced.append(
                Produced(
                    variant=variant,
                    output_path=variant.output_path,
                    output_sha256=sha256_bytes(image.master),
                    output_bytes=len(image.master),
                    scores=image.scores or {},
                    seconds=0.0,
                    batch=tuple(job.batch[member].id for member in image.call),
                    environment=finished.environment,
                    embedding=image.embedding,
                    exports=exports,
                )
            )
        writing = time.perf_counter() - clock
        steps = {**finished.steps, "write": finished.steps["write"] + writing}
        # Each image's share of the time its batch spent in the three stages, model loading
        # left out (README, "The pipelined executor": stages of different batches overlap).
        size = len(job.batch)
        seconds_each = round((finished.seconds + writing) / size, 4)
        shares = tuple((step, round(seconds / size, 4)) for step, seconds in steps.items())
        return JobResult(
            tuple(replace(item, seconds=seconds_each, steps=shares) for item in produced),
            tuple(rechecked),
            finished.failed,
        )

    def render_contexts(
        self,
        job: Job,
        members: Sequence[tuple[Variant, tuple[int, ...]]],
        environment: Mapping[str, Any],
    ) -> dict[str, RenderContext]:
        """Each member's ``campaign_render``: its output name, the pipeline call that rendered
        it, the options it ran with and its checkpoint's config folder."""
        specs = {variant.id: variant.spec.to_json() for variant in job.batch}
        options = environment.get("options") or {}
        return {
            variant.id: render_context(
                variant.output_name,
                specs[variant.id],
                [(job.batch[index].id, specs[job.batch[index].id]) for index in call],
                options,
                self.config_file(variant.spec.recipe.checkpoint),
            )
            for variant, call in members
        }

    def config_file(self, checkpoint: FileId) -> FileId | None:
        """A single-file checkpoint's config folder by name and hash (hashed once)."""
        if checkpoint.sha256 not in self._configs:
            folder = self.files.config(checkpoint)
            self._configs[checkpoint.sha256] = (
                None if folder is None else FileId(name=folder.name, sha256=hash_file(folder))
            )
        return self._configs[checkpoint.sha256]

    def switch_recipe(self, recipe: RecipeUse) -> None:
        if self._recipe not in (None, recipe.ref) and not self.keep_pipelines:
            self.renderer.release()
        self._recipe = recipe.ref


# Threads finishing one batch's images side by side (post-processing, encoding): OpenCV,
# Pillow's encoders and torch release the GIL, so threads do and no process (nor the
# copying of images to it) is needed; bench/overlap_bench.py measures that this keeps up.
FINISH_THREADS = min(4, os.cpu_count() or 1)


class OverlappedStages:
    """A worker's stages with one job's finish overlapping the next job's render: ``push``
    renders a job on the calling thread while the job pushed before it is finished on a
    thread of its own, then writes that one and returns its result; ``drain`` writes the
    last. At most two jobs' images are held (one rendering, one finishing), so memory stays
    flat. The denoiser runs on the caller's thread, so Ctrl-C stops it mid-batch as in the
    serial path; the files of a job are written right before its result is handed back
    for the driver to commit, so a kill leaves as few files without a row as there.

    The local pipelined executor and each Ray actor run their jobs through one of these:
    the same stages as ``Worker.produce``, so the same bytes, rows and decisions."""

    def __init__(self, worker: Worker, out_dir: Path, threads: int = FINISH_THREADS):
        self.worker, self.out_dir = worker, out_dir
        self._finisher = ThreadPoolExecutor(1, thread_name_prefix="finish")
        self._images = ThreadPoolExecutor(threads, thread_name_prefix="finish-image")
        self._finishing: Future[FinishedJob] | None = None

    def push(self, job: Job) -> JobResult | None:
        """Render ``job``, then write the job pushed before it (None for the first) and
        start finishing this one. If the render raises, the job before it is still
        finishing: ``drain`` writes it, as the serial path would have."""
        rendered = self.worker.render(job)
        result = self.drain()
        self._finishing = self._finisher.submit(self.worker.finish, rendered, self._images.map)
        return result

    def drain(self) -> JobResult | None:
        """Wait for the job being finished and write it (None when there is none)."""
        finishing, self._finishing = self._finishing, None
        return None if finishing is None else self.worker.write(finishing.result(), self.out_dir)

    def close(self) -> None:
        """Drop a job still finishing (not written: the next run renders it) and end the
        threads once what runs on them is done."""
        self._finishing = None
        self._finisher.shutdown(cancel_futures=True)
        self._images.shutdown(cancel_futures=True)


def prepare_in_background(campaign: Campaign, assets: Assets) -> Future[Scoring]:
    """Make the campaign's ``Scoring`` (open_clip's import, the CLIP load, the brand
    references embedded) and prepare its ``assets`` in a thread of their own, so they load
    while the caller loads the diffusers pipeline and the first image is out sooner. The
    finish stage waits for the result; an error in it raises there."""

    def prepared() -> Scoring:
        assets.prepare(campaign)
        return Scoring(campaign)

    starter = ThreadPoolExecutor(1, thread_name_prefix="start-up")
    try:
        return starter.submit(prepared)
    finally:
        starter.shutdown(wait=False)  # its one thread ends with its one task


def _done(value: Value) -> Future[Value]:
    future: Future[Value] = Future()
    future.set_result(value)
    return future
