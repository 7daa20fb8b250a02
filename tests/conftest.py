"""Shared fixtures: the demo models, a scratch project, and the real `campaign` entry point."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

os.environ["HF_HUB_OFFLINE"] = "1"
# One torch thread in this process and every `campaign` it starts: `make test` runs the
# suite in parallel processes (pytest-xdist), one per core, and tiny renders gain nothing
# from a second thread. Pixels are only ever compared between runs of the same setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
CAMPAIGN_BIN = Path(sys.executable).parent / "campaign"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test did not run: it fails, so a green run means every test ran. A test
    needing a tool gets it from `make test` (the Makefile's system-deps)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} was skipped ({reason}); a skip is a test that did "
            "not run: install what it needs (`make system-deps`)"
        )


def pytest_collection_modifyitems(items):
    """Files marked ``long`` (minutes of renders: kills and resumes, Ray, the GPU suite's
    smoke run) first, so the parallel test processes (``make test``) finish together."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def run_cli(*args: str | Path, cwd: Path = REPO) -> CliResult:
    """Run the installed console script, as a user would."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [str(CAMPAIGN_BIN), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="session")
def demo_models() -> Path:
    """The demo models `make test` builds; built here when a test runs on its own."""
    folder = REPO / "models" / "demo"
    if not (folder / "MANIFEST.json").is_file():
        from renderer.demo.models import build_demo_models

        build_demo_models(folder)
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Tiny renders are faster on one thread on shared cores (never compare pixels across
    thread counts)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@dataclass
class Project:
    """A scratch copy of the demo recipe/campaign layout that tests can edit."""

    root: Path
    recipe: dict
    campaign: dict

    @property
    def recipe_path(self) -> Path:
        return self.root / "recipes" / f"{self.recipe['name']}.yaml"

    @property
    def campaign_path(self) -> Path:
        return self.root / "campaigns" / f"{self.campaign['name']}.yaml"

    def write(self) -> Path:
        self.recipe_path.parent.mkdir(parents=True, exist_ok=True)
        self.campaign_path.parent.mkdir(parents=True, exist_ok=True)
        self.recipe_path.write_text(yaml.safe_dump(self.recipe, sort_keys=False))
        self.campaign_path.write_text(yaml.safe_dump(self.campaign, sort_keys=False))
        return self.campaign_path


@pytest.fixture
def project(tmp_path: Path, demo_models: Path) -> Project:
    """The demo sd15 recipe and campaign, with absolute paths, in a temp folder."""
    recipe = yaml.safe_load((REPO / "recipes" / "demo-sd15.yaml").read_text())
    for ref in [recipe["checkpoint"], *recipe["loras"]]:
        ref["path"] = str((REPO / "recipes" / ref["path"]).resolve())
    if recipe["checkpoint"].get("config"):
        recipe["checkpoint"]["config"] = str(
            (REPO / "recipes" / recipe["checkpoint"]["config"]).resolve()
        )
    campaign = yaml.safe_load((REPO / "campaigns" / "demo.yaml").read_text())
    campaign["brand"] = str(REPO / "campaigns" / campaign["brand"])
    campaign["scoring"]["clip_model"] = str(
        (REPO / "campaigns" / campaign["scoring"]["clip_model"]).resolve()
    )
    return Project(tmp_path, recipe, campaign)


def ledger_rows(out: Path, query: str, *params) -> list[tuple]:
    with sqlite3.connect(out / "ledger.sqlite") as db:
        return db.execute(query, params).fetchall()


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def copy_tree(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest
