"""The ledger at campaign scale (issue: ledger, resume, crash safety).

1. **Re-running a finished 1,000-variant campaign** (the demo grown to 5 products x 4
   backgrounds x 5 aspect ratios x 10 seeds, logo on): the timed command is the real
   ``campaign render`` in a fresh process; it must render nothing, in under 3 s wall. Each
   re-run loads and validates the campaign, plans 1,000 variants, checks 1,000 ledger rows
   and hashes 1,000 files, records the run and writes the report.

   The first, populating run goes through the real execute path (``render_campaign``:
   overlay, PNG metadata, atomic writes, one ledger transaction per image, report) with
   the diffusers pipeline and CLIP replaced by stubs that return flat images and fixed
   scores, because rendering 1,000 images on this CPU takes minutes and the re-run does
   not look at pixels. ``--real`` renders them for real instead.
2. **Ledger write rate**: ``Ledger.add_render`` with the real schema, one transaction per
   row (as the renderer commits), ``synchronous=FULL`` in WAL mode, rows built from real
   variant specs; reported in rows/s.

Usage: python bench/ledger_bench.py [--real] [--rows N] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CAMPAIGN_BIN = Path(sys.executable).parent / "campaign"


def thousand_variant_campaign(folder: Path) -> Path:
    campaign = yaml.safe_load((REPO / "campaigns" / "demo.yaml").read_text())
    campaign["name"] = "thousand"
    campaign["recipes_dir"] = str(REPO / "recipes")
    campaign["brand"] = str(REPO / "campaigns" / campaign["brand"])
    campaign["scoring"]["clip_model"] = str(
        (REPO / "campaigns" / campaign["scoring"]["clip_model"]).resolve()
    )
    axes = campaign["matrix"]["axes"]
    axes["product"] += [
        {"name": "tent", "sku": "KR-404", "colour": "green"},
        {"name": "head lamp", "sku": "KR-505", "colour": "red"},
    ]
    axes["background"] = ["studio", "mountain", "beach", "forest"]
    axes["aspect"] = ["1:1", "9:16", "16:9", "4:5", "3:2"]
    axes["seed"] = list(range(1, 11))
    campaign["render"] = {"batch_size": 36}
    path = folder / "thousand.yaml"
    path.write_text(yaml.safe_dump(campaign, sort_keys=False))
    return path


def populate_with_stubs(campaign: Path, out: Path, variants: int = 1000) -> float:
    """The real execute path with the two model seams stubbed (see the module docstring):
    ``campaign``'s ``variants`` images into ``out``; returns the seconds it took."""
    from PIL import Image

    import postprocess.scoring as scoring
    import renderer.render.diffusers_renderer as render
    from renderer.run.execute import render_campaign

    class FlatRenderer:
        def __init__(self, options=None, *, allow_pickle=False, log=None, recipes=()):
            self.options, self.device, self.dtype_name = options, "cpu", "float32"
            self.load_seconds = 0.0  # nothing loads

        def fingerprint(self):
            return {"device": "stub (ledger benchmark)", "threads": os.cpu_count()}

        def render_batch(self, specs, files):
            return [
                Image.new("RGB", (spec.width, spec.height), (spec.seed % 256, 90, 120))
                for spec in specs
            ]

        def render_resilient(self, specs, files):
            call = tuple(range(len(specs)))
            return [(image, call) for image in self.render_batch(specs, files)]

    class FixedScorer(scoring.ClipScorer):
        """One fixed unit vector for every image and text: every cosine is 1."""

        def __init__(self):  # no model
            pass

        def embed_images(self, images):
            return np.full((len(images), 32), 32**-0.5, dtype=np.float32)

        embed_texts = embed_images

    render.DiffusersRenderer = FlatRenderer
    scoring.ClipScorer.from_folder = classmethod(lambda cls, *args, **kwargs: FixedScorer())
    started = time.perf_counter()
    summary = render_campaign(campaign, out, log=lambda _: None, show_progress=False)
    assert summary.rendered == variants, summary
    return time.perf_counter() - started


