"""bench/gpu_suite.py --smoke: every section of the GPU suite runs on CPU (tiny configs) and
lands in its JSON and its one table (README, "Benchmarks")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO

# Minutes of renders: scheduled before the other files (tests/conftest.py).
pytestmark = pytest.mark.long


def test_gpu_suite_smoke_writes_every_section_and_prints_the_table(tmp_path, demo_models):
    results = tmp_path / "gpu-smoke.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "gpu_suite.py"),
            "--smoke",
            "--modes",
            "fp8-storage,eager",
            "--json",
            str(results),
        ],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(results.read_text())
    assert report["smoke"] and report["device"].startswith("CPU")
    eager, stored = report["denoise"]  # fp8-storage after eager, whatever the order given
    assert [(row["family"], row["mode"]) for row in (eager, stored)] == [
        ("sd15", "eager"),
        ("sd15", "fp8-storage"),
    ]
    assert stored["denoiser_gib"] < 0.5 * eager["denoiser_gib"]  # fp32 -> fp8, norms kept
    (switching,) = report["lora_switch"]  # smoke: hot-swap only
    assert switching["mode"] == "hotswap" and switching["recompiles"] == 0
    assert [(row["mode"], row["images"]) for row in report["campaign"]] == [
        ("serial", 2),
        ("pipelined", 2),
    ]
    table = done.stdout[done.stdout.index("section  what") :]
    for section in ("denoise  sd15", "lora     sd15", "campaign demo"):
        assert section in table
