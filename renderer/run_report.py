"""A run's HTML report, from the ledger: what the ledger says is what the page shows.

Each row shows its render's current decision (status, reasons and the scores decided on;
``renderer.decisions``) and a person's standing review of its bytes (``campaign
review``); the header counts those rows and names the rules of the run's latest decision
pass. X/Y grid images of two axes are written beside the report, one per
combination of the other axes' values, and linked with relative paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from postprocess.gate_rules import count_statuses
from postprocess.report_page import UNDECIDED, ReportGrid, ReportRow, ReportRun, report_html

from .atomic import write_bytes_atomic, write_text_atomic
from .comparison import compare_run
from .decisions import run_gates
from .errors import InputError
from .estimate import load_estimates
from .ledger import Ledger
from .matrix import axis_label
from .records import RenderRow

GRID_CELL = 160  # pixels per grid cell (images are fitted, up or down)


def write_run_report(ledger: Ledger, run_id: str | None, path: Path | None = None,
                     grids: Sequence[tuple[str, str]] | None = None) -> Path:
    """Write the report of a run (the latest when run_id is None); returns its path.
    ``grids``: (x axis, y axis) pairs; None: those the campaign asked for when it ran."""
    run = ledger.find_run(run_id)
    out_dir = ledger.path.parent
    path = path or out_dir / run.campaign / f"report-{run.id}.html"
    if path.is_dir():
        raise InputError(f"report path {path} is a folder", file=path,
                         fix=f"pass the file to write, e.g. {path / 'report.html'}")
    stored = ledger.run_rows(run.id)
    rows = [ReportRow(
        variant_id=row.variant_id,
        image_relpath=Path(os.path.relpath(out_dir / row.output_path, path.parent)).as_posix(),
        axes={name: axis_label(value) for name, value in row.axes.items()},
        prompt=row.prompt, seed=row.seed, width=row.width, height=row.height,
        scores=row.decision.scores if row.decision else row.scores,
        status=row.decision.status if row.decision else UNDECIDED,
        reasons=row.decision.reasons if row.decision else (), review=row.review_state,
        review_by=row.review.reviewer if row.review else "",
        review_at=row.review.reviewed_at if row.review else "",
        review_note=row.review.note if row.review else "") for row in stored]
    decided = [row.status for row in rows if row.status != UNDECIDED]
    counts = {"planned": run.planned, "rendered": run.rendered, "skipped": run.skipped,
              **count_statuses(decided), **{f"{state} by a person": count for state, count in
                                            (("approved", run.reviews["approved"]),
                                             ("rejected", run.reviews["rejected"]))},
              "review items not yet reviewed": run.reviews["to_review"]}
    report_run = ReportRun(run_id=run.id, campaign=run.campaign, created_at=run.started_at,
                           counts=counts, thresholds=run_gates(ledger, run).describe())
    if grids is None:
        grids = [tuple(pair) for pair in run.report.get("grids", [])]
    grid_views = write_grids(path, rows, grids, out_dir, stored)
    comparison = compare_run(ledger, run, load_estimates()) if len(run.recipes) > 1 else []
    write_text_atomic(path, report_html(report_run, rows, grid_views, comparison))
    return path


def write_grids(report_path: Path, rows: Sequence[ReportRow], grids: Sequence[tuple[str, str]],
                out_dir: Path, ledger_rows: Sequence[RenderRow]) -> list[ReportGrid]:
    """One X/Y grid PNG per (x, y) pair and combination of the other axes' values, in
    ``REPORT-grids/`` beside the report; returns the ReportGrid entries linking them."""
    from PIL import Image

    from postprocess.report_page import xy_grid_png

    if not grids or not rows:
        return []
    axes = list(rows[0].axes)
    for x_axis, y_axis in grids:
        for axis in (x_axis, y_axis):
            if axis not in axes:
                raise InputError(f"the run has no axis {axis!r}", expected=", ".join(axes),
                                 found=axis, fix="name two of the campaign's axes")
    files = {row.variant_id: out_dir / row.output_path for row in ledger_rows}
    folder = report_path.parent / f"{report_path.stem}-grids"
    views = []
    for x_axis, y_axis in grids:
        others = [axis for axis in axes if axis not in (x_axis, y_axis)]
        groups: dict[tuple[str, ...], list[ReportRow]] = {}
        for row in rows:
            if files[row.variant_id].is_file():
                groups.setdefault(tuple(row.axes[axis] for axis in others), []).append(row)
        for number, (fixed, members) in enumerate(groups.items(), start=1):
            images = {}
            for row in members:
                with Image.open(files[row.variant_id]) as image:
                    images[row.variant_id] = image.convert("RGB")
            name = f"{_file_part(x_axis)}-{_file_part(y_axis)}-{number}.png"
            write_bytes_atomic(folder / name, xy_grid_png(members, x_axis, y_axis, images,
                                                          cell=GRID_CELL))
            where = ", ".join(f"{axis}={value}" for axis, value in zip(others, fixed,
                                                                       strict=True))
            views.append(ReportGrid(
                image_relpath=f"{folder.name}/{name}",
                caption=f"{x_axis} × {y_axis}" + (f" ({where})" if where else "")))
    return views


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text) or "axis"
