"""The run report: one self-contained HTML page a person can open from the output folder.

Image links are relative to the report's folder, so the page keeps working when the
whole output folder is moved or shared. Every value is HTML-escaped by Jinja's autoescape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from postprocess.gate import FAIL, STATUSES
from renderer.atomic import write_text_atomic

_TEMPLATE_NAME = "report.html.j2"
_ENVIRONMENT = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=StrictUndefined,  # a misspelt field fails loudly instead of rendering blank
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
SHORT_ID_LENGTH = 12


@dataclass(frozen=True)
class ReportRun:
    run_id: str
    campaign: str
    created_at: str  # ISO 8601, as recorded in the ledger
    counts: Mapping[str, int]  # e.g. {"passed": 10, "failed": 2}
    thresholds: Mapping[str, str]  # metric -> readable bounds, e.g. GateRule.describe()


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
    status: str  # gate.PASS or gate.FAIL
    reasons: tuple[str, ...]

    def __post_init__(self) -> None:
        if PurePath(self.image_relpath).is_absolute():
            raise ValueError(
                f"image path {self.image_relpath!r} of variant {self.variant_id} is absolute; "
                "pass it relative to the report's folder (os.path.relpath(image, report_dir))"
            )
        if self.status not in STATUSES:
            raise ValueError(
                f"status {self.status!r} of variant {self.variant_id} is not one of {STATUSES}"
            )


def write_report(path: Path, run: ReportRun, rows: Sequence[ReportRow]) -> Path:
    """Write the report to the file ``path`` (e.g. ``OUT/report.html``) atomically."""
    if path.is_dir():
        raise ValueError(
            f"report path {path} is a folder; pass the file to write, e.g. {path / 'report.html'}"
        )
    html = _ENVIRONMENT.get_template(_TEMPLATE_NAME).render(
        run=run,
        rows=[_row_view(row) for row in rows],
        score_names=_score_names(rows),
        fail_status=FAIL,
    )
    write_text_atomic(path, html)
    return path


def _row_view(row: ReportRow) -> dict[str, object]:
    return {
        "row": row,
        "short_id": row.variant_id[:SHORT_ID_LENGTH],
        # A URL, not a file path: forward slashes, and spaces or '#' percent-encoded.
        "image_src": quote(PurePath(row.image_relpath).as_posix()),
    }


def _score_names(rows: Sequence[ReportRow]) -> list[str]:
    """Every metric any row has, in first-seen order: one table column each."""
    return list(dict.fromkeys(name for row in rows for name in row.scores))
