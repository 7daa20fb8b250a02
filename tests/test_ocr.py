"""The OCR checks (postprocess.ocr) with the real RapidOCR models on drawn images: our copy
reads back exactly, clipped or wrong copy does not, and stray text outside our boxes is
found while clean scenes and our own boxes raise nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from postprocess import ocr
from postprocess.geometry import Box, overlap
from postprocess.ocr import find_stray_text, read_lines, readback_score
from postprocess.text import overlay_text
from postprocess.text_layout import TextBlock
from tests.conftest import REPO
from tests.synthetic import busy_background, draw_face, shapes

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # fonts-dejavu-core
PALETTE = ["#F26B1D", "#1D3557", "#F1FAEE", "#2A9D8F"]


def _refuse(*args: object) -> None:
    raise OSError("network refused by tests/test_ocr.py")


@pytest.fixture(scope="module", autouse=True)
def offline_models():
    """The models, built once for this file with every connection refused, and kept
    refused while its tests run: had rapidocr to download anything, the build (or a
    read) would fail."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse)
        # Built here, under the refusal, even if another test in this process built them.
        ocr._build_engine.cache_clear()
        ocr._engine()
        yield


def test_the_models_come_from_the_wheel_with_the_network_refused():
    with pytest.raises(OSError, match="network refused"):
        socket.create_connection(("127.0.0.1", 9))
    image, box = _drawn("Kestrel", ImageFont.truetype(str(DEJAVU), 32), (200, 60))
    assert read_lines(image, [box]) == ("Kestrel",)


def test_reading_writes_no_files(tmp_path):
    """The post-process library writes no files; ONNX Runtime would keep a telemetry store
    in the home folder and a log in /tmp unless postprocess.ocr turns it off."""
    script = (
        "import os\n"
        "from PIL import Image\n"
        "from postprocess.ocr import find_stray_text, read_lines\n"
        "image = Image.new('RGB', (320, 80), 'white')\n"
        "read_lines(image, [(10, 10, 300, 40)])\n"
        "find_stray_text(image, [])\n"
        "print(os.getpid())\n"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.rglob("*")) == []
    assert not Path(f"/tmp/mat-debug-{done.stdout.strip()}.log").exists()


# Box heights from which the layout's largest fitting font sets glyphs about 12, 25 and
# 45 px tall.
@pytest.mark.parametrize(
    ("text", "font_path", "box_height"),
    [
        ("Grüße aus Köln", DEJAVU, 20),
        ("Grüße aus Köln", DEJAVU, 40),
        ("Grüße aus Köln", DEJAVU, 100),
        ("Fly further with Kestrel", None, 15),  # Pillow's bundled font: ASCII only
        ("Fly further with Kestrel", None, 40),
        ("Fly further with Kestrel", None, 100),
    ],
)
def test_our_headline_reads_back_exactly_on_a_busy_background(text, font_path, box_height):
    image = Image.fromarray(busy_background((480, 160)))
    placed = overlay_text(
        image, TextBlock(text, font_path=font_path), (20, 20, 460, 20 + box_height), PALETTE
    )
    assert placed.lines == (text,)

    read = read_lines(placed.image, placed.line_boxes)

    assert read == (text,)
    assert readback_score(placed.lines, read) == 1.0


def test_a_headline_and_legal_line_read_back_together_in_order():
    image = Image.fromarray(busy_background((640, 240), seed=3))
    headline = overlay_text(
        image, TextBlock("Grüße aus Köln", font_path=DEJAVU), (20, 20, 620, 80), PALETTE
    )
    legal = overlay_text(
        headline.image,
        TextBlock("Offer valid while stocks last.", role="legal", font_path=DEJAVU),
        (20, 180, 420, 210),
        PALETTE,
    )

    read = read_lines(legal.image, [*headline.line_boxes, *legal.line_boxes])

    assert read == ("Grüße aus Köln", "Offer valid while stocks last.")
    assert readback_score([*headline.lines, *legal.lines], read) == 1.0


def test_a_wrapped_headline_reads_back_line_by_line():
    image = Image.fromarray(busy_background((320, 200), seed=5))
    block = TextBlock("Fly further with Kestrel", font_path=DEJAVU)
    placed = overlay_text(image, block, (20, 20, 300, 180), PALETTE)
    assert len(placed.lines) == 2

    read = read_lines(placed.image, placed.line_boxes)

    assert read == placed.lines
    assert readback_score(placed.lines, read) == 1.0


