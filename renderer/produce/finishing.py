"""Post-processing one rendered image as its variant's spec says, and what it reads.

``finish_image`` applies the spec's retouch, then its logo, then its text (what is hashed
into the id is what is applied). Faces are detected once per rendered image (``detect``)
and reused by skin smoothing and the faces score. The images post-processing reads (the
logo, the brand references) are found by sha256 and loaded once (``Assets``), and
``Assets.prepare`` loads them with the post-process library's modules at start-up.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np
from PIL import Image

from postprocess.geometry import Box
from postprocess.overlay import overlay_logo
from postprocess.parameters import BrandGrade
from postprocess.text_layout import MIN_FONT_SIZE, TextBlock, load_font
from renderer.load.schema import FileId
from renderer.plan.variant_spec import TextBlockUse, VariantSpec
from renderer.validate.inputs import Campaign, FileIndex

if TYPE_CHECKING:
    from postprocess.retouch import BrandReference

Key = TypeVar("Key", bound=Hashable)
Loaded = TypeVar("Loaded")
TextRole = Literal["headline", "legal"]

# The post-process library's modules the finish stage runs (imported at start-up).
FINISH_MODULES = (
    "postprocess.faces",
    "postprocess.retouch",
    "postprocess.overlay",
    "postprocess.text",
    "postprocess.export",
    "postprocess.metrics",
    "postprocess.ocr",
)


@dataclass(frozen=True)
class SetText:
    """A text block as it was set: what the guideline checks read back and measure."""

    role: TextRole
    lines: tuple[str, ...]  # as wrapped
    line_boxes: tuple[Box, ...]  # each inked line's box, in image pixels
    glyph_box: Box  # the box all its glyphs occupy
    contrast: float  # measured WCAG ratio against what is behind the glyphs
    x_height: float  # pixels, on the master


@dataclass(frozen=True, eq=False)
class Finished:
    """A post-processed image and what was measured on the way."""

    image: Image.Image
    rendered: Image.Image  # as the model made it, before post-processing (stray text is read here)
    faces: tuple[Box, ...]  # detected on the rendered image
    texts: tuple[SetText, ...]  # the headline and legal line set on it, in that order


class Assets:
    """The images post-processing reads (logo, brand references), found by sha256 and
    loaded once; safe to share between the threads that finish a batch's images."""

    def __init__(self, files: FileIndex):
        self.files = files
        self._logos: dict[str, Image.Image] = {}
        self._references: dict[tuple[str, ...], BrandReference] = {}
        self._loading = threading.Lock()

    def logo(self, file: FileId) -> Image.Image:
        return self._once(
            self._logos, file.sha256, lambda: open_image(self.files.path(file), "RGBA")
        )

    def brand_reference(self, references: Sequence[FileId]) -> BrandReference:
        # Lazy: OpenCV loads with the finish stage (FINISH_MODULES), not on import.
        from postprocess.retouch import BrandReference

        return self._once(
            self._references,
            tuple(file.sha256 for file in references),
            lambda: BrandReference.from_images(
                [np.asarray(open_image(self.files.path(file), "RGB")) for file in references]
            ),
        )

    def prepare(self, campaign: Campaign) -> None:
        """Import the post-process library and load what the campaign's post-processing
        reads (the face cascade, its logo, the brand grade's references, each font), before
        any image needs them."""
        for module in FINISH_MODULES:
            importlib.import_module(module)
        # Lazy: imported just above, at start-up rather than on this module's import.
        from postprocess.faces import load_cascade

        load_cascade()  # every image's faces are detected
        if campaign.spec.logo:
            self.logo(campaign.brand.logo.identity)
        post, brand = campaign.spec.postprocess, campaign.brand
        if any(step.operation()[0] == "brand_grade" for step in post.retouch):
            self.brand_reference([reference.identity for reference in brand.references])
        if post.text is not None:
            fonts = [*brand.fonts.values(), *brand.font_fallbacks]
            for font in [None, *(file.path for file in fonts)]:
                load_font(font, MIN_FONT_SIZE)

    def _once(self, cache: dict[Key, Loaded], key: Key, load: Callable[[], Loaded]) -> Loaded:
        with self._loading:
            if key not in cache:
                cache[key] = load()
            return cache[key]


def detect(image: Image.Image) -> tuple[Box, ...]:
    # Lazy: OpenCV loads with the finish stage (FINISH_MODULES), not on import.
    from postprocess.faces import detect_faces

    return tuple(detect_faces(np.asarray(image.convert("RGB"))))


def finish_image(
    image: Image.Image, spec: VariantSpec, assets: Assets, faces: Sequence[Box]
) -> Finished:
    """Post-process as the spec says (what is hashed is what is applied): retouch, then the
    logo, then the text. ``faces`` were detected on ``image``."""
    post, rendered = spec.postprocess, image
    if post.retouch:
        # Lazy: OpenCV loads with the finish stage (FINISH_MODULES), not on import.
        from postprocess.retouch import apply_retouch

        grades = [step for step in post.retouch if isinstance(step, BrandGrade)]
        references = assets.brand_reference(grades[0].references) if grades else None
        image = Image.fromarray(
            apply_retouch(np.asarray(image.convert("RGB")), post.retouch, references, faces)
        )
    if post.logo is not None:
        image = overlay_logo(image, assets.logo(post.logo.file), post.logo)
    texts = []
    if post.text is not None:
        # Lazy: OpenCV loads with the finish stage (FINISH_MODULES), not on import.
        from postprocess.text import overlay_text

        roles: tuple[tuple[TextRole, TextBlockUse | None], ...] = (
            ("headline", post.text.headline),
            ("legal", post.text.legal),
        )
        for role, block in roles:
            if block is None:
                continue
            font = assets.files.path(block.font) if block.font else None
            left, top, right, bottom = block.box  # four, as the spec's schema says
            placed = overlay_text(
                image,
                TextBlock(
                    block.text,
                    role,
                    font,
                    block.align,
                    tuple(assets.files.path(file) for file in block.fallbacks or ()),
                ),
                (left, top, right, bottom),
                post.text.palette,
            )
            image = placed.image
            texts.append(
                SetText(
                    role,
                    placed.lines,
                    placed.line_boxes,
                    placed.text_box,
                    placed.contrast,
                    placed.x_height,
                )
            )
    return Finished(image=image, rendered=rendered, faces=tuple(faces), texts=tuple(texts))


def open_image(path: Path, mode: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert(mode)
