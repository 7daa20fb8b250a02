import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from PIL import Image

from postprocess.consistency import consistency
from postprocess.faces import count_faces
from postprocess.metrics import (
    ciede2000,
    logo_score,
    palette_adherence,
    srgb_to_lab,
)
from postprocess.overlay import logo_box, overlay_logo
from postprocess.parameters import LogoPlacement, SafeZone
from tests.synthetic import draw_face, shapes, with_noise

KESTREL_PALETTE = ["#F26B1D", "#1D3557", "#F1FAEE", "#2A9D8F"]

# Sharma, Wu & Dalal (2005), Table 1: the 34 CIEDE2000 test pairs, (L, a, b) x 2 -> ΔE00.
SHARMA_2005 = [
    ((50.0000, 2.6772, -79.7751), (50.0000, 0.0000, -82.7485), 2.0425),
    ((50.0000, 3.1571, -77.2803), (50.0000, 0.0000, -82.7485), 2.8615),
    ((50.0000, 2.8361, -74.0200), (50.0000, 0.0000, -82.7485), 3.4412),
    ((50.0000, -1.3802, -84.2814), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, -1.1848, -84.8006), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, -0.9009, -85.5211), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, 0.0000, 0.0000), (50.0000, -1.0000, 2.0000), 2.3669),
    ((50.0000, -1.0000, 2.0000), (50.0000, 0.0000, 0.0000), 2.3669),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0009), 7.1792),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0010), 7.1792),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0011), 7.2195),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0012), 7.2195),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0009, -2.4900), 4.8045),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0010, -2.4900), 4.8045),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0011, -2.4900), 4.7461),
    ((50.0000, 2.5000, 0.0000), (50.0000, 0.0000, -2.5000), 4.3065),
    ((50.0000, 2.5000, 0.0000), (73.0000, 25.0000, -18.0000), 27.1492),
    ((50.0000, 2.5000, 0.0000), (61.0000, -5.0000, 29.0000), 22.8977),
    ((50.0000, 2.5000, 0.0000), (56.0000, -27.0000, -3.0000), 31.9030),
    ((50.0000, 2.5000, 0.0000), (58.0000, 24.0000, 15.0000), 19.4535),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.1736, 0.5854), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.2972, 0.0000), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 1.8634, 0.5757), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.2592, 0.3350), 1.0000),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((63.0109, -31.0961, -5.8663), (62.8187, -29.7946, -4.0864), 1.2630),
    ((61.2901, 3.7196, -5.3901), (61.4292, 2.2480, -4.9620), 1.8731),
    ((35.0831, -44.1164, 3.7933), (35.0232, -40.0716, 1.5901), 1.8645),
    ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
    ((36.4612, 47.8580, 18.3852), (36.2715, 50.5065, 21.2231), 1.4146),
    ((90.8027, -2.0831, 1.4410), (91.1528, -1.6435, 0.0447), 1.4441),
    ((90.9257, -0.5406, -0.9208), (88.6381, -0.8985, -0.7239), 1.5381),
    ((6.7747, -0.2908, -2.4247), (5.8714, -0.0985, -2.2286), 0.6377),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


def test_ciede2000_matches_sharmas_34_test_pairs_vectorised_and_symmetric():
    first = np.array([pair[0] for pair in SHARMA_2005])
    second = np.array([pair[1] for pair in SHARMA_2005])
    expected = np.array([pair[2] for pair in SHARMA_2005])

    np.testing.assert_allclose(ciede2000(first, second), expected, atol=5e-5)
    np.testing.assert_allclose(ciede2000(second, first), expected, atol=5e-5)
    assert ciede2000(first[0], second[0]) == pytest.approx(expected[0], abs=5e-5)


def test_srgb_to_lab_gives_the_textbook_values():
    lab = srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]]))
    np.testing.assert_allclose(lab, [[100, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20]], atol=0.1)


