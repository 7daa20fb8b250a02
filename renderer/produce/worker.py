"""The worker path, the one way an image is made: render a batch (halving it on out of
memory) → post-process → score → encode → write the master and its channel exports.

It runs in three stages, each a ``Worker`` method passing a frozen value to the next:
``render(job)`` → ``RenderedJob`` (the images; the only stage that uses the denoiser),
``finish(rendered)`` → ``FinishedJob`` (post-processed, scored and encoded bytes; no file
is touched) and ``write(finished, out_dir)`` → ``JobResult`` (the files in place).
``produce(job, out_dir)`` runs the three in a row: the local executor's serial path, the
Ray actors and ``campaign reproduce`` use it; the pipelined executor
(``renderer.run.executors``) runs the same three stages on their own threads, so the denoiser
renders the next batch while this one is finished. No stage touches the ledger; the
driver commits what ``write`` returns (``Produced``). Everything follows the variant's
spec alone — what is hashed into the id is what is applied — with files found by sha256
(``FileIndex``), so a reproduction from a stored spec runs exactly this code, the recipe's
refine steps included (they run inside the render: its images are the refined masters).

A job is one pipeline call's batch and the members to write: the others are co-members,
rendered again only so the written ones come out as they do beside them (an image's bytes
depend on its batch by float rounding); their fresh bytes are compared with the record,
never written. Faces are detected once per rendered image and reused by skin smoothing
and the faces score. Every file carries what decides its bytes besides its spec (its
call's members, options, config folder: ``campaign_render``, ``render_contexts``), so it is
reproduced from the file alone. Channel exports are made from the master alone
(``export_files``: its pixels and metadata), so a lost export is rebuilt from its master
without rendering. An image whose
post-processing, scoring or encoding raises is reported (``FailedImage``) and not written;
the rest of its batch is. Each image reports its share of every step's time
(``Produced.steps``: base, refiner, hires, upscale, detail, postprocess, score, write).

What the finish stage reads is made at start-up in a thread of its own while the diffusers
pipeline loads (``prepare_in_background``): open_clip's import, the CLIP load, the brand
references' embeddings, the post-process library's imports, logos and fonts.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from postprocess.parameters import EXTENSIONS, ExportSpec
from renderer.core.hashing import hash_file, sha256_bytes
from renderer.core.terminal import Log
from renderer.load.schema import FileId
from renderer.plan.output_folder import OutputFolder
from renderer.plan.variant_spec import RecipeUse, VariantSpec
from renderer.plan.variants import Variant
from renderer.produce.metadata import (
    LoraHashes,
    RenderContext,
    encode_png,
    file_metadata,
    render_context,
)
from renderer.validate.inputs import BrandKit, Campaign, FileIndex

Box = tuple[int, int, int, int]
# What rendering an image without the rest of its batch does (README, "Reproducing a
# deliverable": the demo campaign on CPU, float32).
WITHOUT_BATCH = (
    "may move pixels: measured up to 2/255 in a master, 3/255 in a JPEG "
    "export, 14/255 in a WebP one"
)


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
class Job:
    """One pipeline call: its members in order, and which of them to write and commit."""

    batch: tuple[Variant, ...]
    write: frozenset[str]  # variant ids; the other members are co-members

    @classmethod
    def all_of(cls, batch: Sequence[Variant]) -> Job:
        return cls(tuple(batch), frozenset(variant.id for variant in batch))


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


@dataclass(frozen=True, eq=False)
class Finished:
    """A post-processed image and what was measured on the way."""

    image: Image.Image
    faces: tuple[Box, ...]  # detected on the rendered image
    text_contrast: float | None  # the lowest measured WCAG contrast of the text set


class Assets:
    """The images post-processing reads (logo, brand references), found by sha256 and
    loaded once; safe to share between the threads that finish a batch's images."""

    def __init__(self, files: FileIndex):
        self.files = files
        self._loaded: dict[Any, Any] = {}
        self._loading = threading.Lock()

    def logo(self, file: FileId) -> Image.Image:
        return self._once(("logo", file.sha256), lambda: open_image(self.files.path(file), "RGBA"))

    def brand_reference(self, references: Sequence[FileId]) -> Any:
        from postprocess.retouch import BrandReference

        return self._once(
            ("references", tuple(file.sha256 for file in references)),
            lambda: BrandReference.from_images(
                [np.asarray(open_image(self.files.path(file), "RGB")) for file in references]
            ),
        )

    def prepare(self, campaign: Campaign) -> None:
        """Import the post-process library and load what the campaign's post-processing
        reads (the face cascade, its logo, the brand grade's references, each font), before
        any image needs them."""
        import importlib

        for module in FINISH_MODULES:
            importlib.import_module(module)
        from postprocess.faces import load_cascade

        load_cascade()  # every image's faces are detected
        if campaign.spec.logo:
            self.logo(campaign.brand.logo.identity)
        post, brand = campaign.spec.postprocess, campaign.brand
        if any(step.operation()[0] == "brand_grade" for step in post.retouch):
            self.brand_reference([reference.identity for reference in brand.references])
        if post.text is not None:
            from postprocess.text_layout import MIN_FONT_SIZE, load_font

            for font in [None, *(file.path for file in brand.fonts.values())]:
                load_font(font, MIN_FONT_SIZE)

    def _once(self, key: Any, load: Callable[[], Any]) -> Any:
        with self._loading:
            if key not in self._loaded:
                self._loaded[key] = load()
            return self._loaded[key]