def test_a_line_box_cut_short_reads_as_clipped_copy():
    image = Image.fromarray(busy_background((480, 160)))
    placed = overlay_text(image, TextBlock("Fly further with Kestrel"), (20, 20, 460, 80), PALETTE)
    left, top, right, bottom = placed.line_boxes[0]

    read = read_lines(placed.image, [(left, top, (left + right) // 2, bottom)])

    assert readback_score(placed.lines, read) < 0.75


def test_text_drawn_partly_outside_the_image_reads_as_clipped_copy():
    font = ImageFont.truetype(str(DEJAVU), 32)
    whole, whole_box = _drawn("Grüße aus Köln", font, (40, 50), size=(480, 120))
    clipped, clipped_box = _drawn("Grüße aus Köln", font, (300, 50), size=(480, 120))
    assert clipped_box[2] > clipped.width  # the line runs past the right edge

    assert readback_score(["Grüße aus Köln"], read_lines(whole, [whole_box])) == 1.0
    assert readback_score(["Grüße aus Köln"], read_lines(clipped, [clipped_box])) < 0.75


def test_a_line_wholly_outside_the_image_reads_as_nothing():
    image = Image.fromarray(busy_background((200, 100)))
    assert read_lines(image, [(250, 20, 400, 50)]) == ("",)
    assert readback_score(["Fly further with Kestrel"], ("",)) == 0.0


def test_wrong_copy_scores_below_one_where_the_right_copy_scores_one():
    # The drawn copy lost its umlaut: a wrong word for the brand, one edit in 14 characters.
    image, box = _drawn("Grüße aus Koln", ImageFont.truetype(str(DEJAVU), 40), (20, 30))
    read = read_lines(image, [box])

    assert readback_score(["Grüße aus Koln"], read) == 1.0
    assert readback_score(["Grüße aus Köln"], read) == pytest.approx(1 - 1 / 12)  # 12 letters


def test_readback_score_ignores_white_space_but_not_case_or_accents():
    lines = ["Fly further", "with Kestrel"]
    assert readback_score(lines, ["Fly further with Kestrel"]) == 1.0
    assert readback_score(lines, ["  Fly   further\twith Kestrel "]) == 1.0
    assert readback_score(["Terms apply"], ["Termsapply"]) == 1.0  # small text's lost space
    assert readback_score(lines, ["Fly further with kestrel"]) < 1.0
    assert readback_score(["Köln"], ["Koln"]) == 0.75
    assert readback_score(["Kestrel"], ["Kestrel, the airline that flies further"]) == 0.0


def test_readback_score_refuses_a_string_for_its_lines():
    with pytest.raises(TypeError, match="sequence of lines, not the string 'Kestrel'"):
        readback_score("Kestrel", ["Kestrel"])


def test_an_empty_line_box_is_refused_naming_it():
    image = Image.fromarray(busy_background((200, 100)))
    with pytest.raises(ValueError, match=r"line box \(40, 20, 40, 50\) is empty"):
        read_lines(image, [(40, 20, 40, 50)])


def test_stray_text_outside_our_boxes_is_found_where_it_was_drawn():
    base = _scene(seed=1)
    image, drawn = _drawn("WATERMARK", ImageFont.truetype(str(DEJAVU), 40), (560, 700), base=base)
    our_boxes = [(40, 40, 984, 240), (40, 900, 700, 980)]

    found = find_stray_text(image, our_boxes)

    assert [stray.text for stray in found] == ["WATERMARK"]
    assert overlap(found[0].box, drawn)
    assert found[0].score >= ocr.MIN_STRAY_SCORE


def test_a_tilted_watermark_is_read_upright():
    layer = Image.new("RGBA", (420, 80), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text(
        (10, 10), "Stock Photo", font=ImageFont.truetype(str(DEJAVU), 48), fill=(255, 255, 255, 170)
    )
    image = Image.fromarray(_scene(seed=2)).convert("RGBA")
    image.alpha_composite(layer.rotate(30, expand=True), (300, 300))

    found = find_stray_text(image.convert("RGB"), [])

    assert [stray.text for stray in found] == ["Stock Photo"]


def test_the_same_text_inside_an_allowed_box_is_ours():
    base = _scene(seed=1)
    image, drawn = _drawn("WATERMARK", ImageFont.truetype(str(DEJAVU), 40), (560, 700), base=base)
    left, top, right, bottom = drawn

    assert find_stray_text(image, [(left - 10, top - 10, right + 10, bottom + 10)]) == ()


@pytest.mark.parametrize(
    "scene",
    ["noise 64", "noise 1024", "shapes 128", "shapes 1024", "face 256", "face in a scene 1024"],
)
def test_clean_scenes_hold_no_stray_text(scene):
    images = {
        "noise 64": lambda: _noise(64),
        "noise 1024": lambda: _noise(1024),
        "shapes 128": lambda: shapes(128, seed=3),
        "shapes 1024": lambda: _scene(seed=4),
        "face 256": lambda: draw_face((256, 256), 120),
        "face in a scene 1024": _face_scene,
    }
    assert find_stray_text(Image.fromarray(images[scene]()), []) == ()


def _drawn(
    text: str,
    font: ImageFont.FreeTypeFont,
    at: tuple[int, int],
    size: tuple[int, int] = (640, 120),
    base: np.ndarray | None = None,
) -> tuple[Image.Image, Box]:
    """``text`` in white with a dark outline at ``at`` on a busy background (or ``base``),
    and the box its glyphs cover (which may run past the image)."""
    image = Image.fromarray(busy_background(size) if base is None else base)
    draw = ImageDraw.Draw(image)
    draw.text(at, text, font=font, fill="white", stroke_width=2, stroke_fill="black")
    left, top, right, bottom = draw.textbbox(at, text, font=font, stroke_width=2)
    return image, (int(left), int(top), int(right), int(bottom))


def _scene(seed: int) -> np.ndarray:
    """Flat shapes on a gradient at 1024²: the edges and circles a detector might take for
    letters."""
    return cv2.resize(shapes(256, seed=seed), (1024, 1024), interpolation=cv2.INTER_CUBIC)


def _face_scene() -> np.ndarray:
    scene = _scene(seed=5)
    face = cv2.resize(draw_face((256, 256), 104), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    scene[190:830, 280:740] = face[190:830, 280:740]
    return scene


def _noise(side: int) -> np.ndarray:
    return np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