def test_palette_adherence_is_the_share_of_pixels_near_a_brand_colour():
    on_brand = np.zeros((40, 40, 3), np.uint8)
    on_brand[:20] = (0xF2, 0x6B, 0x1D)  # exactly the brand orange
    on_brand[20:] = (0x2B, 0x9E, 0x90)  # one step from the brand teal
    off_brand = on_brand.copy()
    off_brand[:, 30:] = (200, 0, 200)  # a quarter magenta

    assert palette_adherence(on_brand, KESTREL_PALETTE) == 1.0
    assert palette_adherence(off_brand, KESTREL_PALETTE) == pytest.approx(0.75)
    assert palette_adherence(np.full((8, 8, 3), (200, 0, 200), np.uint8), KESTREL_PALETTE) == 0.0
    with pytest.raises(ValueError, match="no palette colours"):
        palette_adherence(on_brand, [])


def kestrel_like_logo():
    """An orange badge with a navy square and a light bar, on a transparent canvas."""
    pixels = np.zeros((60, 120, 4), np.uint8)
    pixels[5:55, 5:115] = (0xF2, 0x6B, 0x1D, 255)
    pixels[15:45, 20:50] = (0x1D, 0x35, 0x57, 255)
    pixels[20:40, 70:105] = (0xF1, 0xFA, 0xEE, 255)
    return Image.fromarray(pixels, "RGBA")


@pytest.fixture
def scene():
    return with_noise(shapes(size=320, seed=8), sigma=6)


def test_logo_in_its_place_scores_high_and_in_place(scene):
    logo = kestrel_like_logo()
    placement = LogoPlacement(anchor="bottom-right", margin=0.05, scale=0.25)
    expected = logo_box((320, 320), logo.size, placement)
    with_logo = np.asarray(overlay_logo(Image.fromarray(scene), logo, placement))

    score = logo_score(with_logo, logo, expected)

    assert score.match > 0.9
    assert score.in_place
    assert score.found_box == pytest.approx(expected, abs=3)
    assert score.in_safe_zone((320, 320), SafeZone.from_box((0.02, 0.02, 0.98, 0.98)))
    assert not score.in_safe_zone((320, 320), SafeZone.from_box((0.1, 0.1, 0.9, 0.9)))


def test_missing_or_misplaced_logo_is_told_apart(scene):
    logo = kestrel_like_logo()
    placement = LogoPlacement(anchor="bottom-right", margin=0.05, scale=0.25)
    expected = logo_box((320, 320), logo.size, placement)
    elsewhere = np.asarray(
        overlay_logo(
            Image.fromarray(scene), logo, LogoPlacement(anchor="top-left", margin=0.05, scale=0.25)
        )
    )

    missing = logo_score(scene, logo, expected)
    misplaced = logo_score(elsewhere, logo, expected)

    assert missing.match < 0.6
    assert misplaced.match > 0.9 and not misplaced.in_place


def test_expected_box_outside_the_image_is_refused(scene):
    with pytest.raises(ValueError, match="logo_box"):
        logo_score(scene, kestrel_like_logo(), (300, 300, 400, 350))


def test_consistency_flags_the_variant_unlike_the_rest():
    rng = np.random.default_rng(9)
    campaign_look = rng.normal(size=16)
    embeddings = campaign_look + 0.1 * rng.normal(size=(12, 16))
    embeddings[5] = rng.normal(size=16)  # one off-brand image

    result = consistency(embeddings)

    assert result.cosines.shape == (12,)
    assert np.flatnonzero(result.outliers).tolist() == [5]
    assert result.z_scores[5] < -2
    assert np.all(result.cosines[result.cosines != result.cosines[5]] > 0.9)


def test_consistency_flags_nothing_with_too_few_or_identical_images():
    assert not consistency(np.ones((2, 4)) + np.eye(2, 4)).outliers.any()
    assert not consistency(np.ones((5, 4))).outliers.any()
    with pytest.raises(ValueError, match="one row per image"):
        consistency(np.ones(4))


def test_faces_are_counted_for_consent_review():
    assert count_faces(draw_face((256, 256), 120)) == 1
    assert count_faces(shapes(size=256)) == 0
