"""Frontal face detection with OpenCV's Haar cascade, evaluated in numpy.

opencv-python-headless 5 no longer ships ``CascadeClassifier`` nor the cascade files
(both moved to opencv-contrib), so this module reads the cascade OpenCV 4 shipped
(``data/haarcascade_frontalface_default.xml``, Intel licence in its header) and runs it
the way ``CascadeClassifier.detectMultiScale`` does: the image is shrunk by
``scale_factor`` steps, every window is normalised by its standard deviation, stages
reject windows early, and overlapping hits are grouped (``min_neighbors``).

Detection runs on a copy whose short side is at most ``detect_side`` pixels, so its cost
does not grow with the image; faces smaller than the cascade's 24 px window at that size
(about 9 % of the short side at the default 256) are not found. About 50 ms per image
on one core, up to 130 ms on noise-like images, where many windows pass the early stages.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from postprocess.geometry import Box
from postprocess.imaging import require_rgb

FRONTAL_FACE_CASCADE = Path(__file__).parent / "data" / "haarcascade_frontalface_default.xml"
_GATHER_BELOW = 0.25  # share of windows alive below which stages gather window by window
_DENSE_MIN_WINDOWS = 4096  # levels with fewer windows gather from the first stage
_MAX_RECTS_PER_FEATURE = 3


@dataclass(frozen=True, eq=False)
class HaarStage:
    threshold: float
    # A feature is a weighted sum of integral-table entries at these offsets from the window
    # origin: the corners of its rectangles (3 at most), shared ones once, weights summed;
    # a stage's shorter features are padded with weight-0 corners.
    corner_offsets: np.ndarray  # (weak classifiers, corners, 2): dx, dy
    integer_weights: np.ndarray  # (weak classifiers, corners); Haar weights are whole numbers
    node_thresholds: np.ndarray  # (weak classifiers,)
    leaves: np.ndarray  # (weak classifiers, 2): value below the threshold, value at or above


@dataclass(frozen=True, eq=False)
class HaarCascade:
    window: tuple[int, int]  # (width, height) of the window the cascade was trained on
    stages: tuple[HaarStage, ...]


@dataclass(frozen=True)
class FaceDetection:
    scale_factor: float = 1.1  # each pyramid level is this much smaller
    min_neighbors: int = 3  # a face needs more than this many overlapping hits
    detect_side: int = 256  # detect on a copy whose short side is at most this (pixels)

    def __post_init__(self) -> None:
        if not self.scale_factor > 1:
            raise ValueError(f"scale_factor {self.scale_factor!r} must be above 1, e.g. 1.1")
        if self.min_neighbors < 0:
            raise ValueError(f"min_neighbors {self.min_neighbors!r} must be 0 or more, e.g. 3")
        if self.detect_side < 24:
            raise ValueError(f"detect_side {self.detect_side!r} must be at least 24 pixels")


@functools.cache
def load_cascade(path: Path = FRONTAL_FACE_CASCADE) -> HaarCascade:
    """Read an OpenCV (new-format) HAAR cascade of stumps with upright features."""
    cascade = ElementTree.parse(path).getroot().find("cascade")
    if cascade is None or cascade.findtext("featureType", "").strip() != "HAAR":
        raise ValueError(f"{path} is not an OpenCV HAAR cascade; pass a haarcascade_*.xml file")
    features = [
        [
            [float(value) for value in _text(rect, path).split()]
            for rect in _child(feature, "rects", path)
        ]
        for feature in _child(cascade, "features", path)
    ]
    if any(
        feature.findtext("tilted", "0").strip() != "0"
        for feature in _child(cascade, "features", path)
    ):
        raise ValueError(f"{path} uses tilted features, which this evaluator does not support")
    stages = []
    for stage in _child(cascade, "stages", path):
        forms, node_thresholds, leaves = [], [], []
        for weak in _child(stage, "weakClassifiers", path):
            nodes = _child_text(weak, "internalNodes", path).split()
            if len(nodes) != 4:
                raise ValueError(
                    f"{path} has tree classifiers; use a stump cascade such as "
                    "haarcascade_frontalface_default.xml"
                )
            forms.append(_corner_form(features[int(nodes[2])], path))
            node_thresholds.append(float(nodes[3]))
            leaves.append([float(value) for value in _child_text(weak, "leafValues", path).split()])
        offsets, weights = _padded(forms)
        stages.append(
            HaarStage(
                threshold=float(_child_text(stage, "stageThreshold", path)),
                corner_offsets=offsets,
                integer_weights=weights,
                node_thresholds=np.array(node_thresholds, dtype=np.float64),
                leaves=np.array(leaves, dtype=np.float64),
            )
        )
    window = (
        int(_child_text(cascade, "width", path)),
        int(_child_text(cascade, "height", path)),
    )
    return HaarCascade(window=window, stages=tuple(stages))


def _child(element: ElementTree.Element, tag: str, path: Path) -> ElementTree.Element:
    """``element``'s first ``tag`` child, which an OpenCV cascade always has."""
    child = element.find(tag)
    if child is None:
        raise ValueError(f"{path} is not an OpenCV HAAR cascade: <{element.tag}> lacks <{tag}>")
    return child


