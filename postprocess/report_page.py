"""The run report page: one self-contained HTML page a person can open from the output
folder, and the X/Y grid images it links.

Image links are relative to the report's folder, so the page keeps working when the
whole output folder is moved or shared. Every value is HTML-escaped by Jinja's autoescape;
the page's small script sorts (by seed or any score) and filters (failed, review) by moving
and hiding the rows, never by building markup. Each row shows a person's standing review
(``campaign review``) beside the gate's decision. ``xy_grid_png`` draws A1111-style X/Y plots
of any two axes, ``pairs_grid_png`` two sides' paired variants (``campaign compare RUN_A
RUN_B --grid``). They return what to write; the caller writes it (atomically).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from PIL import Image, ImageDraw, ImageOps

from postprocess.gate_rules import FAIL, PASS, REVIEW, STATUSES, guideline_summary
from postprocess.text_layout import Font, bundled_font

_TEMPLATE_NAME = "report.html.j2"
# In every report's head: `campaign report --to` replaces a file only when it carries this.
REPORT_MARK = '<meta name="generator" content="campaign-renderer report">'
_ENVIRONMENT = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=StrictUndefined,  # a misspelt field fails loudly instead of rendering blank
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
SHORT_ID_LENGTH = 12
# Not decided yet (a run stopped before its decision pass): shown as such, never as passed.
UNDECIDED = "undecided"
_ROW_CLASSES = {PASS: None, REVIEW: "review", FAIL: "failed", UNDECIDED: "undecided"}
_FILTERS = (
    ("all", "all"),
    (FAIL, "failed"),
    (REVIEW, "review"),
    (f"{FAIL} {REVIEW}", "failed or review"),
)


@dataclass(frozen=True)
class ReportRun:
    run_id: str
    campaign: str
    created_at: str  # ISO 8601, as recorded in the ledger
    counts: Mapping[str, int]  # e.g. {"passed": 10, "failed": 2}
    thresholds: Mapping[str, str]  # metric -> readable bounds, e.g. GateRule.describe()
    recipes: Sequence[str] = ()  # NAME@VERSION of each recipe the run rendered


@dataclass(frozen=True)
class ReportRow:
    variant_id: str
    image_relpath: str  # relative to the report's folder
    axes: Mapping[str, str]
    prompt: str
    seed: int
    width: int
    height: int
    scores: Mapping[str, float]
    status: str  # gate_rules.PASS, REVIEW or FAIL, or UNDECIDED
    reasons: tuple[str, ...]
    guidelines: int = 0  # how many rules the image was held to
    broken: tuple[str, ...] = ()  # the names of those it broke
    review: str = "unreviewed"  # a person's standing decision: approved | rejected | unreviewed
    review_by: str = ""  # who, and when (ISO 8601), for approved or rejected
    review_at: str = ""
    review_note: str = ""

    @property
    def guideline_summary(self) -> str:
        return guideline_summary(self.guidelines, self.broken)

    def __post_init__(self) -> None:
        if PurePath(self.image_relpath).is_absolute():
            raise ValueError(
                f"image path {self.image_relpath!r} of variant {self.variant_id} is absolute; "
                "pass it relative to the report's folder (os.path.relpath(image, report_dir))"
            )
        if self.status not in _ROW_CLASSES:
            raise ValueError(
                f"status {self.status!r} of variant {self.variant_id} is not one of "
                f"{(*STATUSES, UNDECIDED)}"
            )


@dataclass(frozen=True)
class RecipeComparison:
    """One recipe of a run with several (a campaign's recipe axis), measured side by side."""

    recipe: str  # name@version
    family: str
    variants: int
    counts: Mapping[str, int]  # passed, review, failed (and undecided)
    scores: Mapping[str, tuple[float, float]]  # metric -> (mean, standard deviation)
    consistency_within: float | None  # mean cosine to the mean of this recipe's images
    consistency_across: float | None  # mean cosine to the mean of all the run's images
    seconds_per_image: float | None  # measured on the device that rendered them
    usd_per_1000: Mapping[str, float]  # GPU -> estimated cost of 1,000 such images

    def as_json(self) -> dict[str, object]:
        return {
            "recipe": self.recipe,
            "family": self.family,
            "variants": self.variants,
            "counts": dict(self.counts),
            "scores": {
                name: {"mean": mean, "std": std} for name, (mean, std) in self.scores.items()
            },
            "consistency_within": self.consistency_within,
            "consistency_across": self.consistency_across,
            "seconds_per_image": self.seconds_per_image,
            "usd_per_1000": dict(self.usd_per_1000),
        }


@dataclass(frozen=True)
class ReportGrid:
    """An X/Y grid image shown under the table (``write_xy_grid`` makes one)."""

    image_relpath: str  # relative to the report's folder
    caption: str  # e.g. "product × aspect"


def report_html(
    run: ReportRun,
    rows: Sequence[ReportRow],
    grids: Sequence[ReportGrid] = (),
    comparison: Sequence[RecipeComparison] = (),
) -> str:
    """The report page's HTML; ``comparison`` (two recipes or more) is shown as a table."""
    return _ENVIRONMENT.get_template(_TEMPLATE_NAME).render(
        mark=REPORT_MARK,
        run=run,
        rows=[_row_view(row) for row in rows],
        score_names=_score_names(rows),
        filters=_FILTERS,
        grids=[{"src": _url(grid.image_relpath), "caption": grid.caption} for grid in grids],
        comparison=comparison_lines(comparison) if len(comparison) > 1 else [],
        compared=[entry.recipe for entry in comparison],
    )


def comparison_lines(comparison: Sequence[RecipeComparison]) -> list[tuple[str, list[str]]]:
    """The comparison as a table with one column per recipe: (measure, cells) lines, as the
    report and ``campaign compare`` print it."""

    def number(value: float | None, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    lines = [
        ("family", [entry.family for entry in comparison]),
        ("variants", [str(entry.variants) for entry in comparison]),
    ]
    for status in dict.fromkeys(name for entry in comparison for name in entry.counts):
        lines.append((status, [str(entry.counts.get(status, 0)) for entry in comparison]))
    for metric in dict.fromkeys(name for entry in comparison for name in entry.scores):
        lines.append(
            (
                f"{metric} mean ± sd",
                [
                    f"{entry.scores[metric][0]:.3f} ± {entry.scores[metric][1]:.3f}"
                    if metric in entry.scores
                    else "–"
                    for entry in comparison
                ],
            )
        )
    lines.append(
        ("consistency within recipe", [number(entry.consistency_within) for entry in comparison])
    )
    lines.append(
        ("consistency across recipes", [number(entry.consistency_across) for entry in comparison])
    )
    lines.append(
        (
            "seconds per image (measured)",
            [number(entry.seconds_per_image, 4) for entry in comparison],
        )
    )
    for gpu in dict.fromkeys(name for entry in comparison for name in entry.usd_per_1000):
        lines.append(
            (
                f"$ per 1,000 images on {gpu} (estimated)",
                [
                    f"{entry.usd_per_1000[gpu]:,.4f}" if gpu in entry.usd_per_1000 else "–"
                    for entry in comparison
                ],
            )
        )
    return lines


def _row_view(row: ReportRow) -> dict[str, object]:
    return {
        "row": row,
        "row_class": _ROW_CLASSES[row.status],
        "short_id": row.variant_id[:SHORT_ID_LENGTH],
        "image_src": _url(row.image_relpath),
    }


def _url(relpath: str) -> str:
    """A URL, not a file path: forward slashes, and spaces or '#' percent-encoded."""
    return quote(PurePath(relpath).as_posix())


def _score_names(rows: Sequence[ReportRow]) -> list[str]:
    """Every metric any row has, in first-seen order: one table column each."""
    return list(dict.fromkeys(name for row in rows for name in row.scores))


_GRID_BACKGROUND = (255, 255, 255)
_CELL_BACKGROUND = (238, 238, 240)
_LABEL_COLOUR = (29, 29, 31)
_STATUS_COLOURS = {FAIL: (200, 30, 30), REVIEW: (230, 160, 0)}


def xy_grid_png(
    rows: Sequence[ReportRow],
    x_axis: str,
    y_axis: str,
    images: Mapping[str, Image.Image],
    cell: int = 256,
) -> bytes:
    """A labelled grid PNG like A1111's X/Y plot: one column per ``x_axis`` value,
    one row per ``y_axis`` value (in first-seen order), each image fitted into a ``cell``
    square; failed and review images are framed in red or amber and tagged.

    ``images`` maps variant ids to images. The rows must hold one variant per (x, y) pair:
    filter them to one value of every other axis first.
    """
    cells = _grid_cells(rows, x_axis, y_axis)
    x_values = list(dict.fromkeys(x for x, _ in cells))
    y_values = list(dict.fromkeys(y for _, y in cells))
    font = bundled_font(max(10, cell // 12))
    pad = cell // 16
    line = round(font.size * 1.3)
    corner = f"{y_axis} \\ {x_axis}"
    y_labels = [_fit_label(value, font, 2 * cell) for value in y_values]
    label_width = pad * 2 + round(max(font.getlength(text) for text in [*y_labels, corner]))
    header = line + 2 * pad
    grid = Image.new(
        "RGB", (label_width + cell * len(x_values), header + cell * len(y_values)), _GRID_BACKGROUND
    )
    draw = ImageDraw.Draw(grid)
    draw.text((pad, pad), corner, fill=_LABEL_COLOUR, font=font)
    for column, x_value in enumerate(x_values):
        left = label_width + column * cell
        text = _fit_label(x_value, font, cell - 2 * pad)
        draw.text(
            (left + (cell - font.getlength(text)) / 2, pad), text, fill=_LABEL_COLOUR, font=font
        )
    for row_index, (y_value, y_label) in enumerate(zip(y_values, y_labels, strict=True)):
        top = header + row_index * cell
        draw.text((pad, top + (cell - line) / 2), y_label, fill=_LABEL_COLOUR, font=font)
        for column, x_value in enumerate(x_values):
            box = (label_width + column * cell, top, label_width + (column + 1) * cell, top + cell)
            _draw_cell(grid, draw, box, cells.get((x_value, y_value)), images, font, pad)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return buffer.getvalue()


def pairs_grid_png(
    pairs: Sequence[tuple[str, ReportRow, ReportRow]],
    left: str,
    right: str,
    images: Mapping[str, Image.Image],
    x_name: str = "run",
    y_name: str = "variant",
    cell: int = 256,
) -> bytes:
    """``xy_grid_png`` of pairs: one row per (label, left row, right row), two columns
    titled ``left`` | ``right`` (e.g. "demo-sd15@1" | "demo-sd15@2"). Labels that repeat
    are numbered; ``images`` maps the rows' variant ids to their images."""
    if left == right:
        raise ValueError(f"both columns are titled {left!r}; give the sides distinct titles")
    rows: list[ReportRow] = []
    placed: dict[str, Image.Image] = {}  # by cell: both sides may show the same variant
    seen: dict[str, int] = {}
    for label, first, second in pairs:
        seen[label] = seen.get(label, 0) + 1
        shown = label if seen[label] == 1 else f"{label} #{seen[label]}"
        for side, row in ((left, first), (right, second)):
            if row.variant_id not in images:
                raise ValueError(f"no image given for variant {row.variant_id[:SHORT_ID_LENGTH]}")
            cell_id = str(len(rows))
            placed[cell_id] = images[row.variant_id]
            rows.append(replace(row, variant_id=cell_id, axes={x_name: side, y_name: shown}))
    return xy_grid_png(rows, x_name, y_name, placed, cell=cell)


def _grid_cells(
    rows: Sequence[ReportRow], x_axis: str, y_axis: str
) -> dict[tuple[str, str], ReportRow]:
    if not rows:
        raise ValueError("no rows given; pass the report rows to plot")
    cells: dict[tuple[str, str], ReportRow] = {}
    for row in rows:
        missing = [axis for axis in (x_axis, y_axis) if axis not in row.axes]
        if missing:
            raise ValueError(
                f"variant {row.variant_id[:SHORT_ID_LENGTH]} has no axis {missing[0]!r}; "
                f"use one of: {', '.join(row.axes) or '(no axes)'}"
            )
        key = (row.axes[x_axis], row.axes[y_axis])
        if key in cells:
            other = cells[key]
            differing = [axis for axis in row.axes if row.axes[axis] != other.axes.get(axis)]
            raise ValueError(
                f"variants {other.variant_id[:SHORT_ID_LENGTH]} and "
                f"{row.variant_id[:SHORT_ID_LENGTH]} share {x_axis}={key[0]}, {y_axis}={key[1]}; "
                f"pass rows for one value of {', '.join(differing) or 'the other axes'}"
            )
        cells[key] = row
    return cells


def _draw_cell(
    grid: Image.Image,
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    row: ReportRow | None,
    images: Mapping[str, Image.Image],
    font: Font,
    pad: int,
) -> None:
    left, top, right, bottom = box
    inner = (left + pad // 2, top + pad // 2, right - pad // 2, bottom - pad // 2)
    draw.rectangle(inner, fill=_CELL_BACKGROUND)
    if row is None:  # an excluded combination
        draw.text(
            ((left + right) / 2, (top + bottom) / 2),
            "-",
            fill=_LABEL_COLOUR,
            font=font,
            anchor="mm",
        )
        return
    if row.variant_id not in images:
        raise ValueError(
            f"no image given for variant {row.variant_id[:SHORT_ID_LENGTH]}; "
            "pass images keyed by every row's variant_id"
        )
    thumbnail = ImageOps.contain(  # scaled up or down to fill the cell, aspect kept
        images[row.variant_id].convert("RGB"),
        (inner[2] - inner[0], inner[3] - inner[1]),
        Image.Resampling.LANCZOS,
    )
    grid.paste(
        thumbnail,
        (
            (inner[0] + inner[2] - thumbnail.width) // 2,
            (inner[1] + inner[3] - thumbnail.height) // 2,
        ),
    )
    colour = _STATUS_COLOURS.get(row.status)
    if colour is not None:
        draw.rectangle(inner, outline=colour, width=max(2, pad // 3))
        tag = row.status.upper()
        tag_box = draw.textbbox((inner[0] + pad, inner[1] + pad), tag, font=font)
        draw.rectangle(_grow(tag_box, pad // 4), fill=colour)
        draw.text((inner[0] + pad, inner[1] + pad), tag, fill=(255, 255, 255), font=font)


def _fit_label(text: str, font: Font, width: int) -> str:
    """``text``, cut with "..." to fit ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def _grow(box: tuple[float, float, float, float], pad: int) -> tuple[float, float, float, float]:
    return box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad
