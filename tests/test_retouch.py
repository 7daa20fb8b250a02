import os

os.environ["HF_HUB_OFFLINE"] = "1"

import cv2
import numpy as np
import pytest

from postprocess.faces import detect_faces
from postprocess.metrics import ciede2000, palette_adherence, srgb_to_lab
from postprocess.parameters import (
    BrandGrade,
    Denoise,
    ExposureNormalisation,
    Sharpen,
    SkinSmoothing,
    WhiteBalance,
)
from postprocess.retouch import (
    BrandReference,
    apply_retouch,
    denoise,
    grade_to_brand,
    normalise_exposure,
    sharpen,
    smooth_skin,
    white_balance,
)
from tests.synthetic import draw_face, laplacian_variance, shapes, with_noise

KESTREL_PALETTE = ["#F26B1D", "#1D3557", "#F1FAEE", "#2A9D8F"]


def mean_luma(image):
    return float((image.reshape(-1, 3) @ [0.2126, 0.7152, 0.0722]).mean()) / 255


def swatches(palette, size=32):
    """One solid image per hex colour: brand references made of the palette itself."""
    return [
        np.full((size, size, 3), [int(colour[i : i + 2], 16) for i in (1, 3, 5)], np.uint8)
        for colour in palette
    ]


def test_white_balance_neutralises_a_colour_cast_in_proportion_to_strength():
    cast = np.clip(shapes(seed=1) * np.array([1.25, 1.0, 0.7]), 0, 255).astype(np.uint8)

    def spread(image):
        means = image.reshape(-1, 3).mean(axis=0)
        return means.max() - means.min()

    half = white_balance(cast, WhiteBalance(strength=0.5))
    full = white_balance(cast, WhiteBalance(strength=1.0))

    assert spread(cast) > 40
    assert spread(full) < 3
    assert spread(full) < spread(half) < spread(cast)
    np.testing.assert_array_equal(white_balance(cast, WhiteBalance(strength=0.0)), cast)


@pytest.mark.parametrize("gain", [0.35, 1.6])
def test_exposure_moves_mean_luminance_to_the_target_without_clipping(gain):
    image = np.clip(shapes(seed=2) * gain, 0, 255).astype(np.uint8)
    image[0, 0], image[0, 1] = 0, 255

    result = normalise_exposure(image, ExposureNormalisation(target=0.45))

    assert abs(mean_luma(image) - 0.45) > 0.1
    assert mean_luma(result) == pytest.approx(0.45, abs=0.03)
    assert result[0, 0].tolist() == [0, 0, 0]  # a gamma curve keeps black and white
    assert result[0, 1].tolist() == [255, 255, 255]


def test_grade_moves_the_mean_colour_toward_the_brand_palette():
    bluish = np.clip(shapes(seed=3) * np.array([0.5, 0.8, 1.3]), 0, 255).astype(np.uint8)
    references = swatches(KESTREL_PALETTE)
    brand = BrandReference.from_images(references)
    brand_mean = srgb_to_lab(np.concatenate(references).reshape(-1, 3)).mean(axis=0)

    def distance_to_brand(image):
        return float(ciede2000(srgb_to_lab(image.reshape(-1, 3)).mean(axis=0), brand_mean))

    graded = {s: grade_to_brand(bluish, brand, BrandGrade(strength=s)) for s in (0, 0.5, 1)}

    np.testing.assert_array_equal(graded[0], bluish)
    assert distance_to_brand(graded[1]) < distance_to_brand(graded[0.5])
    assert distance_to_brand(graded[0.5]) < distance_to_brand(graded[0]) - 3
    assert palette_adherence(graded[1], KESTREL_PALETTE) > palette_adherence(
        bluish, KESTREL_PALETTE
    )


def test_brand_reference_needs_at_least_one_image():
    with pytest.raises(ValueError, match="no brand reference images"):
        BrandReference.from_images([])