def _child_text(element: ElementTree.Element, tag: str, path: Path) -> str:
    """The text of ``element``'s first ``tag`` child ("" when the child is empty)."""
    return _child(element, tag, path).text or ""


def _text(element: ElementTree.Element, path: Path) -> str:
    """``element``'s own text, which a cascade's rectangle always has."""
    if element.text is None:
        raise ValueError(f"{path} is not an OpenCV HAAR cascade: <{element.tag}> is empty")
    return element.text


def _corner_form(rects: list[list[float]], path: Path) -> dict[tuple[int, int], int]:
    """A feature's rectangles (x, y, w, h, weight) as signed integral-table corners: each
    corner once, with the weights of the rectangles that share it summed (6 to 9 of the
    12 corners of the cascade's features remain; the integer sums are the same)."""
    if any(weight != int(weight) for *_, weight in rects):
        raise ValueError(f"{path} has fractional rectangle weights; use an OpenCV Haar cascade")
    if len(rects) > _MAX_RECTS_PER_FEATURE:
        raise ValueError(
            f"{path} has a feature of {len(rects)} rectangles; OpenCV's have at "
            f"most {_MAX_RECTS_PER_FEATURE}"
        )
    corners: dict[tuple[int, int], int] = {}
    for x, y, w, h, weight in rects:
        for dx, dy, sign in ((x + w, y + h, 1), (x + w, y, -1), (x, y + h, -1), (x, y, 1)):
            corner = (int(dx), int(dy))
            corners[corner] = corners.get(corner, 0) + sign * int(weight)
    return {corner: weight for corner, weight in corners.items() if weight}


def _padded(forms: list[dict[tuple[int, int], int]]) -> tuple[np.ndarray, np.ndarray]:
    """A stage's features as (weak, corners, 2) offsets and (weak, corners) weights, padded
    to its largest feature with corner (0, 0) at weight 0."""
    width = max(len(form) for form in forms)
    offsets = [list(form) + [(0, 0)] * (width - len(form)) for form in forms]
    weights = [list(form.values()) + [0] * (width - len(form)) for form in forms]
    return np.array(offsets, dtype=np.int64), np.array(weights, dtype=np.int32)


def detect_faces(image: np.ndarray, detection: FaceDetection = FaceDetection()) -> list[Box]:
    """Boxes of the frontal faces in an RGB array, largest first."""
    gray = cv2.cvtColor(require_rgb(image), cv2.COLOR_RGB2GRAY)
    shrink = max(1.0, min(gray.shape) / detection.detect_side)
    if shrink > 1:
        size = (round(gray.shape[1] / shrink), round(gray.shape[0] / shrink))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    cascade = load_cascade()
    hits = []
    for scale, level in _pyramid(gray, cascade.window, detection.scale_factor):
        step = 1 if scale >= 2 else 2  # as OpenCV: big faces are few, search them finely
        window = (round(cascade.window[0] * scale), round(cascade.window[1] * scale))
        for x, y in _windows_passing(cascade, level, step).tolist():
            hits.append((round(x * scale), round(y * scale), *window))
    boxes = _group_rectangles(hits, detection.min_neighbors)
    boxes.sort(key=lambda box: (-box[2] * box[3], box[1], box[0]))
    return [
        (round(x * shrink), round(y * shrink), round((x + w) * shrink), round((y + h) * shrink))
        for x, y, w, h in boxes
    ]