# The post-process library's modules the finish stage runs (imported at start-up).
FINISH_MODULES = (
    "postprocess.faces",
    "postprocess.retouch",
    "postprocess.overlay",
    "postprocess.text",
    "postprocess.export",
    "postprocess.metrics",
)


def detect(image: Image.Image) -> tuple[Box, ...]:
    from postprocess.faces import detect_faces

    return tuple(detect_faces(np.asarray(image.convert("RGB"))))


def finish_image(
    image: Image.Image, spec: VariantSpec, assets: Assets, faces: Sequence[Box]
) -> Finished:
    """Post-process as the spec says (what is hashed is what is applied): retouch, then the
    logo, then the text. ``faces`` were detected on ``image``."""
    post = spec.postprocess
    if post.retouch:
        from postprocess.parameters import BrandGrade
        from postprocess.retouch import apply_retouch

        grades = [step for step in post.retouch if isinstance(step, BrandGrade)]
        references = assets.brand_reference(grades[0].references) if grades else None
        image = Image.fromarray(
            apply_retouch(np.asarray(image.convert("RGB")), post.retouch, references, faces)
        )
    if post.logo is not None:
        from postprocess.overlay import overlay_logo

        image = overlay_logo(image, assets.logo(post.logo.file), post.logo)
    contrast = None
    if post.text is not None:
        from postprocess.text import overlay_text
        from postprocess.text_layout import TextBlock

        for role in ("headline", "legal"):
            if (block := getattr(post.text, role)) is None:
                continue
            font = assets.files.path(block.font) if block.font else None
            placed = overlay_text(
                image,
                TextBlock(block.text, role, font, block.align),
                tuple(block.box),
                post.text.palette,
            )
            image = placed.image
            contrast = placed.contrast if contrast is None else min(contrast, placed.contrast)
    return Finished(image=image, faces=tuple(faces), text_contrast=contrast)


