"""Reading text back from a finished image: did our copy come out exactly, and is there
text we did not put there?

Two checks for the brand guidelines, both with RapidOCR's PP-OCRv6 models on ONNX Runtime
(the detector, the recogniser and its character table ship inside the pinned rapidocr
wheel, so nothing is downloaded):

* ``read_lines`` recognises the lines we drew, at the boxes we drew them in (no detection:
  the boxes are known), and ``readback_score`` compares them with the copy that was
  meant: 1.0 only for the exact words, case and accents included. Clipped or wrong
  copy scores below 1.
* ``find_stray_text`` detects text anywhere else in an image — a model's fake lettering,
  a watermark in the base render — and keeps only what a reader could read.

The recogniser pads every crop in one batch to the widest, so a line's reading can depend
on what else is in its batch: each call reads one image's lines together and never mixes
images, so a score depends only on that image. The models are built once per process
(about 0.6 s with the imports) on first use and shared between threads.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from postprocess.geometry import Box, grown

if TYPE_CHECKING:
    from rapidocr.ch_ppocr_det import TextDetector
    from rapidocr.ch_ppocr_rec import TextRecognizer

# Detection runs on a copy whose long side is at most this, never enlarged (RapidOCR's
# default enlarges the short side to 736: 190 ms on 1024²). Measured on 1024² scenes with
# white outlined words drawn in (bench/postprocess_bench.py times the chosen side): 320
# costs ~17 ms but misses a third of 24-40 px words on flat shapes; 480 ~31 ms
# misses 12-16 px ones and some 24 px; 640 ~70 ms found 94 % of the 12 px words and every
# one from 16 px (32 words a size, on flat shapes and on photo-like scenes).
# Recall does not grow steadily with the side (512 did worse than 480), so only measured
# sides are safe choices.
DETECT_SIDE = 640
# Margin around a line box before recognition, as a share of the line's height (at least
# 1 px): the recogniser wants a little ground around the glyphs, but more brings in the
# busy picture around a tight scrim. Of 408 synthetic lines (busy, noise and shape
# backgrounds, 11-67 px text) margins of 0 to 0.15 misread 11-12, 0.2 20, 0.4 44.
LINE_MARGIN = 0.1
# Stray text counts only when legible: the recogniser is at least this sure of it and it
# holds at least this many letters or digits. On 31 clean scenes (noise, shapes, faces,
# photo-like, the brand kit's images) the detector found circles and corners read as one
# character ("8", "O") with confidence up to 0.96 (2, "88", at a 480 side), so confidence
# alone cannot tell them apart; each of 151 drawn words read exactly did so at 0.93 or
# more, and 0.8 leaves them a margin.
MIN_STRAY_SCORE = 0.8
MIN_STRAY_CHARACTERS = 3
# A detection is our own text, not stray, when at least this share of its area lies in one
# allowed box. The detector grows its boxes past the glyphs: our own lines' detections lay
# 55-80 % inside their glyph box and 98-99 % inside their layout box, so a strict "inside"
# would flag our own headline; a stray word counts unless half of it is in our box.
ALLOWED_SHARE = 0.5


@dataclass(frozen=True)
class StrayText:
    text: str
    box: Box  # the detected text's bounds in the image (left, top, right, bottom)
    score: float  # the recogniser's confidence, 0..1


@dataclass(frozen=True, eq=False)
class _Engine:
    recogniser: TextRecognizer
    detector: TextDetector
    input_height: int  # pixels: every crop is scaled to this height before recognition


def read_lines(image: Image.Image, line_boxes: Sequence[Box]) -> tuple[str, ...]:
    """The text in each line box of ``image``, in order. A box is one line's glyph bounds
    (left, top, right, bottom); the part of it outside the image is not there to read (a
    line wholly outside reads as ""), which is how clipped text shows."""
    for box in line_boxes:
        _require_box(box, "line box")
    engine = _engine()
    visible = [_visible(box, image.size) for box in line_boxes]
    crops = [_line_crop(image, box, engine.input_height) for box in visible if box]
    texts = iter(_recognise(engine, crops)[0])
    return tuple(next(texts) if box else "" for box in visible)


def readback_score(expected: Sequence[str], read: Sequence[str]) -> float:
    """1 − the edit distance between the expected and the read text over the expected
    length: 1.0 for the exact copy, 0.0 at worst. Case and accents count: "Koln" for "Köln"
    is wrong copy. White space does not: the recogniser drops the narrow space of small
    text ("Termsapply" from a 10 px legal line), and the layout only breaks lines between
    the copy's own words, so a space is never what clipping, a missing glyph or wrong copy
    changes."""
    for name, lines in (("expected", expected), ("read", read)):
        if isinstance(lines, str):
            raise TypeError(f"{name} must be a sequence of lines, not the string {lines!r}")
    meant, seen = _joined(expected), _joined(read)
    return max(0.0, 1 - _edit_distance(meant, seen) / max(1, len(meant)))


def find_stray_text(image: Image.Image, allowed: Sequence[Box]) -> tuple[StrayText, ...]:
    """Legible text in ``image`` outside the ``allowed`` boxes (where our own text goes),
    top to bottom: at least MIN_STRAY_CHARACTERS letters or digits read with confidence
    MIN_STRAY_SCORE or more."""
    for box in allowed:
        _require_box(box, "allowed box")
    engine = _engine()
    bgr = _bgr(image.convert("RGB"))
    detected = engine.detector(bgr)
    if detected.boxes is None:
        return ()
    outside = [
        (quad, box)
        for quad, box in ((quad, _bounds(quad, image.size)) for quad in detected.boxes)
        if box and not any(_share_inside(box, other) >= ALLOWED_SHARE for other in allowed)
    ]
    texts, scores = _recognise(
        engine, [_text_crop(bgr, quad, engine.input_height) for quad, _ in outside]
    )
    return tuple(
        StrayText(text, box, score)
        for text, (_, box), score in zip(texts, outside, scores, strict=True)
        if score >= MIN_STRAY_SCORE and sum(c.isalnum() for c in text) >= MIN_STRAY_CHARACTERS
    )


def load_models() -> None:
    """Build the detector and recogniser now (about 0.5 s), not on the first image."""
    _engine()


_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    with _ENGINE_LOCK:  # two threads' first calls must not build it twice
        return _build_engine()


@functools.cache
def _build_engine() -> _Engine:
    # ONNX Runtime 1.30's Linux wheel, once imported, keeps a telemetry store (a SQLite
    # database in ~/.cache/Microsoft/DeveloperTools/, a /tmp/mat-debug-PID.log a process);
    # this library writes no files, and only this variable, read at import, stops it.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    # Imported here: rapidocr and ONNX Runtime take ~0.5 s to import, and only the OCR
    # checks need them.
    from rapidocr import RapidOCR

    ocr = RapidOCR(
        params={
            "Global.log_level": "error",
            "Det.limit_type": "max",  # shrink large images to DETECT_SIDE, never enlarge
            "Det.limit_side_len": DETECT_SIDE,
        }
    )
    # RapidOCR builds its stages on first use; these are its own builders. The stages are
    # called directly, since RapidOCR's __call__ keeps per-call options on the shared
    # engine, which threads would race on.
    _, input_height, _ = ocr.cfg.Rec.rec_img_shape
    return _Engine(ocr._load_rec_model(), ocr._load_det_model(), int(input_height))


def _recognise(engine: _Engine, crops: list[np.ndarray]) -> tuple[list[str], list[float]]:
    """One image's crops in one call (see the module docstring)."""
    if not crops:  # the recogniser fails on an empty batch
        return [], []
    # Imported here with the engine (see _build_engine).
    from rapidocr.ch_ppocr_rec import TextRecInput

    result = engine.recogniser(TextRecInput(img=crops))
    if result.txts is None:  # its type allows it; its recogniser returns one text a crop
        raise RuntimeError(f"rapidocr's recogniser returned no texts for {len(crops)} crops")
    return [str(text) for text in result.txts], [float(score) for score in result.scores]


