"""Region detailer geometry: boxes from masks, crop plans, feathered paste-back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postprocess.detail import Detail, detail_crop, mask_boxes, paste_details, plan_detail
from postprocess.faces import detect_faces
from tests.synthetic import draw_face, shapes

WIDTH, HEIGHT = 320, 240


def grown(box, by: int, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` grown by ``by`` pixels on each side, clipped to the image."""
    left, top, right, bottom = box
    return max(left - by, 0), max(top - by, 0), min(right + by, width), min(bottom + by, height)


def inverted_crops(image, plans):
    """What an inpainting model returns, made to differ from the crop at every pixel."""
    return [255 - detail_crop(image, plan) for plan in plans]


def changed_box(before: np.ndarray, after: np.ndarray) -> tuple[int, int, int, int]:
    rows, columns = np.nonzero(np.any(before != after, axis=2))
    return columns.min(), rows.min(), columns.max() + 1, rows.max() + 1


@pytest.mark.parametrize("falloff", ["gaussian", "linear"])
@pytest.mark.parametrize("feather", [0, 5, 8])
def test_paste_back_changes_only_the_region_and_its_feather(falloff, feather):
    image = shapes(256)[:HEIGHT]
    box = (90, 60, 170, 150)
    plan = plan_detail(image, box, Detail(feather=feather, falloff=falloff))
    result = paste_details(image, [plan], inverted_crops(image, [plan]))
    outside = np.ones(image.shape[:2], bool)
    left, top, right, bottom = grown(box, feather, WIDTH, HEIGHT)
    outside[top:bottom, left:right] = False
    assert np.array_equal(result[outside], image[outside])  # bit for bit
    # The feather reaches its full width: pixels change up to its outer edge.
    assert changed_box(image, result) == (left, top, right, bottom)
    # Inside the region the paste is the inpainted crop alone, not a blend.
    inside = result[box[1] : box[3], box[0] : box[2]].astype(np.int16)
    original = image[box[1] : box[3], box[0] : box[2]]
    assert np.abs(inside - (255 - original)).mean() < 8  # resampled there and back
    if feather:  # in the feather, a blend: between the original and the inverted values
        ring = result[box[1] - 1, box[0] : box[2]].astype(np.int16)
        assert np.all(np.abs(ring - image[box[1] - 1, box[0] : box[2]]) > 0)


def test_region_mask_limits_the_paste_to_its_pixels():
    image = shapes(256)[:HEIGHT]
    region = np.zeros(image.shape[:2], bool)
    region[100:120, 40:200] = True  # a bar, of which the box takes the middle
    box = (90, 60, 170, 150)
    plan = plan_detail(image, box, Detail(feather=6), region=region)
    result = paste_details(image, [plan], inverted_crops(image, [plan]))
    assert changed_box(image, result) == (90 - 6, 100 - 6, 170 + 6, 120 + 6)


def test_an_empty_box_list_changes_nothing():
    image = shapes(128)
    plans = [plan_detail(image, box) for box in detect_faces(image)]
    assert plans == []
    result = paste_details(image, plans, [])
    assert result is not image and np.array_equal(result, image)


@pytest.mark.parametrize(
    "center",
    [(46, 120), (274, 120), (160, 60), (160, 184), (46, 60), (274, 184)],
    ids=["left", "right", "top", "bottom", "top-left", "bottom-right"],
)
@pytest.mark.parametrize("size", [(512, 512), (1024, 768), (768, 1024)])
def test_crops_of_faces_at_every_edge_stay_inside_the_image(center, size):
    image = draw_face((WIDTH, HEIGHT), face_height=100, center=center)
    faces = detect_faces(image)
    assert len(faces) == 1
    detail = Detail(size=size, padding=32, feather=8)
    plan = plan_detail(image, faces[0], detail)
    left, top, right, bottom = plan.crop
    assert 0 <= left < right <= WIDTH and 0 <= top < bottom <= HEIGHT
    want = grown(faces[0], 32 + 8, WIDTH, HEIGHT)
    assert left <= want[0] and top <= want[1] and right >= want[2] and bottom >= want[3]
    # The region keeps full weight up to the image's edge: it is cut there, not faded.
    face = faces[0]
    assert np.all(plan.alpha[face[1] - top : face[3] - top, face[0] - left : face[2] - left] == 1)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    image_size=st.tuples(st.integers(16, 400), st.integers(16, 400)),
    corners=st.tuples(*[st.floats(0, 1)] * 4),
    size=st.sampled_from([(512, 512), (1024, 768), (768, 1024), (1024, 576), (64, 64)]),
    padding=st.integers(0, 64),
    padding_fraction=st.sampled_from([0.0, 0.25, 1.0]),
    feather=st.integers(0, 16),
)
def test_every_crop_is_inside_the_image_and_holds_the_padded_region(
    image_size, corners, size, padding, padding_fraction, feather
):
    width, height = image_size
    x0, x1 = sorted(round(value * width) for value in corners[:2])
    y0, y1 = sorted(round(value * height) for value in corners[2:])
    box = (
        min(x0, width - 1),
        min(y0, height - 1),
        max(x1, min(x0, width - 1) + 1),
        max(y1, min(y0, height - 1) + 1),
    )
    detail = Detail(size=size, padding=padding, padding_fraction=padding_fraction, feather=feather)
    plan = plan_detail(np.zeros((height, width, 3), np.uint8), box, detail)
    left, top, right, bottom = plan.crop
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    reach = (
        padding + feather + int(np.ceil(padding_fraction * max(box[2] - box[0], box[3] - box[1])))
    )
    want = grown(box, reach, width, height)
    assert left <= want[0] and top <= want[1] and right >= want[2] and bottom >= want[3]
    assert plan.alpha.shape == (bottom - top, right - left)
    assert plan.mask.shape == (plan.size[1], plan.size[0])
    assert plan.size[0] % 8 == 0 and plan.size[1] % 8 == 0
    # The model's aspect, unless the image's own extent capped a side.
    if right - left < width and bottom - top < height:
        crop_aspect, model_aspect = (right - left) / (bottom - top), size[0] / size[1]
        # Rounding a side up to whole pixels moves the aspect by less than a pixel's worth.
        slack = max(1, model_aspect) / min(right - left, bottom - top)
        assert abs(crop_aspect - model_aspect) <= slack


