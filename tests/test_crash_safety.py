"""`kill -9` at any moment, then a re-run: no truncated file, no row without its file, no
file without its row (once re-run), nothing that had finished rendered again."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from renderer.core.atomic import TEMP_PREFIX

from .conftest import CAMPAIGN_BIN, ledger_rows, run_cli
from .ledger_support import folder_state, small_project

# Minutes of renders: scheduled before the other files (tests/conftest.py).
pytestmark = pytest.mark.long

TRIALS = 4
SEED = 20261127
# stderr lines a kill is timed from: the work is known (models load next), the pipeline is
# loaded (the first image renders next), the first image is committed (progress line).
ANCHORS = ("to render", "loaded sd15 pipeline", "] 1/", "] 1/")


def _start_render(campaign: Path, out: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            [str(CAMPAIGN_BIN), "render", str(campaign), "--out", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )


def _wait_for(process: subprocess.Popen, log: Path, text: str, timeout: float = 120) -> bool:
    """Wait until ``text`` shows in the process's stderr; False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.02)
    raise AssertionError(f"no {text!r} after {timeout} s: {log.read_text()}")


def test_sigkill_at_random_moments_loses_nothing(tmp_path, demo_models):
    """Kill a render of 8 variants (batch size 1: many commit points) at seeded random
    moments, checking the folder after each kill; then let a last run finish."""
    project = small_project(
        tmp_path, seeds=(1, 2, 3, 4), backgrounds=("studio", "mountain"), batch_size=1
    )
    out, rng = tmp_path / "out", random.Random(SEED)
    committed: dict[str, list[int]] = {}  # variant id -> its row ids, as of the last check
    kills = []
    for trial in range(TRIALS):
        log = tmp_path / f"trial-{trial}.log"
        process = _start_render(project.campaign_path, out, log)
        # Timed from what the run says it is doing, not from its start, so that a busy
        # machine still puts each kill where it is meant to land: while models load, while
        # the first image renders, and (twice) among images being written and committed.
        anchor = ANCHORS[trial % len(ANCHORS)]
        started = _wait_for(process, log, anchor)
        delay = rng.uniform(0.0, 1.5)
        time.sleep(delay)
        finished = process.poll() is not None
        process.send_signal(signal.SIGKILL)
        process.wait()
        state = folder_state(out)
        kills.append(
            (
                trial,
                round(delay, 2),
                "finished first" if finished or not started else "killed",
                f"{len(state.row_ids)} committed",
            )
        )
        assert state.integrity == "ok"
        assert state.broken_pngs == [], f"trial {trial}: truncated files {state.broken_pngs}"
        assert state.rows_without_file == [], f"trial {trial}: rows without their file"
        # The one image written but not yet committed when the process died, at most.
        assert len(state.files_without_row) <= 1, state.files_without_row
        for variant_id, row_ids in committed.items():
            assert state.row_ids[variant_id] == row_ids, f"{variant_id} rendered again"
        committed = {variant: list(rows) for variant, rows in state.row_ids.items()}
    print("kills (trial, seconds after the anchor, outcome, rows):", kills)
    assert any(kill[2] == "killed" for kill in kills)

    # The moment between os.replace and COMMIT, made on purpose (random kills rarely hit
    # it): one image is in place without its row, and a temp file is half written.
    with sqlite3.connect(out / "ledger.sqlite") as db:
        row_id, orphan, orphan_path = db.execute(
            "SELECT id, variant_id, output_path FROM renders ORDER BY id DESC LIMIT 1"
        ).fetchone()
        db.execute("DELETE FROM renders WHERE id = ?", (row_id,))
    del committed[orphan]
    orphan_bytes = (out / orphan_path).read_bytes()
    (out / orphan_path).with_name(f"{TEMP_PREFIX}abc123").write_bytes(orphan_bytes[:100])
    files = {path: (out / path).read_bytes() for path in _paths(out)}

    result = run_cli("render", project.campaign_path, "--out", out, "--json")
    assert result.code == 0, result.stderr
    assert "temp file(s) deleted" in result.stderr and "marked interrupted" in result.stderr
    state = folder_state(out)
    assert state.integrity == "ok"
    assert state.temp_files == [], "a re-run sweeps the temp files a killed writer left"
    assert state.broken_pngs == []
    assert state.rows_without_file == []
    assert state.files_without_row == []
    assert sorted(state.rows_per_variant.values()) == [1] * 8, "one render per variant"
    for variant_id, row_ids in committed.items():  # finished before a kill: not again
        assert state.row_ids[variant_id] == row_ids
    for path, data in files.items():
        assert (out / path).read_bytes() == data
    assert result.json()["counts"]["rendered"] == 8 - len(committed)
    # The uncommitted image was rendered again (batch of 1 then and now: the same bytes).
    assert (out / orphan_path).read_bytes() == orphan_bytes
    statuses = [
        row[0] for row in ledger_rows(out, "SELECT outcome FROM run_summaries ORDER BY started_at")
    ]
    assert statuses[-1] == "passed"
    assert "running" not in statuses and "interrupted" in statuses


def _paths(out: Path) -> list[str]:
    return [row[0] for row in ledger_rows(out, "SELECT output_path FROM renders")]