def open_image(path: Path, mode: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert(mode)


class Scoring:
    """What scores a campaign's images: its CLIP model with the brand references embedded
    once, its palette and where its brand kit places the logo (README: the metrics table)."""

    def __init__(self, campaign: Campaign):
        clip, scoring = campaign.clip, campaign.spec.scoring
        if palette := campaign.brand.spec.palette:  # first: it runs beside the caller's imports
            from postprocess.metrics import near_palette_table

            near_palette_table(tuple(palette), float(scoring.palette_delta_e))
        from postprocess.scoring import ClipScorer
        from renderer.render.diffusers_renderer import BUILDING_MODELS

        with BUILDING_MODELS:  # not while diffusers builds one (start-up runs beside it)
            self.scorer = (
                ClipScorer.from_folder(clip.folder, batch_size=scoring.batch_size)
                if clip.folder is not None
                else ClipScorer.from_pretrained(
                    clip.name, clip.pretrained, batch_size=scoring.batch_size
                )
            )
        self.brand: BrandKit = campaign.brand
        self.palette_delta_e = scoring.palette_delta_e
        self.logo = open_image(campaign.brand.logo.path, "RGBA")
        references = [open_image(ref.path, "RGB") for ref in campaign.brand.references]
        self.brand_embeddings = self.scorer.embed_brand(references) if references else None

    def score(
        self, batch: Sequence[Variant], finished: Sequence[Finished]
    ) -> tuple[list[dict[str, float]], np.ndarray]:
        """Every per-image metric, and the CLIP image embeddings (the run's consistency is
        computed from them on the driver)."""
        from postprocess.metrics import palette_adherence

        embeddings = self.scorer.embed_images([done.image for done in finished])
        clip = self.scorer.score_embedded(
            embeddings, [variant.prompt for variant in batch], self.brand_embeddings
        )
        palette = self.brand.spec.palette
        results = []
        for variant, done, clip_scores in zip(batch, finished, clip, strict=True):
            pixels = np.asarray(done.image.convert("RGB"))
            scores = clip_scores.as_dict()
            if palette:
                scores["palette_adherence"] = palette_adherence(
                    pixels, palette, self.palette_delta_e
                )
            scores.update(self.logo_scores(variant, pixels))
            scores["faces"] = float(len(done.faces))
            if done.text_contrast is not None:
                scores["text_contrast"] = round(done.text_contrast, 4)
            results.append(scores)
        return results, embeddings

    def logo_scores(self, variant: Variant, pixels: np.ndarray) -> dict[str, float]:
        """The logo where the brand kit places it for this aspect ratio: found (template
        match), in place, inside the safe zone. Scored whether or not the campaign overlays
        the logo, so a campaign that must carry it can gate on it."""
        from postprocess.metrics import logo_score
        from postprocess.overlay import logo_box
        from postprocess.parameters import SafeZone

        placement = self.brand.placement_for(variant.aspect)
        size = (pixels.shape[1], pixels.shape[0])
        try:
            expected = logo_box(size, self.logo.size, placement)
        except ValueError:  # no room for the logo at this size: nothing to look for
            return {}
        found = logo_score(pixels, self.logo, expected)
        zone = SafeZone.from_box(placement.safe_zone) if placement.safe_zone else SafeZone()
        return {
            "logo_match": round(found.match, 4),
            "logo_in_place": float(found.in_place),
            "logo_in_safe_zone": float(found.in_safe_zone(size, zone)),
        }


# How the finish stage maps a function over a batch's images: ``map`` (one after the
# other) or a thread pool's ``map`` (OpenCV, Pillow's encoders and torch release the GIL).
MapImages = Callable[..., Iterator[Any]]
Scored = tuple[Mapping[str, float], bytes | None]  # an image's scores and CLIP embedding


class Worker:
    """The loaded models of one run: renders, finishes, scores and writes batches.

    ``scoring`` may still be in the making (a ``Future``, from ``prepare_in_background``):
    the finish stage waits for it, out of the images' timed seconds."""

    def __init__(
        self,
        renderer: Any,
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
        from renderer.render.diffusers_renderer import DiffusersRenderer, RenderOptions

        options = campaign.spec.render.model_dump(include=RenderOptions.known())
        allow_pickle = any(recipe.spec.allow_pickle for recipe in campaign.recipes)
        renderer = DiffusersRenderer(
            RenderOptions(**options), allow_pickle=allow_pickle, log=log, recipes=campaign.recipes
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
                self.write_export(variant, export, data, out_dir) for export, data in image.exports
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

    @staticmethod
    def write_export(
        variant: Variant, export: ExportSpec, data: bytes, out_dir: Path
    ) -> ExportFile:
        relative = variant.export_path(export.name, EXTENSIONS[export.format])
        OutputFolder(out_dir).write(relative, data, "export")
        return ExportFile(
            name=export.name,
            path=relative,
            sha256=sha256_bytes(data),
            bytes=len(data),
            width=export.width,
            height=export.height,
            format=export.format,
        )


def export_files(
    master: Image.Image,
    spec: VariantSpec,
    lora_hashes: Sequence[str],
    context: RenderContext | None,
) -> list[tuple[ExportSpec, bytes]]:
    """Each channel export of a master image, with the variant's metadata: a function of
    the master's pixels, the spec, its LoRAs' A1111 hashes (``LoraHashes.of``) and the
    master's ``campaign_render`` (``context``) alone, so it is rebuilt from the master file
    exactly.
    Faces (the crop keeps them) are detected on the master, once, when a channel crops
    (one of another aspect; one of the same aspect is only resized)."""
    exports = spec.postprocess.exports or []
    if not exports:
        return []
    from postprocess.export import crop_size, export_image

    metadata, xmp = file_metadata(spec, lora_hashes, context)
    faces = (
        detect(master)
        if any(
            crop_size(master.size, export.width / export.height) != master.size
            for export in exports
        )
        else ()
    )
    return [
        (export, export_image(master, export, metadata, xmp, faces=faces)) for export in exports
    ]


def exports_of_master(
    path: Path, spec: VariantSpec, lora_hashes: Sequence[str]
) -> list[tuple[ExportSpec, bytes]]:
    """The channel exports of a master file, rebuilt from its pixels and its
    ``campaign_render`` (a master written before it had one gives exports without)."""
    from postprocess.embedded_metadata import RENDER_KEY

    with Image.open(path) as master:
        text = master.text.get(RENDER_KEY)
        image = master.convert("RGB")
    return export_files(image, spec, lora_hashes, RenderContext.read(text) if text else None)


def score_images(
    scoring: Scoring | None, images: Sequence[tuple[Variant, Finished]], job: Job
) -> tuple[dict[str, Scored], list[FailedImage]]:
    """Each image's scores and CLIP embedding by variant id, from one scoring call (no
    scorer: no scores); when that call raises, each of its images has failed."""
    if scoring is None or not images:
        return {variant.id: ({}, None) for variant, _ in images}, []
    try:
        scores, embeddings = scoring.score(
            [variant for variant, _ in images], [image for _, image in images]
        )
    except Exception as err:
        return {}, [FailedImage.of(variant, "score", err, job) for variant, _ in images]
    return {
        variant.id: (image_scores, embedding.astype("<f4").tobytes())
        for (variant, _), image_scores, embedding in zip(images, scores, embeddings, strict=True)
    }, []


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


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future