def test_a_crop_at_the_models_aspect_is_inpainted_at_its_native_size():
    image = shapes(256)
    plan = plan_detail(image, (100, 100, 140, 130), Detail(size=(1024, 768), padding=16))
    assert plan.size == (1024, 768)
    assert detail_crop(image, plan).shape == (768, 1024, 3)
    assert plan.mask.shape == (768, 1024) and set(np.unique(plan.mask)) == {0, 255}


def test_a_crop_capped_by_the_image_keeps_its_aspect_at_the_models_pixel_count():
    image = np.zeros((120, 400, 3), np.uint8)  # too short for a square crop around the box
    plan = plan_detail(image, (150, 10, 250, 110), Detail(size=(512, 512), padding=32))
    assert plan.crop[1] == 0 and plan.crop[3] == 120
    crop_width = plan.crop[2] - plan.crop[0]
    assert crop_width == 100 + 2 * (32 + 8)
    # 180 x 120 at 512 x 512 pixels: 627.1 x 418.0, snapped to 624 x 416.
    assert plan.size == (624, 416)


def test_mask_boxes_finds_each_blob_largest_first():
    mask = np.zeros((60, 80), np.uint8)
    mask[5:10, 5:25] = 255  # 100 px
    mask[30:50, 60:61] = 1  # 20 px
    mask[50, 10] = mask[51, 11] = 1  # diagonal neighbours: one blob of 2 px
    assert mask_boxes(mask) == [(5, 5, 25, 10), (60, 30, 61, 50), (10, 50, 12, 52)]
    assert mask_boxes(mask, min_area=20) == [(5, 5, 25, 10), (60, 30, 61, 50)]
    assert mask_boxes(np.zeros((8, 8), bool)) == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda image: plan_detail(image, (-1, 0, 10, 10)), "inside the 128x128 image"),
        (lambda image: plan_detail(image, (10, 10, 10, 20)), "non-empty"),
        (lambda image: plan_detail(image, (0.5, 0, 10, 10)), "4 whole pixels"),
        (lambda image: plan_detail(image, (0, 0, 10, 10), region=np.ones((5, 5))), "shape"),
        (
            lambda image: plan_detail(image, (0, 0, 10, 10), region=np.zeros((128, 128))),
            r"no pixel inside box \(0, 0, 10, 10\)",
        ),
        (
            lambda image: paste_details(image, [plan_detail(image, (0, 0, 9, 9))], []),
            "1 plans but 0 inpainted crops",
        ),
        (
            lambda image: paste_details(
                image, [plan_detail(image, (0, 0, 9, 9))], [np.zeros((8, 8, 3), np.uint8)]
            ),
            "inpaints at 512x512",
        ),
        (
            lambda image: detail_crop(image[:64], plan_detail(image, (0, 0, 9, 9))),
            "made for 128x128",
        ),
        (lambda image: mask_boxes(np.zeros((4, 4, 3))), "2-D bool or integer"),
        (lambda image: Detail(size=(500, 512)), "multiples of 8"),
        (lambda image: Detail(falloff="box"), "gaussian or linear"),
    ],
)
def test_bad_input_is_refused_with_a_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call(shapes(128))
