"""The brand's layout, checked before anything renders (README, "Brand layout"): where the
logo, its clear space and the text boxes fall on a master, in pixels, against each other,
the safe zone, the logo's smallest size and every channel export's crop.

The boxes are known from the brand kit, the master's size and which texts a variant sets,
so a layout that collides is refused here (exit 2) rather than found on the images. An
export whose aspect differs from the master's is cut around the subject
(``postprocess.export.smart_crop``), wherever that lands; so every mark must lie where
every such crop keeps it: the strip the leftmost and the rightmost crop (the topmost and
the bottommost) share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from postprocess.geometry import Box, crop_size, grown, inside, overlap
from postprocess.parameters import ExportSpec, SafeZone
from renderer.core.errors import InputError, SchemaError
from renderer.load.yamlsource import YamlDocument
from renderer.validate.inputs import BrandKit
from renderer.validate.sizes import text_box_pixels


@dataclass(frozen=True)
class Layout:
    """The marks of one master size, in its pixels."""

    size: tuple[int, int]
    marks: dict[str, Box]  # logo (without its clear space), headline, legal: those it sets
    clear_space: int  # pixels kept free around the logo on every side

    def kept_clear(self, name: str) -> Box:
        """The mark with the space no other mark may take (the logo's clear space)."""
        box = self.marks[name]
        return grown(box, self.clear_space, self.size) if name == "logo" else box

    def describe(self, name: str) -> str:
        box = self.kept_clear(name)
        extra = " with its clear space" if box != self.marks[name] else ""
        return f"the {MARK_NAMES[name]}{extra} at {_pixels(box)}"


# Each mark as an error names it.
MARK_NAMES = {"logo": "logo", "headline": "headline", "legal": "legal line"}


def brand_layout(
    document: YamlDocument,
    brand: BrandKit,
    aspect: str | None,
    size: tuple[int, int],
    roles: Sequence[str],
    logo: bool,
    variant: str,
) -> Layout:
    """The marks a master of ``size`` carries: the logo (when the campaign sets it) and the
    text ``roles`` the variant sets. A logo that does not fit the master is refused."""
    marks: dict[str, Box] = {}
    clear_space = 0
    if logo:
        # The overlay loads Pillow: with the first layout checked, not with every command.
        from postprocess.overlay import logo_box

        try:
            box = logo_box(size, brand.logo_size, brand.placement_for(aspect))
        except ValueError as err:
            raise document.error(
                SchemaError,
                f"the logo does not fit a {size[0]}x{size[1]} master",
                ("logo",),
                found=f"{err}, first for the {variant}",
                fix=f"change the placement for {aspect or 'default'} in {brand.source}, "
                "or set logo: false",
            ) from None
        marks["logo"] = box
        clear_space = round(brand.spec.logo.clear_space * min(box[2] - box[0], box[3] - box[1]))
    for role in roles:
        left, top, right, bottom = text_box_pixels(brand.text_box_for(aspect, role).box, *size)
        marks[role] = (left, top, right, bottom)
    return Layout(size, marks, clear_space)


def check_layout(
    document: YamlDocument,
    brand: BrandKit,
    aspect: str | None,
    layout: Layout,
    exports: Sequence[ExportSpec],
    variant: str,
) -> None:
    """Refuse a layout whose marks leave the safe zone, overlap (unless the brand allows the
    pair), shrink the logo under its smallest size, or can be cut away by an export's crop.
    ``variant`` names the first variant of this size, as the error shows it."""
    width, height = layout.size
    key = aspect if aspect in brand.spec.placement else "default"
    text_key = aspect if aspect in brand.spec.text else "default"
    where = f"the {width}x{height} master"

    def refuse(message: str, found: str, fix: str) -> InputError:
        return document.error(SchemaError, message, ("brand",), found=found, fix=fix)

    zone = brand.placement_for(aspect).safe_zone or [0.0, 0.0, 1.0, 1.0]
    zone_left, zone_top, zone_right, zone_bottom = text_box_pixels(zone, width, height)
    safe_zones: dict[str, Box] = {  # rounded as each mark's box is: the logo's as its score's
        "logo": SafeZone.from_box(zone).pixels(layout.size),
        "text": (zone_left, zone_top, zone_right, zone_bottom),
    }
    for name, box in layout.marks.items():
        safe = safe_zones["logo" if name == "logo" else "text"]
        if not inside(box, safe):
            raise refuse(
                f"the {MARK_NAMES[name]} leaves the safe zone",
                f"the {MARK_NAMES[name]} at {_pixels(box)}, the safe zone {_pixels(safe)}, "
                f"in {where} of the {variant}",
                f"move the {MARK_NAMES[name]} box inside placement.{key}.safe_zone in "
                f"{brand.source}",
            )
    allowed = {frozenset(pair) for pair in brand.spec.allowed_overlaps}
    for first, second in combinations(layout.marks, 2):
        if frozenset((first, second)) in allowed:
            continue
        if overlap(layout.kept_clear(first), layout.kept_clear(second)):
            raise refuse(
                f"the {MARK_NAMES[first]} and the {MARK_NAMES[second]} overlap",
                f"{layout.describe(first)} and {layout.describe(second)}, in {where} of the "
                f"{variant}",
                f"move one of the boxes (placement.{key} or text.{text_key} in {brand.source}), "
                f"or, if the brand means them to overlap, add [{first}, {second}] to its "
                "allowed_overlaps",
            )
    if "logo" in layout.marks and (smallest := brand.spec.logo.min_px) is not None:
        logo = layout.marks["logo"]
        sizes = [(where, logo[2] - logo[0])] + [
            (
                f"export {export.name!r} ({export.width}x{export.height}) cut from {where}",
                _shown_width(logo, layout.size, export),
            )
            for export in exports
        ]
        for shown_in, logo_width in sizes:
            if logo_width < smallest:
                raise refuse(
                    f"the logo is smaller than logo.min_px ({smallest} px)",
                    f"{logo_width} px wide in {shown_in} of the {variant}",
                    f"raise placement.{key}.scale in {brand.source}, make the export larger, "
                    "or lower logo.min_px",
                )
    for export in exports:
        crop = crop_size(layout.size, export.width / export.height)
        if crop == layout.size:
            continue  # the master's own aspect: resized whole, nothing cut
        # Every crop of this size the subject may place keeps this strip (empty: none).
        kept = (width - crop[0], height - crop[1], crop[0], crop[1])
        for name in layout.marks:
            if not inside(layout.kept_clear(name), kept):
                raise refuse(
                    f"export {export.name!r} can cut the {MARK_NAMES[name]} away",
                    f"{layout.describe(name)}; a {crop[0]}x{crop[1]} crop of {where} of the "
                    f"{variant} keeps {_strip(kept)} wherever the subject puts it",
                    f"move the {MARK_NAMES[name]} toward the centre for {aspect or 'default'} in "
                    f"{brand.source}, or make the export the master's aspect "
                    f"({width}:{height}) and crop it elsewhere",
                )


def _shown_width(logo: Box, size: tuple[int, int], export: ExportSpec) -> int:
    """The logo's width in pixels once the master is cropped to the export's aspect and
    resized to its width."""
    crop_width, _ = crop_size(size, export.width / export.height)
    return int((logo[2] - logo[0]) * export.width / crop_width)


def _strip(box: Box) -> str:
    empty = box[0] >= box[2] or box[1] >= box[3]
    return "no pixel of the master" if empty else f"only {_pixels(box)}"


def _pixels(box: Box) -> str:
    left, top, right, bottom = box
    return f"[{left}, {top}, {right}, {bottom}] px"
