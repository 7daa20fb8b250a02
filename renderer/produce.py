"""The worker path, the one way an image is made: render a batch (halving it on out of
memory) → post-process → score → encode → write the master and its channel exports.

``Worker.produce(job)`` is used by the local executor, inside Ray actors and by ``campaign
reproduce``; it never touches the ledger, it returns what the driver commits
(``Produced``). Everything it does follows the variant's spec alone — what is hashed into
the id is what is applied — with files found by sha256 (``FileIndex``), so a reproduction
from a stored spec runs exactly this code, the recipe's refine steps included (they run
inside the render: its images are the refined masters).

A job is one pipeline call's batch and the members to write: the others are co-members,
rendered again only so the written ones come out as they do beside them (an image's bytes
depend on its batch by float rounding); their fresh bytes are compared with the record,
never written. Faces are detected once per rendered image and reused by skin smoothing
and the faces score. Channel exports are made from the master alone (``export_files``),
so a lost export is rebuilt from its master without rendering. Each image reports its
share of every step's time (``Produced.steps``: base, refiner, hires, upscale, detail,
postprocess, score, write).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from postprocess.parameters import EXTENSIONS, ExportSpec

from .atomic import write_bytes_atomic
from .hashing import sha256_bytes
from .inputs import BrandKit, Campaign, FileIndex
from .metadata import LoraHashes, encode_png, file_metadata
from .plan import Variant
from .schema import FileId
from .variant import RecipeUse, VariantSpec

Box = tuple[int, int, int, int]


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
class JobResult:
    produced: tuple[Produced, ...]  # written, to commit
    rechecked: tuple[tuple[Variant, str], ...] = ()  # co-members and their fresh sha256


@dataclass(frozen=True, eq=False)
class Finished:
    """A post-processed image and what was measured on the way."""

    image: Image.Image
    faces: tuple[Box, ...]  # detected on the rendered image
    text_contrast: float | None  # the lowest measured WCAG contrast of the text set


class Assets:
    """The images post-processing reads (logo, brand references), found by sha256 and
    loaded once."""

    def __init__(self, files: FileIndex):
        self.files = files
        self._loaded: dict[Any, Any] = {}

    def logo(self, file: FileId) -> Image.Image:
        key = ("logo", file.sha256)
        if key not in self._loaded:
            self._loaded[key] = open_image(self.files.path(file), "RGBA")
        return self._loaded[key]

    def brand_reference(self, references: Sequence[FileId]) -> Any:
        from postprocess.retouch import BrandReference

        key = ("references", tuple(file.sha256 for file in references))
        if key not in self._loaded:
            self._loaded[key] = BrandReference.from_images(
                [np.asarray(open_image(self.files.path(file), "RGB")) for file in references])
        return self._loaded[key]


def detect(image: Image.Image) -> tuple[Box, ...]:
    from postprocess.faces import detect_faces

    return tuple(detect_faces(np.asarray(image.convert("RGB"))))


def finish_image(image: Image.Image, spec: VariantSpec, assets: Assets,
                 faces: Sequence[Box]) -> Finished:
    """Post-process as the spec says (what is hashed is what is applied): retouch, then the
    logo, then the text. ``faces`` were detected on ``image``."""
    post = spec.postprocess
    if post.retouch:
        from postprocess.parameters import BrandGrade
        from postprocess.retouch import apply_retouch

        grades = [step for step in post.retouch if isinstance(step, BrandGrade)]
        references = assets.brand_reference(grades[0].references) if grades else None
        image = Image.fromarray(apply_retouch(np.asarray(image.convert("RGB")), post.retouch,
                                              references, faces))
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
            placed = overlay_text(image, TextBlock(block.text, role, font, block.align),
                                  tuple(block.box), post.text.palette)
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
        from postprocess.scoring import ClipScorer

        clip, scoring = campaign.clip, campaign.spec.scoring
        self.scorer = ClipScorer.from_folder(clip.folder, batch_size=scoring.batch_size) \
            if clip.folder is not None else ClipScorer.from_pretrained(
                clip.name, clip.pretrained, batch_size=scoring.batch_size)
        self.brand: BrandKit = campaign.brand
        self.palette_delta_e = scoring.palette_delta_e
        self.logo = open_image(campaign.brand.logo.path, "RGBA")
        references = [open_image(ref.path, "RGB") for ref in campaign.brand.references]
        self.brand_embeddings = self.scorer.embed_brand(references) if references else None

    def score(self, batch: Sequence[Variant], finished: Sequence[Finished]
              ) -> tuple[list[dict[str, float]], np.ndarray]:
        """Every per-image metric, and the CLIP image embeddings (the run's consistency is
        computed from them on the driver)."""
        from postprocess.metrics import palette_adherence

        embeddings = self.scorer.embed_images([done.image for done in finished])
        clip = self.scorer.score_embedded(embeddings, [variant.prompt for variant in batch],
                                          self.brand_embeddings)
        palette = self.brand.spec.palette
        results = []
        for variant, done, clip_scores in zip(batch, finished, clip, strict=True):
            pixels = np.asarray(done.image.convert("RGB"))
            scores = clip_scores.as_dict()
            if palette:
                scores["palette_adherence"] = palette_adherence(pixels, palette,
                                                                self.palette_delta_e)
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
        return {"logo_match": round(found.match, 4), "logo_in_place": float(found.in_place),
                "logo_in_safe_zone": float(found.in_safe_zone(size, zone))}


class Worker:
    """The loaded models of one run: renders, finishes, scores and writes batches."""

    def __init__(self, renderer: Any, files: FileIndex, scoring: Scoring | None, *,
                 keep_pipelines: bool = True):
        self.renderer, self.files, self.scoring = renderer, files, scoring
        self.assets = Assets(files)
        self.lora_hashes = LoraHashes(files.path)
        # Without keep_pipelines, a job of another recipe than the last releases the last
        # one's pipelines first (jobs come grouped by recipe: each loads once per run).
        self.keep_pipelines = keep_pipelines
        self._recipe: str | None = None
        self._environment: dict[str, Any] | None = None

    @classmethod
    def for_campaign(cls, campaign: Campaign, log: Callable[[str], None]) -> Worker:
        from .render import DiffusersRenderer, RenderOptions

        options = campaign.spec.render.model_dump(include=RenderOptions.known())
        allow_pickle = any(recipe.spec.allow_pickle for recipe in campaign.recipes)
        renderer = DiffusersRenderer(RenderOptions(**options), allow_pickle=allow_pickle,
                                     log=log, recipes=campaign.recipes)
        return cls(renderer, campaign.files(), Scoring(campaign),
                   keep_pipelines=campaign.spec.render.keep_pipelines)

    def environment(self) -> dict[str, Any]:
        if self._environment is None:
            self._environment = self.renderer.fingerprint()
        return self._environment

    def produce(self, job: Job, out_dir: Path) -> JobResult:
        """Render (with the refine steps), finish, score and write one job; the files are
        in place on return."""
        started, loading = time.perf_counter(), self.renderer.load_seconds
        batch = job.batch
        self.switch_recipe(batch[0].spec.recipe)
        # The renderer's breakdown of its time by step; a renderer double may keep none.
        timings = getattr(self.renderer, "timings", {})
        timings.clear()
        rendered = self.renderer.render_resilient([variant.spec for variant in batch],
                                                  self.files)
        steps = dict(timings) or {"render": time.perf_counter() - started}
        clock = time.perf_counter()
        finished = [finish_image(image, variant.spec, self.assets, detect(image))
                    for (image, _), variant in zip(rendered, batch, strict=True)]
        steps["postprocess"], clock = time.perf_counter() - clock, time.perf_counter()
        written = [index for index, variant in enumerate(batch) if variant.id in job.write]
        if self.scoring is not None and written:
            scores, embeddings = self.scoring.score([batch[i] for i in written],
                                                    [finished[i] for i in written])
        else:
            scores, embeddings = [{} for _ in written], [None] * len(written)
        steps["score"], clock = time.perf_counter() - clock, time.perf_counter()
        produced, rechecked = [], []
        for index, (variant, done, (_, call)) in enumerate(zip(batch, finished, rendered,
                                                                strict=True)):
            lora_hashes = self.lora_hashes.of(variant.spec)
            data = encode_png(done.image, variant.spec, lora_hashes)
            if index not in written:
                rechecked.append((variant, sha256_bytes(data)))
                continue
            exports = tuple(self.write_export(variant, export, export_data, out_dir)
                            for export, export_data in export_files(done.image, variant.spec,
                                                                    lora_hashes))
            write_bytes_atomic(out_dir / variant.output_path, data)
            slot = written.index(index)
            embedding = embeddings[slot]
            produced.append(Produced(
                variant=variant, output_path=variant.output_path,
                output_sha256=sha256_bytes(data), output_bytes=len(data), scores=scores[slot],
                seconds=0.0, batch=tuple(batch[member].id for member in call),
                environment=self.environment(),
                embedding=None if embedding is None else embedding.astype("<f4").tobytes(),
                exports=exports))
        steps["write"] = time.perf_counter() - clock
        # Each image's share of the job's time, without the time spent loading models.
        loaded = self.renderer.load_seconds - loading
        seconds_each = round((time.perf_counter() - started - loaded) / len(batch), 4)
        shares = tuple((step, round(seconds / len(batch), 4)) for step, seconds in steps.items())
        return JobResult(tuple(replace(item, seconds=seconds_each, steps=shares)
                               for item in produced), tuple(rechecked))

    def switch_recipe(self, recipe: RecipeUse) -> None:
        if self._recipe not in (None, recipe.ref) and not self.keep_pipelines:
            self.renderer.release()
        self._recipe = recipe.ref

    @staticmethod
    def write_export(variant: Variant, export: ExportSpec, data: bytes,
                     out_dir: Path) -> ExportFile:
        relative = variant.export_path(export.name, EXTENSIONS[export.format])
        write_bytes_atomic(out_dir / relative, data)
        return ExportFile(name=export.name, path=relative, sha256=sha256_bytes(data),
                          bytes=len(data), width=export.width, height=export.height,
                          format=export.format)


def export_files(master: Image.Image, spec: VariantSpec,
                 lora_hashes: Sequence[str]) -> list[tuple[ExportSpec, bytes]]:
    """Each channel export of a master image, with the variant's metadata: a function of
    the master's pixels, the spec and its LoRAs' A1111 hashes (``LoraHashes.of``) alone, so
    it is rebuilt from the master file exactly.
    Faces (the crop keeps them) are detected on the master, once, when a channel crops."""
    exports = spec.postprocess.exports or []
    if not exports:
        return []
    from postprocess.export import export_image

    metadata, xmp = file_metadata(spec, lora_hashes)
    faces = detect(master) if any((export.width, export.height) != master.size
                                  for export in exports) else ()
    return [(export, export_image(master, export, metadata, xmp, faces=faces))
            for export in exports]
