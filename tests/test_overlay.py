import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from PIL import Image

from postprocess.overlay import logo_box, logo_in_safe_zone, overlay_logo
from postprocess.parameters import ANCHORS, LogoPlacement, SafeZone

BACKGROUND = (40, 90, 160)
LOGO_COLOUR = (250, 20, 20, 255)


def changed_pixels(before: Image.Image, after: Image.Image) -> np.ndarray:
    return np.any(np.asarray(before.convert("RGB")) != np.asarray(after), axis=-1)


def mask_of_box(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


@pytest.mark.parametrize("anchor", ANCHORS)
@pytest.mark.parametrize("image_size", [(96, 64), (64, 96)])
def test_opaque_logo_covers_exactly_its_box_at_each_anchor(anchor, image_size):
    image = Image.new("RGB", image_size, BACKGROUND)
    logo = Image.new("RGBA", (40, 20), LOGO_COLOUR)
    placement = LogoPlacement(anchor=anchor, margin=0.1, scale=0.25)

    result = overlay_logo(image, logo, placement)
    box = logo_box(image.size, logo.size, placement)

    assert result.mode == "RGB"
    assert result.size == image_size
    expected = mask_of_box((image_size[1], image_size[0]), box)
    np.testing.assert_array_equal(changed_pixels(image, result), expected)


def test_box_follows_anchor_margin_and_logo_aspect():
    # short side 64: margin 6 px (0.1), logo 16 px wide (0.25), half as tall as wide
    def box(anchor):
        return logo_box((96, 64), (40, 20), LogoPlacement(anchor=anchor, margin=0.1, scale=0.25))

    assert box("top-left") == (6, 6, 22, 14)
    assert box("top-right") == (74, 6, 90, 14)
    assert box("bottom-left") == (6, 50, 22, 58)
    assert box("bottom-right") == (74, 50, 90, 58)
    assert box("center") == (40, 28, 56, 36)


def test_transparent_logo_pixels_leave_the_image_unchanged():
    image = Image.new("RGB", (64, 64), BACKGROUND)
    logo = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    logo.paste(LOGO_COLOUR, (0, 0, 32, 16))  # opaque top half only
    placement = LogoPlacement(anchor="center", margin=0.0, scale=0.5)

    changed = changed_pixels(image, overlay_logo(image, logo, placement))

    left, top, right, bottom = logo_box(image.size, logo.size, placement)
    assert changed[top : top + 12, left:right].all()  # well inside the opaque half
    assert not changed[top + 20 : bottom, left:right].any()  # well inside the clear half


def test_overlay_is_deterministic_and_leaves_inputs_untouched():
    image = Image.new("RGBA", (64, 48), (*BACKGROUND, 255))
    logo = Image.linear_gradient("L").convert("RGBA").resize((30, 10))
    image_bytes, logo_bytes = image.tobytes(), logo.tobytes()

    first = overlay_logo(image, logo, LogoPlacement())
    second = overlay_logo(image, logo, LogoPlacement())

    assert first.tobytes() == second.tobytes()
    assert image.tobytes() == image_bytes
    assert logo.tobytes() == logo_bytes


def test_unknown_anchor_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match="'middle-left'") as error:
        LogoPlacement(anchor="middle-left")
    assert all(anchor in str(error.value) for anchor in ANCHORS)


def test_logo_too_large_for_the_image_says_what_to_lower():
    tall_logo_size = (10, 100)
    with pytest.raises(ValueError, match="lower the placement scale"):
        logo_box((64, 64), tall_logo_size, LogoPlacement(scale=0.5))


def test_safe_zone_contains_a_box_only_when_wholly_inside():
    zone = SafeZone(left=0.1, top=0.14, right=0.9, bottom=0.8)  # on 100 x 200: 10, 28, 90, 160
    assert zone.pixels((100, 200)) == (10, 28, 90, 160)
    assert logo_in_safe_zone((10, 28, 90, 160), (100, 200), zone)
    assert not logo_in_safe_zone((9, 30, 40, 60), (100, 200), zone)
    assert not logo_in_safe_zone((50, 150, 80, 161), (100, 200), zone)


def test_placement_flush_with_the_edge_leaves_a_story_safe_zone():
    story = (108, 192)
    zone = SafeZone.from_box((0.05, 0.14, 0.95, 0.8))
    inside = logo_box(story, (40, 20), LogoPlacement(anchor="top-left", margin=0.1, scale=0.3))
    outside = logo_box(story, (40, 20), LogoPlacement(anchor="bottom-right", margin=0.0, scale=0.3))
    assert not logo_in_safe_zone(inside, story, zone)  # the top 14 % is the app's
    assert not logo_in_safe_zone(outside, story, zone)
    assert logo_in_safe_zone(
        logo_box(story, (40, 20), LogoPlacement(anchor="center", margin=0.0, scale=0.3)),
        story,
        zone,
    )


@pytest.mark.parametrize("edges", [(0.5, 0, 0.4, 1), (0, 0, 1, 1.2), (-0.1, 0, 1, 1)])
def test_safe_zone_that_is_not_a_box_in_the_frame_is_refused(edges):
    # Out of the frame: the fields' ranges; not a box: left < right and top < bottom.
    with pytest.raises(ValueError, match=r"is not a box inside the frame|than or equal to"):
        SafeZone.from_box(edges)
