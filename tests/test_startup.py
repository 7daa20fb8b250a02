"""Commands that do not render start without the image and model stack (issue 15).

Each command runs as the real ``campaign`` entry point in a fresh interpreter under
``python -X importtime``, which lists every module the process imported; none of torch,
diffusers, transformers, open_clip, OpenCV or numpy may be among them (``gate`` and
``compare`` may load numpy: a run's consistency is computed from its stored CLIP
embeddings). What is checked is behaviour — which modules load — never a time: the figures
are ``bench/startup_bench.py``'s.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from renderer.core.hashing import sha256_bytes
from renderer.ledger.decisions import campaign_gates, decide_run
from renderer.ledger.records import RenderRecord
from renderer.ledger.store import Ledger
from renderer.plan.variants import make_plan
from renderer.validate.campaign import load_campaign

from .conftest import CAMPAIGN_BIN, REPO

HEAVY = frozenset({"torch", "diffusers", "transformers", "open_clip", "cv2", "numpy"})
DEMO = REPO / "campaigns" / "demo.yaml"


def imported_packages(*args: str | Path, code: int = 0) -> set[str]:
    """The top-level packages ``campaign ARGS`` imported; it must exit with ``code``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(CAMPAIGN_BIN), *map(str, args)],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == code, done.stderr[-3000:]
    # Lines read "import time: <self µs> | <cumulative µs> | <indent><module>".
    fields = [
        line.removeprefix("import time:").split("|")
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    ]
    return {module.strip().split(".")[0] for own, _, module in fields if own.strip().isdigit()}


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory, demo_models) -> tuple[Path, str]:
    """An output folder whose ledger holds a decided run of the demo's first three
    variants, with CLIP embeddings (rows only: these commands read the ledger, and a file
    not on disk shows as missing); and the first variant's id."""
    campaign = load_campaign(DEMO)
    variants = make_plan(campaign).variants[:3]
    out = tmp_path_factory.mktemp("startup") / "out"
    out.mkdir()
    with Ledger(out / "ledger.sqlite") as ledger:
        run_id = ledger.start_run(
            campaign=campaign.spec.name,
            campaign_file=str(DEMO),
            recipes=[("demo-sd15", 1)],
            executor="local",
            environment={"device": "cpu"},
            variant_ids=[variant.id for variant in variants],
            to_render={variant.id for variant in variants},
        )
        environment_hash = ledger.record_environment({"device": "cpu"})
        for index, variant in enumerate(variants):
            ledger.add_render(
                RenderRecord(
                    run_id=run_id,
                    variant_id=variant.id,
                    campaign=campaign.spec.name,
                    recipe_name="demo-sd15",
                    recipe_version=1,
                    recipe_hash="0" * 64,
                    variant_json=variant.spec_json,
                    seed=variant.seed,
                    axes=variant.axes,
                    prompt=variant.prompt,
                    width=variant.width,
                    height=variant.height,
                    input_files=[],
                    output_path=variant.output_path,
                    output_sha256=sha256_bytes(variant.id.encode()),
                    output_bytes=1,
                    environment_hash=environment_hash,
                    scores={"clip_prompt": 0.3, "clip_brand": 0.95, "text_readback": 1.0},
                    render_seconds=0.1,
                    rerender_reason=None,
                    batch=[variant.id],
                    embedding=struct.pack("<4f", 1.0, index, 0.5, 0.25),
                )
            )
        decide_run(ledger, run_id, campaign_gates(campaign), source="render")
        ledger.finish_run(run_id, status="finished", rendered=len(variants), skipped=0)
    return out, variants[0].id


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        (
            "validate",
            "campaigns/demo.yaml",
            "recipes/demo-sd15.yaml",
            "campaigns/brands/kestrel/brand.yaml",
            "recipes/kestrel-style.train.yaml",
        ),
        ("plan", "campaigns/demo.yaml"),
        ("plan", "campaigns/demo-refine.yaml", "--json"),
    ],
    ids=["help", "validate", "plan", "plan-refine"],
)
def test_reading_files_loads_no_image_or_model_library(args, demo_models):
    assert imported_packages(*args) & HEAVY == set()


def test_refusing_a_bad_file_loads_no_image_or_model_library():
    assert (
        imported_packages("validate", "tests/bad/recipes/unknown-family.yaml", code=2) & HEAVY
        == set()
    )


@pytest.mark.parametrize(
    "command", ["history", "history --renders", "show", "show --json", "report"]
)
def test_reading_the_ledger_loads_no_image_or_model_library(command, recorded_run, tmp_path):
    out, variant_id = recorded_run
    name, *options = command.split()
    target = {"show": [variant_id], "report": ["--to", tmp_path / "report.html"]}.get(name, [])
    assert imported_packages(name, *target, *options, "--out", out) & HEAVY == set()


@pytest.mark.parametrize("command", ["gate", "compare"])
def test_deciding_again_loads_numpy_for_consistency_only(command, recorded_run):
    out, _ = recorded_run
    loaded = imported_packages(command, "--out", out)
    assert "numpy" in loaded  # the stored embeddings: consistency needs it
    assert loaded & HEAVY == {"numpy"}
