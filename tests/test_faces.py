import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

from postprocess.faces import FRONTAL_FACE_CASCADE, FaceDetection, detect_faces, load_cascade
from tests.synthetic import draw_face, shapes, with_noise


def test_the_bundled_cascade_is_opencvs_frontal_face_default():
    cascade = load_cascade()
    assert FRONTAL_FACE_CASCADE.name == "haarcascade_frontalface_default.xml"
    assert cascade.window == (24, 24)
    assert len(cascade.stages) == 25
    assert sum(len(stage.leaves) for stage in cascade.stages) == 2913


@pytest.mark.parametrize(
    ("size", "face_height", "center"),
    [((256, 256), 60, (80, 170)), ((320, 240), 110, (200, 120)), ((200, 300), 160, (100, 150))],
)
def test_a_drawn_face_is_found_where_it_is(size, face_height, center):
    faces = detect_faces(draw_face(size, face_height, center))

    assert len(faces) == 1
    left, top, right, bottom = faces[0]
    assert left < center[0] < right and top < center[1] < bottom
    assert 0.8 * face_height < bottom - top < 1.6 * face_height


def test_two_faces_are_two_boxes_largest_first():
    image = np.concatenate([draw_face((256, 256), 70), draw_face((256, 256), 140)], axis=1)
    faces = detect_faces(image)
    assert len(faces) == 2
    assert faces[0][0] > 256  # the larger face is on the right
    assert faces[0][2] - faces[0][0] > faces[1][2] - faces[1][0]


def test_large_images_are_searched_at_the_detection_size_and_boxes_scaled_back():
    small = draw_face((240, 240), 100)
    large = np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)  # 960 x 960
    (box,) = detect_faces(large)
    (small_box,) = detect_faces(small, FaceDetection(detect_side=240))
    assert box == pytest.approx([4 * v for v in small_box], abs=8)


# Boxes (x, y, width, height) from OpenCV's own CascadeClassifier.detectMultiScale(gray,
# 1.1, 3) with this cascade (opencv-contrib-python-headless 5.0.0.93), false positives
# on noisy shapes included: the numpy evaluator must find the same boxes.
OPENCV_BOXES = [
    (lambda: with_noise(shapes(size=256, seed=1), sigma=20, seed=1), [(166, 33, 83, 83)]),
    (lambda: with_noise(shapes(size=256, seed=2), sigma=20, seed=2), [(23, 82, 70, 70)]),
    (lambda: draw_face((256, 256), 60, (80, 170)), [(48, 138, 65, 65)]),
    (lambda: draw_face((240, 200), 110, (120, 100)), [(57, 38, 125, 125)]),
    (
        lambda: np.concatenate([draw_face((200, 200), 70), draw_face((200, 200), 140)], axis=1),
        [(61, 62, 77, 77), (221, 22, 154, 154)],
    ),
]


@pytest.mark.parametrize(("make_image", "expected"), OPENCV_BOXES)
def test_boxes_match_opencvs_cascade_classifier(make_image, expected):
    found = detect_faces(make_image())
    assert sorted((x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in found) == expected


@pytest.mark.parametrize("seed", [0, 3])
def test_no_face_in_shapes_noise_or_flat_images(seed):
    assert detect_faces(with_noise(shapes(size=256, seed=seed), sigma=20, seed=seed)) == []
    assert detect_faces(np.full((128, 128, 3), 128, np.uint8)) == []
    assert detect_faces(np.zeros((16, 16, 3), np.uint8)) == []  # smaller than the window


def test_detection_settings_are_checked():
    with pytest.raises(ValueError, match=r"scale_factor 1\.0 must be above 1"):
        FaceDetection(scale_factor=1.0)
    with pytest.raises(ValueError, match="detect_side 10"):
        FaceDetection(detect_side=10)
