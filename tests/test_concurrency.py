"""Two `campaign render` processes on one output folder: the second waits for the first
(or refuses with --no-wait); never a double render, never a corrupt ledger."""

from __future__ import annotations

import json
import os
import subprocess

from renderer.ledger.locking import hold_output_folder

from .conftest import CAMPAIGN_BIN, run_cli
from .ledger_support import folder_state, small_project


def test_two_renders_at_once_share_the_folder_safely(tmp_path, demo_models):
    project = small_project(tmp_path, seeds=(1, 2, 3, 4), batch_size=2)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [str(CAMPAIGN_BIN), "render", str(project.campaign_path), "--out", str(out), "--json"]
    processes = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    results = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, results, strict=True):
        assert process.returncode == 0, stderr
    rendered = sorted(json.loads(stdout)["counts"]["rendered"] for stdout, _ in results)
    assert rendered == [0, 4], "one process rendered everything, the other nothing"
    waiter = [stderr for _, stderr in results if "is in use by another campaign render" in stderr]
    assert len(waiter) == 1 and "waiting for it to finish" in waiter[0]
    state = folder_state(out)
    assert state.integrity == "ok"
    assert sorted(state.rows_per_variant.values()) == [1, 1, 1, 1]
    assert state.files_without_row == [] and state.rows_without_file == []


def test_no_wait_refuses_while_another_render_holds_the_folder(tmp_path, demo_models):
    project = small_project(tmp_path, seeds=(1,), batch_size=1)
    out = tmp_path / "out"
    with hold_output_folder(out, holder="spring-campaign"):
        result = run_cli("render", project.campaign_path, "--out", out, "--no-wait")
    assert result.code == 3, result.stderr
    assert f"in use by another campaign render (pid {os.getpid()}, spring-campaign" in result.stderr
    assert "nothing was rendered" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "ledger.sqlite").exists()
    assert list(out.rglob("*.png")) == []


def test_the_lock_is_released_when_its_holder_dies(tmp_path):
    """flock belongs to the process: a killed holder leaves no stale lock behind."""
    out = tmp_path / "out"
    code = (
        "import sys, os; from pathlib import Path; "
        "from renderer.ledger.locking import hold_output_folder\n"
        "with hold_output_folder(Path(sys.argv[1]), holder='doomed'):\n"
        "    print('held', flush=True); os.kill(os.getpid(), 9)"
    )
    done = subprocess.run(
        [str(CAMPAIGN_BIN.parent / "python"), "-c", code, str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "held" and done.returncode == -9
    with hold_output_folder(out, wait=False, holder="next"):
        pass
