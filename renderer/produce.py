"""The worker side of a run: render a batch, post-process, score, encode, write the files.

A ``Producer`` holds the loaded models of one campaign. ``produce`` returns what the
driver needs to commit each image to the ledger (``Produced``); it never touches the
ledger, so the same code runs in-process (local executor) and inside Ray actors.

Post-processing follows the variant's spec alone (``finish_image``): retouch, then the
logo, then the text — what is hashed into the id is what is applied, and
``campaign reproduce`` re-applies it from a stored spec with the files found by sha256.
Faces are detected once per rendered image and reused by skin smoothing, the faces
score and the export crop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .atomic import write_bytes_atomic
from .config import TEXT_ROLES, Campaign, ResolvedFile
from .errors import MissingFileError
from .hashing import canonical_json, sha256_bytes
from .metadata import a1111_parameters, digital_source_type, encode_png, xmp_packet
from .plan import Variant

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
class Produced:
    """One finished image, on disk, as reported to the driver."""

    variant: Variant
    output_path: str  # relative to the output folder
    output_sha256: str
    output_bytes: int
    scores: Mapping[str, float]
    seconds: float  # this image's share of its batch's wall time
    batch: tuple[str, ...]  # the variant ids rendered in the same pipeline call
    environment: Mapping[str, Any]
    embedding: bytes | None = None  # CLIP image embedding, float32 little-endian
    exports: tuple[ExportFile, ...] = ()


@dataclass(frozen=True, eq=False)
class Finished:
    """A post-processed image and what was measured on the way."""

    image: Image.Image
    faces: tuple[Box, ...] | None  # detected on the rendered image (None: not needed)
    text_contrast: float | None  # the lowest measured WCAG contrast of the text set


def output_path(campaign: Campaign, variant: Variant) -> str:
    return f"{campaign.spec.name}/{variant.output_name}.png"


def export_path(campaign_name: str, variant: Variant, export: Mapping[str, Any]) -> str:
    extension = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}[export["format"]]
    return f"{campaign_name}/exports/{export['name']}/{variant.output_name}{extension}"


class Assets:
    """The files post-processing reads, found by sha256: the brand kit's when rendering, the
    files located from a stored spec when reproducing. Loaded once, on first use."""

    def __init__(self, files: Iterable[ResolvedFile]):
        self.paths = {file.sha256: file.path for file in files}
        self._loaded: dict[Any, Any] = {}

    def path(self, identity: Mapping[str, str]) -> Path:
        path = self.paths.get(identity["sha256"])
        if path is None:
            raise MissingFileError(f"post-processing needs {identity['name']} (sha256 "
                                   f"{identity['sha256']}), which was not found",
                                   fix="restore the file, or pass its folder with --search")
        return path

    def logo(self, identity: Mapping[str, str]) -> Image.Image:
        key = ("logo", identity["sha256"])
        if key not in self._loaded:
            self._loaded[key] = open_image(self.path(identity), "RGBA")
        return self._loaded[key]

    def brand_reference(self, identities: Sequence[Mapping[str, str]]) -> Any:
        from postprocess.retouch import BrandReference

        key = ("references", tuple(identity["sha256"] for identity in identities))
        if key not in self._loaded:
            self._loaded[key] = BrandReference.from_images(
                [np.asarray(open_image(self.path(identity), "RGB")) for identity in identities])
        return self._loaded[key]


def retouch_steps(steps: Sequence[Mapping[str, Any]], assets: Assets) -> tuple[list[Any], Any]:
    """The library's step objects from a spec's retouch list, and the brand reference a
    brand_grade step grades toward (None without one)."""
    from postprocess import retouch

    classes = {"white_balance": retouch.WhiteBalance, "exposure": retouch.ExposureNormalisation,
               "brand_grade": retouch.BrandGrade, "denoise": retouch.Denoise,
               "sharpen": retouch.Sharpen, "skin_smoothing": retouch.SkinSmoothing}
    built, references = [], None
    for step in steps:
        params = {key: value for key, value in step.items() if key not in ("op", "references")}
        built.append(classes[step["op"]](**params))
        if step["op"] == "brand_grade":
            references = assets.brand_reference(step["references"])
    return built, references


def detect(image: Image.Image) -> tuple[Box, ...]:
    from postprocess.faces import detect_faces

    return tuple(detect_faces(np.asarray(image.convert("RGB"))))


def finish_image(image: Image.Image, variant: Variant, assets: Assets,
                 faces: Sequence[Box] | None = None) -> Finished:
    """Post-process as the variant's spec says (what is hashed is what is applied): retouch,
    then the logo, then the text. ``faces`` (detected on ``image`` when needed and None)."""
    post = variant.spec["postprocess"]
    if faces is not None:
        faces = tuple(faces)
    if steps := post.get("retouch"):
        from postprocess.retouch import SkinSmoothing, apply_retouch

        built, references = retouch_steps(steps, assets)
        if faces is None and any(isinstance(step, SkinSmoothing) for step in built):
            faces = detect(image)
        image = Image.fromarray(apply_retouch(np.asarray(image.convert("RGB")), built,
                                              references, faces))
    if (logo := post["logo"]) is not None:
        from postprocess.overlay import LogoPlacement, overlay_logo

        placement = LogoPlacement(anchor=logo["anchor"], margin=logo["margin"],
                                  scale=logo["scale"])
        image = overlay_logo(image, assets.logo(logo), placement)
    contrast = None
    if text := post.get("text"):
        from postprocess.text import TextBlock, overlay_text

        for role in TEXT_ROLES:
            if (block := text.get(role)) is None:
                continue
            font = assets.path(block["font"]) if block["font"] else None
            placed = overlay_text(image, TextBlock(block["text"], role, font, block["align"]),
                                  tuple(block["box"]), text["palette"])
            image = placed.image
            contrast = placed.contrast if contrast is None else min(contrast, placed.contrast)
    return Finished(image=image, faces=faces, text_contrast=contrast)


def open_image(path: Path, mode: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert(mode)


def brand_files(campaign: Campaign) -> list[ResolvedFile]:
    brand = campaign.brand
    return [brand.logo, *brand.references, *brand.fonts.values()]


def load_scorer(campaign: Campaign) -> Any:
    from postprocess.scoring import ClipScorer

    clip, batch_size = campaign.clip, campaign.spec.scoring.batch_size
    if clip.folder is not None:
        return ClipScorer.from_folder(clip.folder, batch_size=batch_size)
    return ClipScorer.from_pretrained(clip.name, clip.pretrained, batch_size=batch_size)


class Producer:
    """The models and brand assets of one campaign, loaded once."""

    def __init__(self, campaign: Campaign, log: Callable[[str], None]):

        from .render import DiffusersRenderer, RenderOptions

        self.campaign = campaign
        render = campaign.spec.render
        self.renderer = DiffusersRenderer(RenderOptions(
            device=render.device, dtype=render.dtype, compile=render.compile,
            channels_last=render.channels_last, vae_tiling=render.vae_tiling,
            vae_slicing=render.vae_slicing, cpu_offload=render.cpu_offload), log=log)
        self.scorer = load_scorer(campaign)
        self.assets = Assets(brand_files(campaign))
        self.logo = open_image(campaign.brand.logo.path, "RGBA")
        self.references = [open_image(ref.path, "RGB") for ref in campaign.brand.references]
        self._reference_embeddings: np.ndarray | None = None
        self._environment: dict[str, Any] | None = None

    def environment(self) -> dict[str, Any]:
        if self._environment is None:
            self._environment = self.renderer.fingerprint()
        return self._environment

    def batch_size(self) -> int:
        from .render import auto_batch_size

        requested = self.campaign.spec.render.batch_size
        return requested if isinstance(requested, int) else auto_batch_size(
            self.renderer.device, self.campaign.recipe.spec.family)

    def produce(self, batch: Sequence[Variant], out_dir: Path) -> list[Produced]:
        started = time.perf_counter()
        rendered = self.renderer.render_resilient(self.campaign.recipe, batch)
        images = [image for image, _ in rendered]
        faces = [detect(image) for image in images]
        finished = [finish_image(image, variant, self.assets, found)
                    for image, variant, found in zip(images, batch, faces, strict=True)]
        scores, embeddings = self.score(batch, finished)
        produced = []
        for variant, done, score, embedding, (_, call) in zip(
                batch, finished, scores, embeddings, rendered, strict=True):
            exports = self.export(variant, done, out_dir)
            data = encode_png(done.image, variant.spec)
            relative = output_path(self.campaign, variant)
            write_bytes_atomic(out_dir / relative, data)
            produced.append(Produced(
                variant=variant, output_path=relative, output_sha256=sha256_bytes(data),
                output_bytes=len(data), scores=score, seconds=0.0,
                batch=call, environment=self.environment(),
                embedding=embedding.astype("<f4").tobytes(), exports=exports))
        seconds_each = round((time.perf_counter() - started) / len(batch), 4)
        return [_with_seconds(item, seconds_each) for item in produced]

    # ------------------------------------------------------------ scores

    def score(self, batch: Sequence[Variant],
              finished: Sequence[Finished]) -> tuple[list[dict[str, float]], np.ndarray]:
        """Every per-image metric (README: the metrics table), in batches, and the CLIP
        image embeddings (the run's consistency is computed from them on the driver)."""
        from postprocess.metrics import palette_adherence

        images = [done.image for done in finished]
        image_embeddings = self.scorer.embed_images(images)
        prompt_embeddings = self.scorer.embed_texts([variant.prompt for variant in batch])
        # Float rounding can push a cosine of unit vectors a hair past +-1.
        prompt_cosines = np.clip(np.sum(image_embeddings * prompt_embeddings, axis=1), -1, 1)
        brand = self.brand_cosines(image_embeddings)
        palette = self.campaign.brand.spec.palette
        results = []
        for index, (variant, done) in enumerate(zip(batch, finished, strict=True)):
            pixels = np.asarray(done.image.convert("RGB"))
            scores = {"clip_prompt": float(prompt_cosines[index])}
            if brand is not None:
                scores["clip_brand"] = float(brand[0][index])
                scores["clip_brand_best"] = float(brand[1][index])
            if palette:
                scores["palette_adherence"] = palette_adherence(
                    pixels, palette, self.campaign.spec.scoring.palette_delta_e)
            scores.update(self.logo_scores(variant, pixels))
            scores["faces"] = float(len(done.faces or ()))
            if done.text_contrast is not None:
                scores["text_contrast"] = round(done.text_contrast, 4)
            results.append(scores)
        return results, image_embeddings

    def brand_cosines(self, image_embeddings: np.ndarray) -> tuple[np.ndarray,
                                                                  np.ndarray] | None:
        """Cosines to the references' re-normalised centroid, and to the closest one."""
        if not self.references:
            return None
        if self._reference_embeddings is None:
            self._reference_embeddings = self.scorer.embed_images(self.references)
        references = self._reference_embeddings
        centroid = references.mean(axis=0)
        centroid /= np.linalg.norm(centroid)
        return (np.clip(image_embeddings @ centroid, -1, 1),
                np.clip((image_embeddings @ references.T).max(axis=1), -1, 1))

    def logo_scores(self, variant: Variant, pixels: np.ndarray) -> dict[str, float]:
        """The logo where the brand kit places it for this aspect ratio: found (template
        match), in place, inside the safe zone. Scored whether or not the campaign overlays
        the logo, so a campaign that must carry it can gate on it."""
        from postprocess.metrics import logo_score
        from postprocess.overlay import LogoPlacement, SafeZone, logo_box

        placement = self.campaign.brand.placement_for(variant.aspect)
        size = (pixels.shape[1], pixels.shape[0])
        try:
            expected = logo_box(size, self.logo.size, LogoPlacement(
                placement.anchor, placement.margin, placement.scale))
        except ValueError:  # no room for the logo at this size: nothing to look for
            return {}
        found = logo_score(pixels, self.logo, expected)
        zone = SafeZone(*placement.safe_zone) if placement.safe_zone else SafeZone()
        return {"logo_match": round(found.match, 4), "logo_in_place": float(found.in_place),
                "logo_in_safe_zone": float(found.in_safe_zone(size, zone))}

    # ------------------------------------------------------------ exports

    def export(self, variant: Variant, done: Finished, out_dir: Path) -> tuple[ExportFile, ...]:
        """Each channel export of the variant, beside the master, with its metadata."""
        exports = variant.spec["postprocess"].get("exports")
        if not exports:
            return ()
        from postprocess.export import ExportSpec, export_image

        spec = variant.spec
        metadata = {"parameters": a1111_parameters(spec), "campaign_variant": canonical_json(spec)}
        xmp = xmp_packet(spec["prompt"], digital_source_type(spec))
        files = []
        for export in exports:
            data = export_image(done.image, ExportSpec(**export), metadata, xmp,
                                faces=done.faces or ())
            relative = export_path(self.campaign.spec.name, variant, export)
            write_bytes_atomic(out_dir / relative, data)
            files.append(ExportFile(name=export["name"], path=relative,
                                    sha256=sha256_bytes(data), bytes=len(data),
                                    width=export["width"], height=export["height"],
                                    format=export["format"]))
        return tuple(files)


def _with_seconds(item: Produced, seconds: float) -> Produced:
    from dataclasses import replace

    return replace(item, seconds=seconds)
