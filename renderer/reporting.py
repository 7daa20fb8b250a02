"""Build a run's HTML report from the ledger (what the ledger says is what the page shows).

Status, reasons and scores come from the run's latest gate decisions (the end of its
render, or a later ``campaign gate``); a run from before gate decisions were stored shows
each render's own decision. X/Y grid images of two axes are written beside the report, one
per combination of the other axes' values, and linked with relative paths.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError
from .ledger import Ledger

GRID_CELL = 160  # pixels per grid cell (images are fitted, up or down)


def axis_label(value: Any) -> str:
    """How an axis value reads in a table: a mapping by its name, else its JSON."""
    if isinstance(value, dict):
        return str(value.get("name", json.dumps(value, sort_keys=True)))
    return str(value)


def write_run_report(ledger: Ledger, run_id: str | None, path: Path | None = None,
                     grids: Sequence[tuple[str, str]] | None = None) -> Path:
    """Write the report of a run (the latest when run_id is None); returns its path.
    ``grids``: (x axis, y axis) pairs; None: those the campaign asked for when it ran."""
    from postprocess.report import ReportRow, ReportRun, write_report

    run = ledger.run(run_id)
    if run is None:
        raise InputError(f"no run {run_id!r} in the ledger" if run_id else "the ledger has no runs",
                         file=ledger.path, fix="list runs with `campaign history`")
    out_dir = ledger.path.parent
    path = path or out_dir / run["campaign"] / f"report-{run['id']}.html"
    gating = ledger.latest_gating(run["id"])
    stored = ledger.run_rows(run["id"])
    rows = []
    for row in stored:
        decision = gating.decisions.get(row["id"]) if gating else None
        if decision is None:
            decision = {"status": row["gate_status"],
                        "reasons": json.loads(row["gate_reasons_json"]),
                        "scores": json.loads(row["scores_json"])}
        rows.append(ReportRow(
            variant_id=row["variant_id"],
            image_relpath=Path(os.path.relpath(out_dir / row["output_path"], path.parent))
            .as_posix(),
            axes={name: axis_label(value) for name, value in json.loads(row["axes_json"]).items()},
            prompt=row["prompt"], seed=row["seed"], width=row["width"], height=row["height"],
            scores=decision["scores"], status=decision["status"],
            reasons=tuple(decision["reasons"]),
        ))
    counts = {key: run[key] for key in ("planned", "rendered", "skipped")}
    if gating:
        counts.update(gating.counts)
    else:
        counts.update({key: run.get(key) or 0 for key in ("passed", "review", "failed")})
    thresholds = json.loads(run["thresholds_json"])
    if gating:
        from .gating import GateSet

        thresholds = GateSet.from_json(gating.rules).describe()
    report_run = ReportRun(
        run_id=run["id"], campaign=run["campaign"], created_at=run["started_at"],
        counts=counts, thresholds=thresholds,
    )
    if grids is None:
        grids = [tuple(pair) for pair in
                 json.loads(run.get("report_json") or "{}").get("grids", [])]
    grid_views = write_grids(path, rows, grids, out_dir, stored)
    return write_report(path, report_run, rows, grid_views)


def write_grids(report_path: Path, rows: Sequence[Any], grids: Sequence[tuple[str, str]],
                out_dir: Path, ledger_rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """One X/Y grid PNG per (x, y) pair and combination of the other axes' values, in
    ``REPORT-grids/`` beside the report; returns the ReportGrid entries linking them."""
    from PIL import Image

    from postprocess.report import ReportGrid, write_xy_grid

    if not grids or not rows:
        return []
    axes = list(rows[0].axes)
    for x_axis, y_axis in grids:
        for axis in (x_axis, y_axis):
            if axis not in axes:
                raise InputError(f"the run has no axis {axis!r}", expected=", ".join(axes),
                                 found=axis, fix="name two of the campaign's axes")
    files = {row["variant_id"]: out_dir / row["output_path"] for row in ledger_rows}
    folder = report_path.parent / f"{report_path.stem}-grids"
    views = []
    for x_axis, y_axis in grids:
        others = [axis for axis in axes if axis not in (x_axis, y_axis)]
        groups: dict[tuple[str, ...], list[Any]] = {}
        for row in rows:
            if files[row.variant_id].is_file():
                groups.setdefault(tuple(row.axes[axis] for axis in others), []).append(row)
        for number, (fixed, members) in enumerate(groups.items(), start=1):
            images = {}
            for row in members:
                with Image.open(files[row.variant_id]) as image:
                    images[row.variant_id] = image.convert("RGB")
            name = f"{_file_part(x_axis)}-{_file_part(y_axis)}-{number}.png"
            write_xy_grid(folder / name, members, x_axis, y_axis, images, cell=GRID_CELL)
            where = ", ".join(f"{axis}={value}" for axis, value in zip(others, fixed,
                                                                       strict=True))
            views.append(ReportGrid(
                image_relpath=f"{folder.name}/{name}",
                caption=f"{x_axis} × {y_axis}" + (f" ({where})" if where else "")))
    return views


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text) or "axis"