@pytest.mark.parametrize(
    "params", [Denoise(method="bilateral", strength=10, radius=3), Denoise(method="nlmeans")]
)
def test_denoise_brings_a_noisy_image_closer_to_the_clean_one(params):
    clean = shapes(size=96, seed=4)
    noisy = with_noise(clean, sigma=12)

    def error(image):
        return float(np.mean((image.astype(float) - clean) ** 2))

    assert error(denoise(noisy, params)) < 0.6 * error(noisy)


def test_sharpening_raises_the_laplacian_variance():
    soft = cv2.GaussianBlur(shapes(seed=5), (0, 0), 1.5)
    sharpened = sharpen(soft, Sharpen(amount=1.0, radius=1.5, threshold=2))
    assert laplacian_variance(sharpened) > 1.5 * laplacian_variance(soft)


def test_sharpening_threshold_leaves_faint_texture_alone():
    faint = np.full((64, 64, 3), 128, np.uint8) + np.indices((64, 64)).sum(0)[..., None] % 2
    np.testing.assert_array_equal(sharpen(faint.astype(np.uint8), Sharpen(threshold=3)), faint)


def test_skin_smoothing_smooths_inside_the_detected_face_only():
    image = with_noise(draw_face((256, 256), face_height=130), sigma=10, seed=6)
    faces = detect_faces(image)
    assert len(faces) == 1
    left, top, right, bottom = faces[0]
    inner = np.s_[top + 30 : bottom - 30, left + 30 : right - 30]

    result = smooth_skin(image, SkinSmoothing(strength=1.0, feather=0.1))

    assert laplacian_variance(result[inner]) < 0.5 * laplacian_variance(image[inner])
    outside = np.ones(image.shape[:2], bool)
    outside[max(top - 20, 0) : bottom + 20, max(left - 20, 0) : right + 20] = False
    np.testing.assert_array_equal(result[outside], image[outside])
    np.testing.assert_array_equal(smooth_skin(image, SkinSmoothing(), faces=[]), image)


def test_retouch_applies_steps_in_order_deterministically_and_leaves_the_input_alone():
    image = with_noise(shapes(seed=7), sigma=8)
    before = image.copy()
    brand = BrandReference.from_images(swatches(KESTREL_PALETTE))
    steps = [
        WhiteBalance(),
        ExposureNormalisation(),
        BrandGrade(strength=0.3),
        Denoise(),
        Sharpen(),
        SkinSmoothing(),
    ]

    first = apply_retouch(image, steps, references=brand)
    second = apply_retouch(image, steps, references=brand)
    swapped = apply_retouch(image, [Sharpen(), Denoise()])

    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(image, before)
    assert not np.array_equal(swapped, apply_retouch(image, [Denoise(), Sharpen()]))
    assert apply_retouch(image, []) is not image


def test_retouch_says_what_is_missing_or_unknown():
    image = shapes(size=32)
    with pytest.raises(ValueError, match=r"needs the brand references.*BrandReference"):
        apply_retouch(image, [BrandGrade()])
    with pytest.raises(ValueError, match=r"'blur'.*WhiteBalance"):
        apply_retouch(image, ["blur"])
    with pytest.raises(ValueError, match=r"dtype float64 .*RGB uint8"):
        white_balance(image.astype(float), WhiteBalance())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: WhiteBalance(strength=1.5), r"strength\n.* less than or equal to 1 .*=1\.5"),
        (
            lambda: ExposureNormalisation(target=0.0),
            r"target\n.* greater than or equal to 0\.05 .*=0\.0",
        ),
        (lambda: Denoise(method="median"), r"method\n.*'bilateral' or 'nlmeans' .*='median'"),
        (lambda: Sharpen(radius=0), r"radius\n.* greater than or equal to 0\.3 .*=0,"),
        (lambda: SkinSmoothing(feather=0), r"feather\n.* greater than 0 .*=0,"),
    ],
)
def test_bad_parameters_echo_the_value_and_the_range(make, message):
    with pytest.raises(ValueError, match=message):
        make()