def _pyramid(
    gray: np.ndarray, window: tuple[int, int], scale_factor: float
) -> list[tuple[float, np.ndarray]]:
    """(scale, image shrunk by scale) down to the window's size, as OpenCV builds them."""
    levels: list[tuple[float, np.ndarray]] = []
    factor = 1.0
    while True:
        # OpenCV keeps each level's scale as a float32; matching it keeps the same windows.
        scale = float(np.float32(factor))
        size = (round(gray.shape[1] / scale), round(gray.shape[0] / scale))
        if size[0] < window[0] or size[1] < window[1]:
            return levels
        levels.append(
            (
                scale,
                cv2.resize(
                    gray, size, fx=1 / scale, fy=1 / scale, interpolation=cv2.INTER_LINEAR_EXACT
                ),
            )
        )
        factor *= scale_factor


def count_faces(image: np.ndarray, detection: FaceDetection = FaceDetection()) -> int:
    return len(detect_faces(image, detection))


def _windows_passing(cascade: HaarCascade, gray: np.ndarray, step: int) -> np.ndarray:
    """(x, y) of every window on a ``step`` grid that passes all stages."""
    sums, squares = cv2.integral2(gray, sdepth=cv2.CV_32S, sqdepth=cv2.CV_64F)
    window_w, window_h = cascade.window
    grid = ((gray.shape[0] - window_h) // step + 1, (gray.shape[1] - window_w) // step + 1)
    inv_std = _inverse_window_deviation(sums, squares, cascade.window, step, grid)

    def at_offset(dx: int, dy: int) -> np.ndarray:
        """The integral table at (dx, dy) from every grid window's origin."""
        return sums[dy : dy + step * grid[0] : step, dx : dx + step * grid[1] : step]

    # While many windows survive on a big level, whole-grid strided slices are cheapest (one
    # array operation per corner); once few survive, or on small levels, where those calls'
    # overhead dominates, gather just the live windows. Both loops share one iterator: the
    # second takes the stages the first left. Integer feature sums stay exact in int32.
    stages = iter(cascade.stages)
    alive = np.ones(grid, dtype=bool)
    inv_std_32 = inv_std.astype(np.float32)
    for stage in stages if alive.size >= _DENSE_MIN_WINDOWS else ():
        stage_sum = np.zeros(grid, dtype=np.float32)
        weak_classifiers = zip(
            stage.corner_offsets.tolist(),
            stage.integer_weights.tolist(),
            stage.node_thresholds.tolist(),
            stage.leaves.tolist(),
            strict=True,
        )
        for offsets, weights, node_threshold, (below, at_or_above) in weak_classifiers:
            feature = np.zeros(grid, dtype=np.int32)
            for (dx, dy), weight in zip(offsets, weights, strict=True):
                if weight == 1:
                    feature += at_offset(dx, dy)
                elif weight == -1:
                    feature -= at_offset(dx, dy)
                elif weight:
                    feature += weight * at_offset(dx, dy)
            stage_sum += np.where(feature * inv_std_32 >= node_threshold, at_or_above, below)
        alive &= stage_sum >= stage.threshold
        if alive.mean() < _GATHER_BELOW:
            break
    rows, cols = np.nonzero(alive)
    inv_std = inv_std[rows, cols]
    origins = rows * step * sums.shape[1] + cols * step
    for stage in stages:
        if not len(origins):
            break
        offsets = stage.corner_offsets[..., 1] * sums.shape[1] + stage.corner_offsets[..., 0]
        # (window, weak, corners)
        corner_sums = np.take(sums, origins[:, None, None] + offsets[None])
        values = np.einsum("nkc,kc->kn", corner_sums, stage.integer_weights)
        keep = _stage_passes(stage, values * inv_std)
        rows, cols, origins, inv_std = rows[keep], cols[keep], origins[keep], inv_std[keep]
    return np.stack([cols * step, rows * step], axis=1)


def _stage_passes(stage: HaarStage, values: np.ndarray) -> np.ndarray:
    """Whether each window's summed leaf values reach the stage threshold; values: (weak, …)."""
    shape = (-1,) + (1,) * (values.ndim - 1)
    at_or_above = values >= stage.node_thresholds.reshape(shape)
    votes = np.where(
        at_or_above, stage.leaves[:, 1].reshape(shape), stage.leaves[:, 0].reshape(shape)
    )
    passes: np.ndarray = votes.sum(axis=0) >= stage.threshold
    return passes


def _inverse_window_deviation(
    sums: np.ndarray,
    squares: np.ndarray,
    window: tuple[int, int],
    step: int,
    grid: tuple[int, int],
) -> np.ndarray:
    """1 / (area × standard deviation) of each window's inner rect, as OpenCV normalises."""
    # OpenCV measures the window less a 1-pixel border.
    x0, y0, x1, y1 = 1, 1, window[0] - 1, window[1] - 1
    area = (x1 - x0) * (y1 - y0)

    def window_sum(table: np.ndarray) -> np.ndarray:
        def corner(dx: int, dy: int) -> np.ndarray:
            return table[dy : dy + step * grid[0] : step, dx : dx + step * grid[1] : step]

        summed: np.ndarray = (
            corner(x1, y1) - corner(x1, y0) - corner(x0, y1) + corner(x0, y0)
        ).astype(np.float64)
        return summed

    total = window_sum(sums)
    spread = area * window_sum(squares) - total * total
    return 1.0 / np.where(spread > 0, np.sqrt(np.maximum(spread, 0)), 1.0)


def _group_rectangles(
    rects: list[tuple[int, int, int, int]], min_neighbors: int, eps: float = 0.2
) -> list[tuple[int, int, int, int]]:
    """OpenCV's ``groupRectangles``: average clusters of similar boxes with > min_neighbors."""
    parents = list(range(len(rects)))

    def root(index: int) -> int:
        while parents[index] != index:
            parents[index] = parents[parents[index]]
            index = parents[index]
        return index

    for i, first in enumerate(rects):
        for j in range(i):
            if _similar(first, rects[j], eps):
                parents[root(i)] = root(j)
    clusters: dict[int, list[tuple[int, int, int, int]]] = {}
    for index, rect in enumerate(rects):
        clusters.setdefault(root(index), []).append(rect)
    averaged = [
        (_mean_rect(members), len(members))
        for members in clusters.values()
        if len(members) > min_neighbors
    ]
    # Drop a box lying inside a better-supported one (OpenCV's second pass).
    kept = []
    for index, (box, support) in enumerate(averaged):
        inside_other = any(
            _inside(box, other, eps) and (other_support > max(3, support) or support < 3)
            for other_index, (other, other_support) in enumerate(averaged)
            if other_index != index
        )
        if not inside_other:
            kept.append(box)
    return kept


def _mean_rect(members: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    # As OpenCV computes it: integer sums times a float32 reciprocal, rounded half to even.
    sums = np.sum(members, axis=0).astype(np.float32)
    mean = np.rint(sums * np.float32(1 / len(members))).astype(int)
    return tuple(mean.tolist())


def _similar(a: tuple[int, ...], b: tuple[int, ...], eps: float) -> bool:
    delta = eps * (min(a[2], b[2]) + min(a[3], b[3])) * 0.5
    return (
        abs(a[0] - b[0]) <= delta
        and abs(a[1] - b[1]) <= delta
        and abs(a[0] + a[2] - b[0] - b[2]) <= delta
        and abs(a[1] + a[3] - b[1] - b[3]) <= delta
    )


def _inside(box: tuple[int, ...], other: tuple[int, ...], eps: float) -> bool:
    dx, dy = round(other[2] * eps), round(other[3] * eps)
    return (
        box[0] >= other[0] - dx
        and box[1] >= other[1] - dy
        and box[0] + box[2] <= other[0] + other[2] + dx
        and box[1] + box[3] <= other[1] + other[3] + dy
    )