def _line_crop(image: Image.Image, box: Box, height: int) -> np.ndarray:
    """``box`` with LINE_MARGIN around it, as the recogniser takes it (see _to_height)."""
    pad = max(1, round(LINE_MARGIN * (box[3] - box[1])))
    return _to_height(_bgr(image.crop(grown(box, pad, image.size)).convert("RGB")), height)


def _text_crop(bgr: np.ndarray, quad: np.ndarray, height: int) -> np.ndarray:
    """A detected quadrilateral of ``bgr``, turned upright (RapidOCR's own rectification:
    a tilted watermark reads as well as a level one), as the recogniser takes it."""
    # Imported here with the engine (see _build_engine).
    from rapidocr.utils.process_img import get_rotate_crop_image

    return _to_height(get_rotate_crop_image(bgr, quad.astype(np.float32)), height)


def _to_height(bgr: np.ndarray, height: int) -> np.ndarray:
    """``bgr`` scaled to ``height`` pixels, aspect kept. Bilinear, not Lanczos: Lanczos
    rings around small glyphs and misread 41 of 408 synthetic lines, bilinear 12."""
    crop = Image.fromarray(bgr)  # Pillow scales the channels alike, whatever their order
    width = max(1, round(crop.width * height / crop.height))
    return np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR))


def _bgr(image: Image.Image) -> np.ndarray:
    """An RGB image's pixels in the recogniser's order (BGR, as OpenCV reads files)."""
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


def _bounds(quad: np.ndarray, size: tuple[int, int]) -> Box | None:
    """The pixel box around a detected quadrilateral ((4, 2) x, y corners), in the image."""
    xs, ys = quad[:, 0], quad[:, 1]
    box = (
        int(np.floor(xs.min())),
        int(np.floor(ys.min())),
        int(np.ceil(xs.max())),
        int(np.ceil(ys.max())),
    )
    return _visible(box, size)


def _visible(box: Box, size: tuple[int, int]) -> Box | None:
    """The part of ``box`` inside a frame of ``size``; None when nothing is."""
    left, top, right, bottom = grown(box, 0, size)
    return (left, top, right, bottom) if left < right and top < bottom else None


def _share_inside(box: Box, other: Box) -> float:
    """The share of ``box``'s area that lies in ``other``."""
    width = min(box[2], other[2]) - max(box[0], other[0])
    height = min(box[3], other[3]) - max(box[1], other[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return max(0, width) * max(0, height) / area


def _require_box(box: Box, what: str) -> None:
    left, top, right, bottom = box
    if not (left < right and top < bottom):
        raise ValueError(
            f"{what} {box} is empty; pass (left, top, right, bottom) with left < right "
            "and top < bottom"
        )


def _joined(lines: Sequence[str]) -> str:
    return "".join("".join(lines).split())


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]
