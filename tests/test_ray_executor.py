"""The Ray executor on a local cluster (`ray.init(num_cpus=2)`) with the tiny demo models."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from .conftest import CAMPAIGN_BIN, REPO, ledger_rows, pngs, run_cli

# Minutes of renders: scheduled before the other files (tests/conftest.py).
pytestmark = pytest.mark.long

DEMO = REPO / "campaigns" / "demo.yaml"
ROW_COLUMNS = (
    "variant_id, output_path, output_sha256, seed, current.status, renders.scores_json, batch_json"
)


@pytest.fixture
def ray_env(monkeypatch):
    # Ray's socket paths must stay under ~107 characters: a short folder of the test's own.
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    monkeypatch.setenv("CAMPAIGN_RAY_TMPDIR", folder)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_ray_output_equals_the_local_executor_byte_for_byte(tmp_path, demo_models, ray_env):
    local = run_cli("render", DEMO, "--out", tmp_path / "local")
    assert local.code == 0, local.stderr
    distributed = run_cli("render", DEMO, "--out", tmp_path / "ray", "--executor", "ray", "--json")
    assert distributed.code == 0, distributed.stderr
    assert "ray: 2 worker(s)" in distributed.stderr
    assert distributed.json()["counts"]["rendered"] == 36
    local_pngs, ray_pngs = pngs(tmp_path / "local" / "demo"), pngs(tmp_path / "ray" / "demo")
    assert len(ray_pngs) == 36 and ray_pngs == local_pngs
    query = (
        f"SELECT {ROW_COLUMNS} FROM renders JOIN current_decisions current "
        "ON current.render_id = renders.id ORDER BY variant_id"
    )
    assert ledger_rows(tmp_path / "ray", query) == ledger_rows(tmp_path / "local", query)
    (executor,) = ledger_rows(tmp_path / "ray", "SELECT executor FROM runs")[0]
    assert executor == "ray"


def test_a_killed_actor_is_replaced_and_every_variant_renders_once(tmp_path, demo_models, ray_env):
    campaign = yaml.safe_load(DEMO.read_text())
    campaign.update(
        recipes_dir=str(REPO / "recipes"), brand=str(REPO / "campaigns" / campaign["brand"])
    )
    campaign["scoring"]["clip_model"] = str(demo_models / "clip")
    campaign["render"]["batch_size"] = 2  # 18 batches: time to kill a worker mid-run
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(campaign, sort_keys=False))
    out = tmp_path / "out"
    process = subprocess.Popen(
        [str(CAMPAIGN_BIN), "render", str(path), "--out", str(out), "--executor", "ray"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        killed = kill_a_worker_after_first_commit(out / "ledger.sqlite", process)
        _, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert killed, "no worker was found to kill"
    assert process.returncode == 0, stderr
    assert "a worker died on batch" in stderr
    counts = ledger_rows(out, "SELECT variant_id, COUNT(*) FROM renders GROUP BY variant_id")
    assert len(counts) == 36 and {count for _, count in counts} == {1}
    assert len(pngs(out / "demo")) == 36


def kill_a_worker_after_first_commit(ledger: Path, process: subprocess.Popen) -> bool:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if ledger.exists() and _committed(ledger) >= 2:
            workers = [
                p
                for p in psutil.process_iter(["cmdline"])
                if any("ray::RenderWorker" in part for part in p.info["cmdline"] or [])
            ]
            busy = [p for p in workers if any(".produce" in part for part in p.info["cmdline"])]
            for worker in (busy or workers)[:1]:
                worker.send_signal(signal.SIGKILL)
                return True
        time.sleep(0.2)
    return False


def _committed(ledger: Path) -> int:
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM renders").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_the_services_runner_keeps_ray_workers_and_their_models_warm(
    tmp_path, demo_models, ray_env
):
    """As `campaign serve --executor ray` runs jobs: the second run takes the first run's
    actor, whose pipelines are still loaded, and gives the first run's bytes."""
    import ray

    from renderer.produce import warm
    from renderer.run import ray_executor
    from renderer.run.execute import render_campaign

    from .scratch import Scratch

    said: list[str] = []
    warm.keep_models_warm(16 << 30, said.append)
    campaign = Scratch(tmp_path / "c").write()
    try:
        for out in ("first", "second"):
            summary = render_campaign(
                campaign,
                tmp_path / out,
                executor="ray",
                workers=1,
                log=said.append,
                show_progress=False,
            )
            assert summary.rendered == 2
    finally:
        warm._WARM.clear()
        for actors in ray_executor._KEPT.values():
            for actor in actors:
                ray.kill(actor)
        ray_executor._KEPT.clear()
        ray.shutdown()
    assert any(line.endswith("1 kept warm from the last run") for line in said), said
    assert "ray: worker 1: warm: pipelines of sd15 already loaded" in said
    assert pngs(tmp_path / "second" / "c") == pngs(tmp_path / "first" / "c")
