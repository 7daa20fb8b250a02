"""Validate a brand kit: its schema, its placement and text boxes by aspect ratio, its logo,
reference images and fonts (resolved, pinned, readable).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from renderer.core.errors import SchemaError
from renderer.load.campaign_schema import ASPECT_PATTERN, TEXT_ROLES, BrandKitFile
from renderer.load.schema_errors import parse_document
from renderer.load.yamlsource import KeyPath, YamlDocument, load_yaml
from renderer.validate.file_probes import font_problem, image_problem
from renderer.validate.file_refs import resolve_file
from renderer.validate.inputs import BrandKit


def load_brand_kit(path: Path, *, verify_hashes: bool = True) -> BrandKit:
    return validate_brand_kit(load_yaml(path), verify_hashes=verify_hashes)


def validate_brand_kit(document: YamlDocument, *, verify_hashes: bool = True) -> BrandKit:
    spec: BrandKitFile = parse_document(document, BrandKitFile)
    for key in ("placement", "text"):
        for aspect in getattr(spec, key):
            check_aspect_key(document, aspect, (key, aspect), key)
    for aspect, placement in spec.placement.items():
        if placement.safe_zone is not None:
            _check_box(document, placement.safe_zone, ("placement", aspect, "safe_zone"))
    for aspect, text in spec.text.items():
        for role in TEXT_ROLES:
            if (box := getattr(text, role)) is not None:
                _check_box(document, box.box, ("text", aspect, role, "box"))
    for index, (first, second) in enumerate(spec.allowed_overlaps):
        if first == second:
            raise document.error(
                SchemaError,
                "an allowed overlap names two different marks",
                ("allowed_overlaps", index),
                found=f"[{first}, {second}]",
                fix="e.g. [headline, legal]: the marks are logo, headline and legal",
            )
    logo = resolve_file(document, spec.logo, ("logo",), verify_hashes, image_problem)
    fonts = {
        role: resolve_file(document, ref, ("fonts", role), verify_hashes, font_problem)
        for role in TEXT_ROLES
        if (ref := getattr(spec.fonts, role)) is not None
    }
    # Pillow loads when a brand kit is first validated, not with every command (start-up time).
    from PIL import Image

    with Image.open(logo.path) as image:
        logo_size = image.size
    return BrandKit(
        spec=spec,
        source=document.path,
        logo=logo,
        references=tuple(
            resolve_file(document, ref, ("references", index), verify_hashes, image_problem)
            for index, ref in enumerate(spec.references)
        ),
        fonts=fonts,
        font_fallbacks=tuple(
            resolve_file(document, ref, ("fonts", "fallbacks", index), verify_hashes, font_problem)
            for index, ref in enumerate(spec.fonts.fallbacks)
        ),
        logo_size=logo_size,
    )


def check_aspect_key(document: YamlDocument, aspect: str, key_path: KeyPath, what: str) -> None:
    """A key of a table by aspect ratio is 'W:H' or 'default'."""
    if aspect != "default" and not re.match(ASPECT_PATTERN, aspect):
        raise document.error(
            SchemaError,
            f"{what} key is not an aspect ratio",
            key_path,
            expected="'W:H' (e.g. '9:16') or 'default'",
            found=repr(aspect),
        )


def _check_box(document: YamlDocument, box: Sequence[float], key_path: KeyPath) -> None:
    left, top, right, bottom = box
    if not (left < right and top < bottom):
        raise document.error(
            SchemaError,
            "a box is [left, top, right, bottom] with left < right and top < bottom",
            key_path,
            found=str(list(box)),
            fix="e.g. [0.05, 0.05, 0.95, 0.95] (fractions of width and height)",
        )
