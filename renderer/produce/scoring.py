"""Scoring a job's finished images: every per-image metric and the CLIP image embedding.

``Scoring`` holds what scores a campaign's images (its CLIP model with the brand
references embedded once, its palette, where its brand kit places the logo: README, the
metrics table); ``score_images`` scores a batch's images in one call, and when that call
raises, each of its images has failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from postprocess.geometry import Box, crop_size, separation
from postprocess.overlay import logo_box
from postprocess.parameters import ExportSpec, SafeZone
from renderer.plan.jobs import Job
from renderer.plan.variants import Variant
from renderer.produce.finishing import Finished, SetText, open_image
from renderer.produce.job import FailedImage
from renderer.produce.warm import warm_models
from renderer.render.diffusers_renderer import BUILDING_MODELS
from renderer.validate.inputs import BrandKit, Campaign

Scored = tuple[Mapping[str, float], bytes | None]  # an image's scores and CLIP embedding


class Scoring:
    """What scores a campaign's images: its CLIP model with the brand references embedded
    once, its palette and where its brand kit places the logo (README: the metrics table)."""

    def __init__(self, campaign: Campaign):
        clip, scoring = campaign.clip, campaign.spec.scoring
        if palette := campaign.brand.spec.palette:  # first: it runs beside the caller's imports
            # Lazy: OpenCV loads in start-up's thread, not on this module's import.
            from postprocess.metrics import near_palette_table

            near_palette_table(tuple(palette), float(scoring.palette_delta_e))
        # Lazy: rapidocr and ONNX Runtime load in start-up's thread, not on first use.
        from postprocess.ocr import load_models

        load_models()
        # Lazy: open_clip and torch load in start-up's thread, not on this module's import.
        from postprocess.scoring import ClipScorer

        def load() -> ClipScorer:
            with BUILDING_MODELS:  # not while diffusers builds one (start-up runs beside it)
                if clip.folder is not None:
                    return ClipScorer.from_folder(clip.folder, batch_size=scoring.batch_size)
                assert clip.name is not None  # validate: a folder, else an open_clip name
                return ClipScorer.from_pretrained(
                    clip.name, clip.pretrained, batch_size=scoring.batch_size
                )

        warm = warm_models()  # the render service's runner keeps CLIP between runs
        self.scorer = load() if warm is None else warm.scorer(clip, scoring.batch_size, load)
        self.brand: BrandKit = campaign.brand
        self.overlaps = {frozenset(pair) for pair in campaign.brand.spec.allowed_overlaps}
        self.palette_delta_e = scoring.palette_delta_e
        self.logo = open_image(campaign.brand.logo.path, "RGBA")
        references = [open_image(ref.path, "RGB") for ref in campaign.brand.references]
        self.brand_embeddings = self.scorer.embed_brand(references) if references else None

    def score(
        self, batch: Sequence[Variant], finished: Sequence[Finished]
    ) -> tuple[list[dict[str, float]], np.ndarray]:
        """Every per-image metric, and the CLIP image embeddings (the run's consistency is
        computed from them on the driver)."""
        # Lazy: OpenCV loads with the finish stage (FINISH_MODULES), not on import.
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
            scores.update(self.logo_scores(variant, pixels, done.texts))
            scores["faces"] = float(len(done.faces))
            scores.update(text_scores(variant, done))
            results.append(scores)
        return results, embeddings

    def logo_scores(
        self, variant: Variant, pixels: np.ndarray, texts: Sequence[SetText]
    ) -> dict[str, float]:
        """The logo where the brand kit places it for this aspect ratio: found (template
        match), in place, inside the safe zone, and its clear space (the gap to the text's
        glyphs, a fraction of its shorter side). Scored whether or not the campaign overlays
        the logo, so a campaign that must carry it can gate on it."""
        # Lazy: OpenCV loads with the finish stage (FINISH_MODULES), not on import.
        from postprocess.metrics import logo_score

        placement = self.brand.placement_for(variant.aspect)
        size = (pixels.shape[1], pixels.shape[0])
        try:
            expected = logo_box(size, self.logo.size, placement)
        except ValueError:  # no room for the logo at this size: nothing to look for
            return {}
        found = logo_score(pixels, self.logo, expected)
        zone = SafeZone.from_box(placement.safe_zone) if placement.safe_zone else SafeZone()
        scores = {
            "logo_match": round(found.match, 4),
            "logo_in_place": float(found.in_place),
            "logo_in_safe_zone": float(found.in_safe_zone(size, zone)),
        }
        # A text the brand kit lets overlap the logo on purpose keeps no clear space.
        kept_clear = [text for text in texts if frozenset(("logo", text.role)) not in self.overlaps]
        if kept_clear:
            left, top, right, bottom = found.found_box
            gap = min(separation(found.found_box, text.glyph_box) for text in kept_clear)
            scores["clear_space"] = round(gap / min(right - left, bottom - top), 4)
        return scores


def text_scores(variant: Variant, done: Finished) -> dict[str, float]:
    """The set text read back by OCR and its smallest x-height where it is delivered (the
    master and each export), and legible text OCR finds in the rendered image outside the
    text boxes (README: the metrics table)."""
    # Lazy: onnxruntime loads with the finish stage (FINISH_MODULES), not on import.
    from postprocess.ocr import find_stray_text, read_lines, readback_score

    post = variant.spec.postprocess
    blocks = (
        [block for block in (post.text.headline, post.text.legal) if block] if post.text else []
    )
    # Where the spec sets text, lettering is ours: the text boxes are allowed.
    allowed: list[Box] = [
        (block.box[0], block.box[1], block.box[2], block.box[3]) for block in blocks
    ]
    scores = {"stray_text": float(len(find_stray_text(done.rendered, allowed)))}
    if done.texts:
        read = [
            readback_score(text.lines, read_lines(done.image, text.line_boxes))
            for text in done.texts
        ]
        scale = min(
            [1.0, *(export_scale(done.image.size, export) for export in post.exports or ())]
        )
        scores["text_readback"] = round(min(read), 4)
        scores["text_contrast"] = round(min(text.contrast for text in done.texts), 4)
        scores["text_x_height"] = round(min(text.x_height for text in done.texts) * scale, 2)
    return scores


def export_scale(master: tuple[int, int], export: ExportSpec) -> float:
    """How much an export scales the master's pixels (it crops to its aspect, then resizes)."""
    crop_width, _ = crop_size(master, export.width / export.height)
    return export.width / crop_width


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
