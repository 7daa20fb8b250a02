"""A run's HTML report, from the ledger: what the ledger says is what the page shows.

Each row shows its render's current decision (status, reasons and the scores decided on;
``renderer.ledger.decisions``) and a person's standing review of its bytes (``campaign
review``); the header counts those rows and names the rules of the run's latest decision
pass. X/Y grid images of two axes are written beside the report, one per
combination of the other axes' values, and linked with relative paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from postprocess.gate_rules import count_statuses
from postprocess.report_page import (
    REPORT_MARK,
    UNDECIDED,
    ReportGrid,
    ReportRow,
    ReportRun,
    report_html,
    xy_grid_png,
)
from renderer.core.atomic import write_bytes_atomic
from renderer.core.errors import InputError
from renderer.ledger.decisions import run_gates
from renderer.ledger.records import RenderRow
from renderer.ledger.store import Ledger
from renderer.plan.estimate import load_estimates
from renderer.plan.output_folder import OutputFolder, relative_inside, report_path
from renderer.report.comparison import compare_run
from renderer.validate.matrix import axis_label

GRID_CELL = 160  # pixels per grid cell (images are fitted, up or down)


def write_run_report(
    ledger: Ledger,
    run_id: str | None,
    path: Path | None = None,
    grids: Sequence[tuple[str, str]] | None = None,
) -> Path:
    """Write the report of a run (the latest when run_id is None); returns its path.
    ``grids``: (x axis, y axis) pairs; None: those the campaign asked for when it ran."""
    run = ledger.find_run(run_id)
    out_dir = ledger.path.parent
    path = path or out_dir / report_path(run.campaign, run.id)
    write = report_writer(OutputFolder(out_dir, ledger.held_paths()), path)
    stored = ledger.run_rows(run.id)
    rows = [
        ReportRow(
            variant_id=row.variant_id,
            image_relpath=Path(os.path.relpath(out_dir / row.output_path, path.parent)).as_posix(),
            axes={name: axis_label(value) for name, value in row.axes.items()},
            prompt=row.prompt,
            seed=row.seed,
            width=row.width,
            height=row.height,
            scores=row.decided_scores,
            status=row.decision.status if row.decision else UNDECIDED,
            reasons=row.decision.reasons if row.decision else (),
            **_guideline_counts(row),
            review=row.review_state,
            review_by=row.review.reviewer if row.review else "",
            review_at=row.review.reviewed_at if row.review else "",
            review_note=row.review.note if row.review else "",
        )
        for row in stored
    ]
    decided = [row.status for row in rows if row.status != UNDECIDED]
    counts = {
        "planned": run.planned,
        "rendered": run.rendered,
        "skipped": run.skipped,
        **count_statuses(decided),
        **{
            f"{state} by a person": count
            for state, count in (
                ("approved", run.reviews["approved"]),
                ("rejected", run.reviews["rejected"]),
            )
        },
        "review items not yet reviewed": run.reviews["to_review"],
        "deliveries": len(ledger.deliveries(run.id)),
    }
    report_run = ReportRun(
        run_id=run.id,
        campaign=run.campaign,
        created_at=run.started_at,
        recipes=run.recipes,
        counts=counts,
        thresholds=run_gates(ledger, run).describe(),
    )
    if grids is None:
        grids = [tuple(pair) for pair in run.report.get("grids", [])]
    grid_views = write_grids(path, rows, grids, out_dir, stored, write)
    comparison = compare_run(ledger, run, load_estimates()) if len(run.recipes) > 1 else []
    write(path, report_html(report_run, rows, grid_views, comparison).encode("utf-8"))
    return path


def _guideline_counts(row: RenderRow) -> dict[str, Any]:
    """How many rules the render's current decision held it to, and which it broke."""
    if row.decision is None:
        return {}  # undecided: held to no rules yet
    return {"guidelines": len(row.decision.guidelines), "broken": row.decision.broken}


def report_writer(folder: OutputFolder, path: Path) -> Callable[[Path, bytes], None]:
    """How the report at ``path`` and its grids are written: inside the output folder
    through its owner (never onto a path a record holds or a reserved name), elsewhere
    atomically; ``path`` must be an HTML file that is new or a report written before."""
    if path.is_dir():
        raise InputError(
            f"report path {path} is a folder",
            file=path,
            fix=f"pass the file to write, e.g. {path / 'report.html'}",
        )
    if path.suffix.lower() not in (".html", ".htm"):
        raise InputError(
            f"a report is an HTML page; {path.name} does not end in .html",
            file=path,
            fix=f"pass a path ending in .html, e.g. {path}.html",
        )
    if path.exists() and not _is_report(path):
        raise InputError(
            f"{path} exists and is not a report this tool wrote",
            file=path,
            fix="pass a new file (a report never replaces another file)",
        )
    # Refused before anything is made.
    if (inside := relative_inside(folder.root, path)) is not None:
        folder.check(inside, "report")
        folder.claim(inside, variant_id=None)

    def write(target: Path, data: bytes) -> None:
        inside = relative_inside(folder.root, target)
        if inside is None:
            write_bytes_atomic(target, data)
            return
        folder.claim(inside, variant_id=None)
        folder.write(inside, data, "report")

    return write


def _is_report(path: Path) -> bool:
    if not path.is_file() or path.is_symlink():
        return False
    with open(path, "rb") as handle:
        return REPORT_MARK.encode() in handle.read(4096)


def write_grids(
    report_file: Path,
    rows: Sequence[ReportRow],
    grids: Sequence[tuple[str, str]],
    out_dir: Path,
    ledger_rows: Sequence[RenderRow],
    write: Callable[[Path, bytes], None],
) -> list[ReportGrid]:
    """One X/Y grid PNG per (x, y) pair and combination of the other axes' values, in
    ``REPORT-grids/`` beside the report; returns the ReportGrid entries linking them."""

    if not grids or not rows:
        return []
    axes = list(rows[0].axes)
    for x_axis, y_axis in grids:
        for axis in (x_axis, y_axis):
            if axis not in axes:
                raise InputError(
                    f"the run has no axis {axis!r}",
                    expected=", ".join(axes),
                    found=axis,
                    fix="name two of the campaign's axes",
                )
    files = {row.variant_id: out_dir / row.output_path for row in ledger_rows}
    folder = report_file.parent / f"{report_file.stem}-grids"
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
            write(folder / name, xy_grid_png(members, x_axis, y_axis, images, cell=GRID_CELL))
            where = ", ".join(f"{axis}={value}" for axis, value in zip(others, fixed, strict=True))
            views.append(
                ReportGrid(
                    image_relpath=f"{folder.name}/{name}",
                    caption=f"{x_axis} × {y_axis}" + (f" ({where})" if where else ""),
                )
            )
    return views


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text) or "axis"
