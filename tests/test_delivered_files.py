"""A delivered file never changes (README, "Resume"): whatever happens to a run — an export
deleted, a master deleted, a kill inside a batch, a full disk — the folder it leaves after
the next run is byte-identical to one uninterrupted run's, and every ledger row matches
its file. Files respect the umask."""

from __future__ import annotations

import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, ledger_rows, run_cli
from .ledger_support import folder_state, small_project

# Minutes of renders: scheduled before the other files (tests/conftest.py).
pytestmark = pytest.mark.long

SEED = 20261201
# Runs the real command line with one thing made to fail, from inside the process: the
# process kills itself at the Nth render commit (just before or after it), or the disk
# "fills up" (ENOSPC) at the Nth fsync of a file being written.
WRAPPER = """
import errno, os, signal, sys
sys.path.insert(0, {repo!r})
import renderer.ledger.store
from renderer.cli.main import main

mode, limit, count = os.environ["FAIL_MODE"], int(os.environ["FAIL_AT"]), [0]
if mode in ("kill-before-commit", "kill-after-commit"):
    real = renderer.ledger.store.Ledger.add_render

    def add_render(self, record):
        count[0] += 1
        if count[0] == limit and mode == "kill-before-commit":
            os.kill(os.getpid(), signal.SIGKILL)
        row = real(self, record)
        if count[0] == limit:
            os.kill(os.getpid(), signal.SIGKILL)
        return row

    renderer.ledger.store.Ledger.add_render = add_render
else:
    real_fsync = os.fsync

    def fsync(fd):
        if not os.path.isdir(f"/proc/self/fd/{{fd}}"):
            count[0] += 1
            if count[0] >= limit:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    os.fsync = fsync
sys.exit(main(sys.argv[1:]))
"""


def files_of(out: Path) -> dict[str, bytes]:
    """Every deliverable in a folder (masters and exports), by path."""
    return {
        path.relative_to(out).as_posix(): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.suffix in (".png", ".jpg", ".webp")
        and not path.name.startswith(".")
        and "reproduce" not in path.parts
        and "report-" not in path.parent.name
    }


def run_failing(project, out: Path, mode: str, at: int, tmp_path: Path) -> int:
    script = tmp_path / "failing_campaign.py"
    script.write_text(WRAPPER.format(repo=str(REPO)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FAIL_MODE": mode, "FAIL_AT": str(at)}
    done = subprocess.run(
        [sys.executable, str(script), "render", str(project.campaign_path), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.returncode


@pytest.fixture(scope="module")
def clean(tmp_path_factory, demo_models):
    """One uninterrupted run of 3 × 3 variants in batches of 3, with the demo's retouch,
    headline and channel export: the folder every other run must end up equal to."""
    root = tmp_path_factory.mktemp("clean")
    project = small_project(
        root, seeds=(1, 2, 3), backgrounds=("studio", "mountain", "beach"), postprocess=True
    )
    result = run_cli("render", project.campaign_path, "--out", root / "out")
    assert result.code == 0, result.stderr
    return project, files_of(root / "out")


def test_a_deleted_export_is_rebuilt_from_its_master_without_rendering(clean, tmp_path):
    project, expected = clean
    out = tmp_path / "out"
    assert run_cli("render", project.campaign_path, "--out", out).code == 0
    export = next(name for name in expected if "/exports/" in name)
    master = next(name for name in expected if "/exports/" not in name)
    (out / export).unlink()
    before = (out / master).stat().st_mtime_ns
    result = run_cli("render", project.campaign_path, "--out", out, "--json")
    assert result.code == 0, result.stderr
    assert result.json()["counts"]["rendered"] == 0
    assert "rebuilt 1 export(s)" in result.stderr
    assert files_of(out) == expected
    assert (out / master).stat().st_mtime_ns == before  # the masters were not touched
    assert ledger_rows(out, "SELECT COUNT(*) FROM renders") == [(9,)]


def test_a_deleted_master_renders_again_in_its_recorded_batch(clean, tmp_path):
    project, expected = clean
    out = tmp_path / "out"
    assert run_cli("render", project.campaign_path, "--out", out).code == 0
    batch = ledger_rows(out, "SELECT batch_json FROM renders WHERE id = 2")
    (middle,) = ledger_rows(out, "SELECT output_path FROM renders WHERE id = 2")[0]
    (out / middle).unlink()  # the middle of a batch of three: it renders beside the other two
    others = {
        name: (out / name).stat().st_mtime_ns
        for name in expected
        if name != middle and "/exports/" not in name
    }
    result = run_cli("render", project.campaign_path, "--out", out, "--json")
    assert result.code == 0, result.stderr
    assert result.json()["counts"]["rendered"] == 1
    assert files_of(out) == expected
    assert {name: (out / name).stat().st_mtime_ns for name in others} == others
    assert ledger_rows(out, "SELECT batch_json FROM renders WHERE id = 10") == batch
    assert "co-members: 2 done image(s) render again in 1 batch(es)" in result.stderr
    assert "rendered again with other bytes" not in result.stderr  # the same bytes as before


@pytest.mark.parametrize("trial", range(2))  # tests/test_crash_safety.py kills at random too
def test_kills_inside_batches_resume_to_the_uninterrupted_folder(clean, tmp_path, trial):
    """Seeded random kills at render commits (inside a batch, or between a file's rename
    and its commit), run after run, then a run that finishes: the same folder as one run."""
    project, expected = clean
    out, rng = tmp_path / "out", random.Random(SEED + trial)
    kills = []
    for _ in range(3):
        mode = rng.choice(("kill-before-commit", "kill-after-commit"))
        at = rng.randint(1, 5)
        code = run_failing(project, out, mode, at, tmp_path)
        kills.append((mode, at, code))
        state = folder_state(out)
        assert state.broken_pngs == [] and state.rows_without_file == [], kills
        assert state.integrity == "ok"
    assert any(code == -9 for _, _, code in kills), kills
    assert run_cli("render", project.campaign_path, "--out", out).code == 0
    assert files_of(out) == expected, kills
    state = folder_state(out)
    assert state.files_without_row == [] and state.rows_without_file == []
    # Co-members render again but are never committed again: one row per variant.
    assert sorted(state.rows_per_variant.values()) == [1] * 9


def test_a_full_disk_stops_the_run_and_the_resume_is_byte_identical(clean, tmp_path):
    project, expected = clean
    out = tmp_path / "out"
    assert run_failing(project, out, "no-space", 7, tmp_path) == 3
    state = folder_state(out)
    assert state.temp_files == [] and state.broken_pngs == []
    result = run_cli("render", project.campaign_path, "--out", out)
    assert result.code == 0, result.stderr
    assert files_of(out) == expected


def test_every_file_respects_the_umask(clean, tmp_path):
    project, _ = clean
    out = tmp_path / "out"
    umask = os.umask(0o022)  # what the render processes inherit
    try:
        assert run_cli("render", project.campaign_path, "--out", out).code == 0
        assert run_cli("report", "--out", out, "--grid", "seed", "background").code == 0
    finally:
        os.umask(umask)
    written = [
        path
        for path in out.rglob("*")
        if path.is_file()
        and path.name not in ("ledger.sqlite", ".campaign.lock")
        and not path.name.startswith("ledger.sqlite-")
    ]
    assert any(path.suffix == ".html" for path in written)
    assert any("grids" in path.parent.name for path in written)
    modes = {
        path.relative_to(out).as_posix(): stat.S_IMODE(path.stat().st_mode) for path in written
    }
    assert set(modes.values()) == {0o644}, modes