def rerun(campaign: Path, out: Path) -> tuple[float, dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        [str(CAMPAIGN_BIN), "render", str(campaign), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"re-run failed ({done.returncode}): {done.stderr}")
    return wall, json.loads(done.stdout)


def ledger_write_rate(rows: int, folder: Path) -> float:
    from renderer.core.hashing import sha256_bytes
    from renderer.ledger.records import RenderRecord
    from renderer.ledger.store import Ledger
    from renderer.plan.variants import make_plan
    from renderer.validate.campaign import load_campaign

    plan = make_plan(load_campaign(thousand_variant_campaign(folder)))
    variants = list(plan.variants)
    inputs = [
        {"role": "checkpoint", "path": "/models/sd15.safetensors", "sha256": "a" * 64},
        {"role": "lora", "path": "/models/lora-style.safetensors", "sha256": "b" * 64},
        {"role": "logo", "path": "/brand/logo.png", "sha256": "c" * 64},
    ]
    with Ledger(folder / "rate.sqlite") as ledger:
        run_id = ledger.start_run(
            campaign="thousand",
            campaign_file="thousand.yaml",
            recipes=[("demo-sd15", 1)],
            executor="local",
            environment={"device": "cpu"},
            variant_ids=[v.id for v in variants],
            to_render={v.id for v in variants},
        )
        environment_hash = ledger.record_environment({"device": "cpu"})
        records = [
            RenderRecord(
                run_id=run_id,
                variant_id=v.id,
                campaign="thousand",
                recipe_name="demo-sd15",
                recipe_version=1,
                recipe_hash="d" * 64,
                variant_json=v.spec_json,
                seed=v.seed,
                axes=v.axes,
                prompt=v.prompt,
                width=v.width,
                height=v.height,
                input_files=inputs,
                output_path=f"thousand/{v.output_name}.png",
                output_sha256=sha256_bytes(v.id.encode()),
                output_bytes=12345,
                environment_hash=environment_hash,
                scores={"clip_prompt": 0.2, "clip_brand": 0.95},
                render_seconds=0.1,
                rerender_reason=None,
                batch=[v.id],
            )
            for v in (variants * (rows // len(variants) + 1))[:rows]
        ]
        started = time.perf_counter()
        for record in records:
            ledger.add_render(record)
        seconds = time.perf_counter() - started
        assert ledger.integrity_check() == "ok"
    return rows / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", action="store_true", help="render the 1,000 images for real")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as temp:
        folder = Path(temp)
        campaign, out = thousand_variant_campaign(folder), folder / "out"
        if args.real:
            seconds, summary = rerun(campaign, out)
            assert summary["counts"]["rendered"] == 1000, summary
            populated = f"rendered for real in {seconds:.1f} s"
        else:
            populated = (
                f"populated through the execute path with stub models in "
                f"{populate_with_stubs(campaign, out):.1f} s"
            )
        walls, summary = [], {}
        for _ in range(args.repeats):
            wall, summary = rerun(campaign, out)
            assert summary["counts"] == {
                "planned": 1000,
                "rendered": 0,
                "skipped": 1000,
                "passed": 1000,
                "review": 0,
                "failed": 0,
            }, summary["counts"]
            walls.append(wall)
        rate = ledger_write_rate(args.rows, folder)
    result = {
        "rerun_1000": {
            "populated": populated,
            "rendered": summary["counts"]["rendered"],
            "wall_s": [round(w, 3) for w in walls],
            "median_wall_s": round(statistics.median(walls), 3),
            "under_3_s": statistics.median(walls) < 3.0,
        },
        "ledger_write_rows_per_s": round(rate, 1),
        "ledger_rows": args.rows,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    print(
        f"re-run of a finished 1,000-variant campaign: {summary['counts']['rendered']} "
        f"rendered, median {statistics.median(walls):.2f} s wall over {len(walls)} runs "
        f"({', '.join(f'{w:.2f}' for w in walls)}); ledger writes: {rate:,.0f} rows/s "
        f"(one transaction per row, synchronous=FULL, WAL)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
