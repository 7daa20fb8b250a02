"""Brand logo overlay: alpha-composite a logo at an anchor of the image.

Sizes are fractions of the image's short side, so one placement suits every aspect ratio
of a campaign. The result depends only on the inputs (no randomness, fixed resampling).
"""

from __future__ import annotations

from PIL import Image

from postprocess.geometry import inside
from postprocess.parameters import LogoPlacement, SafeZone


def logo_in_safe_zone(
    box: tuple[int, int, int, int], image_size: tuple[int, int], zone: SafeZone
) -> bool:
    """Whether the pixel box (left, top, right, bottom) lies wholly inside ``zone``."""
    return inside(box, zone.pixels(image_size))


def logo_box(
    image_size: tuple[int, int], logo_size: tuple[int, int], placement: LogoPlacement
) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) pixel box the resized logo will cover."""
    image_width, image_height = image_size
    short_side = min(image_width, image_height)
    width = max(1, round(placement.scale * short_side))
    height = max(1, round(width * logo_size[1] / logo_size[0]))  # keep the logo's aspect
    margin = round(placement.margin * short_side)
    if width + 2 * margin > image_width or height + 2 * margin > image_height:
        raise ValueError(
            f"logo of {logo_size[0]}x{logo_size[1]} px scaled to {width}x{height} px with a "
            f"{margin} px margin does not fit a {image_width}x{image_height} px image; "
            f"lower the placement scale ({placement.scale}) or margin ({placement.margin})"
        )

    horizontal, vertical = _anchor_sides(placement.anchor)
    left = {
        "left": margin,
        "right": image_width - margin - width,
        "center": (image_width - width) // 2,
    }[horizontal]
    top = {
        "top": margin,
        "bottom": image_height - margin - height,
        "center": (image_height - height) // 2,
    }[vertical]
    return left, top, left + width, top + height


def overlay_logo(image: Image.Image, logo: Image.Image, placement: LogoPlacement) -> Image.Image:
    """A new RGB image with ``logo`` composited by its alpha; the inputs are left untouched."""
    left, top, right, bottom = logo_box(image.size, logo.size, placement)
    resized_logo = logo.convert("RGBA").resize(
        (right - left, bottom - top), Image.Resampling.LANCZOS
    )
    canvas = image.convert("RGBA")  # always a new image, so the caller's is never modified
    canvas.alpha_composite(resized_logo, dest=(left, top))
    return canvas.convert("RGB")


def _anchor_sides(anchor: str) -> tuple[str, str]:
    """Split an anchor into its (horizontal, vertical) sides."""
    if anchor == "center":
        return "center", "center"
    vertical, horizontal = anchor.split("-")
    return horizontal, vertical
