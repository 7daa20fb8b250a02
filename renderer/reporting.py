"""Build a run's HTML report from the ledger (what the ledger says is what the page shows)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import InputError
from .ledger import Ledger


def axis_label(value: Any) -> str:
    """How an axis value reads in a table: a mapping by its name, else its JSON."""
    if isinstance(value, dict):
        return str(value.get("name", json.dumps(value, sort_keys=True)))
    return str(value)


def write_run_report(ledger: Ledger, run_id: str | None, path: Path | None = None) -> Path:
    """Write the report of a run (the latest when run_id is None); returns its path."""
    from postprocess.report import ReportRow, ReportRun, write_report

    run = ledger.run(run_id)
    if run is None:
        raise InputError(f"no run {run_id!r} in the ledger" if run_id else "the ledger has no runs",
                         file=ledger.path, fix="list runs with `campaign history`")
    out_dir = ledger.path.parent
    path = path or out_dir / run["campaign"] / f"report-{run['id']}.html"
    rows = [
        ReportRow(
            variant_id=row["variant_id"],
            image_relpath=Path(os.path.relpath(out_dir / row["output_path"], path.parent))
            .as_posix(),
            axes={name: axis_label(value) for name, value in json.loads(row["axes_json"]).items()},
            prompt=row["prompt"], seed=row["seed"], width=row["width"], height=row["height"],
            scores=json.loads(row["scores_json"]), status=row["gate_status"],
            reasons=tuple(json.loads(row["gate_reasons_json"])),
        )
        for row in ledger.run_rows(run["id"])
    ]
    report_run = ReportRun(
        run_id=run["id"], campaign=run["campaign"], created_at=run["started_at"],
        counts={key: run[key] for key in ("planned", "rendered", "skipped", "passed", "failed")},
        thresholds=json.loads(run["thresholds_json"]),
    )
    return write_report(path, report_run, rows)
