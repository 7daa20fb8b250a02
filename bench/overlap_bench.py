"""`make bench`: the pipelined local executor versus the serial one, side by side in one run.

(a) The real tiny demo models on this machine, whole process: `campaign render` of the
    36-variant demo campaign (64 px) with `render.pipeline: false` and `true`, fresh
    processes (imports and model loading included), run REPEATS times alternately; the
    best time counts. Here the denoiser and the post-processing share the same CPU cores,
    so overlap can only win what the cores leave idle.
(b) A simulated accelerator: a renderer that holds each batch for HOLD_S seconds per image
    without using the CPU (time.sleep, as a process waiting on a GPU does) and hands back
    photo-like 1024x1024 images, with the real finish stage (face detection, the demo's
    retouch, logo and headline, the tiny CLIP scoring, PNG metadata encoding and the feed
    export) and the real write, through `LocalExecutor` and `PipelinedExecutor`. It prints
    `overlap ratio = end-to-end img/s ÷ render-only img/s` (1.0: post-processing costs the
    accelerator nothing; target for the pipelined executor: at least 0.9). The driver's
    ledger commit is not in (b); (a) has it. It runs once per share in LAUNCH_SHARES: that
    share of each image's hold is Python work holding the GIL (a fixed number of loop
    iterations, timed alone first), as a real denoising loop spends launching kernels
    between the GPU's waits. The finishing threads then compete with it for the GIL, so
    its hold grows with the Python that they run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPEATS = int(os.environ.get("BENCH_REPEATS", "2"))
HOLD_S = float(os.environ.get("BENCH_HOLD_S", "1.0"))  # per image, as a GPU would render
CALIBRATION_ITERATIONS = 2_000_000  # loop iterations timed once to size a "launch"
# Shares of the hold spent in Python holding the GIL (kernel launches), one run of (b) each.
LAUNCH_SHARES = [
    float(share) for share in os.environ.get("BENCH_LAUNCH_SHARES", "0,0.6").split(",")
]
SIDE = 1024
BATCH = 4
TARGET = 0.9


def demo_campaign(
    folder: Path, *, pipeline: bool, side: int = 64, variants: dict | None = None
) -> Path:
    campaign = yaml.safe_load((REPO / "campaigns" / "demo.yaml").read_text())
    campaign.update(
        recipes_dir=str(REPO / "recipes"), brand=str(REPO / "campaigns" / campaign["brand"])
    )
    campaign["scoring"]["clip_model"] = str(REPO / "models" / "demo" / "clip")
    campaign["size"]["short_side"] = side
    campaign["render"]["pipeline"] = pipeline
    campaign["matrix"]["axes"].update(variants or {})
    path = folder / f"demo-{'pipelined' if pipeline else 'serial'}-{side}.yaml"
    path.write_text(yaml.safe_dump(campaign, sort_keys=False))
    return path


def whole_process(folder: Path) -> None:
    """(a): fresh `campaign render` processes of this checkout, alternately."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    best = {False: float("inf"), True: float("inf")}
    for attempt in range(REPEATS):
        for pipeline in (False, True):
            out = folder / f"out-{pipeline}-{attempt}"
            command = [
                sys.executable,
                "-m",
                "renderer.cli.main",
                "render",
                str(demo_campaign(folder, pipeline=pipeline)),
                "--out",
                str(out),
            ]
            started = time.perf_counter()
            subprocess.run(
                command,
                check=True,
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            best[pipeline] = min(best[pipeline], time.perf_counter() - started)
    print(
        f"(a) demo campaign, 36 variants at 64 px, real tiny sd15 models, {os.cpu_count()} "
        f"CPUs, best of {REPEATS}, fresh processes:"
    )
    for pipeline, label in ((False, "serial"), (True, "pipelined")):
        print(f"  {label:10} {best[pipeline]:7.2f} s  {36 / best[pipeline]:6.2f} img/s")
    print(f"  pipelined vs serial: {best[False] / best[True]:.2f}x")


class HoldingRenderer:
    """Stands in for the denoiser on an accelerator: holds each batch HOLD_S per image,
    ``launch_share`` of it in Python work holding the GIL and the rest without the CPU,
    and returns photo-like images of the variants' size."""

    load_seconds = 0.0
    device = "simulated"

    def __init__(self, launch_share: float = 0.0) -> None:
        import cv2
        from PIL import Image

        from tests.synthetic import draw_face, shapes, with_noise

        self.timings: dict[str, float] = {}
        self.launch_share = launch_share
        # Loop iterations per second on this machine, alone: a launch takes a fixed count.
        started = time.perf_counter()
        self._spin(CALIBRATION_ITERATIONS)
        self.iterations_per_s = CALIBRATION_ITERATIONS / (time.perf_counter() - started)
        self.images = []
        for seed in range(BATCH):  # flat shapes and a face, upscaled smooth, mild noise
            scene = shapes(size=256, seed=seed)
            scene[64:192, 80:176] = draw_face((256, 256), 110)[64:192, 80:176]
            scene = cv2.resize(scene, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
            self.images.append(Image.fromarray(with_noise(scene, sigma=4, seed=seed)))

    @staticmethod
    def _spin(iterations: int) -> None:
        """Python bytecode only: it holds the GIL except at the interpreter's switches."""
        total = 0
        for step in range(iterations):
            total += step & 1

    def render_resilient(self, specs, files):
        for _ in specs:
            self._spin(int(self.launch_share * HOLD_S * self.iterations_per_s))
            time.sleep((1 - self.launch_share) * HOLD_S)
        indices = tuple(range(len(specs)))
        return [(self.images[index % BATCH].copy(), indices) for index in indices]

    def fingerprint(self) -> dict[str, str]:
        return {"device": self.device}

    def release(self) -> None:
        """Nothing loaded."""


def simulated_accelerator(folder: Path, launch_share: float) -> None:
    """(b): the real finish and write stages behind a renderer that mostly waits."""
    from renderer.plan.jobs import Job
    from renderer.plan.variants import cut_batches, make_plan
    from renderer.produce.finishing import Assets
    from renderer.produce.scoring import Scoring
    from renderer.produce.worker import FINISH_THREADS, Worker
    from renderer.run.executors import LocalExecutor, PipelinedExecutor
    from renderer.validate.campaign import load_campaign

    campaign = load_campaign(
        demo_campaign(
            folder,
            pipeline=True,
            side=SIDE,
            variants={
                "aspect": ["1:1"],
                "background": ["studio", "mountain"],
                "seed": [1, 2, 3, 4, 5, 6, 7, 8],
            },
        )
    )
    variants = make_plan(campaign).variants
    jobs = [Job.all_of(batch) for batch in cut_batches(variants, {"sd15": BATCH})]
    files = campaign.files()
    assets = Assets(files)
    assets.prepare(campaign)
    worker = Worker(HoldingRenderer(launch_share), files, Scoring(campaign), assets=assets)
    worker.finish(worker.render(jobs[0]))  # warm up (first calls of OpenCV, CLIP, fonts)
    started = time.perf_counter()
    for job in jobs:
        worker.render(job)
    render_only = len(variants) / (time.perf_counter() - started)
    rates = {}
    for label, executor in (("serial", LocalExecutor), ("pipelined", PipelinedExecutor)):
        run = executor(campaign, folder / f"out-{label}-{launch_share:g}", lambda _: None, worker)
        started = time.perf_counter()
        produced = sum(len(result.produced) for result in run.produce_all(jobs))
        assert produced == len(variants), (label, produced)
        rates[label] = len(variants) / (time.perf_counter() - started)
    print(
        f"(b) simulated accelerator: {len(variants)} variants at {SIDE}x{SIDE} in batches of "
        f"{BATCH}, held {HOLD_S:g} s per image (BENCH_HOLD_S), {launch_share:.0%} of it in "
        f"Python holding the GIL (BENCH_LAUNCH_SHARES), real finish and write, "
        f"{os.cpu_count()} CPUs, {FINISH_THREADS} finishing thread(s):"
    )
    print(f"  render only {render_only:6.3f} img/s")
    finish_each = 1 / rates["serial"] - 1 / render_only
    print(f"  finish + write, serial: {finish_each:.3f} s per image")
    for label, rate in rates.items():
        ratio = rate / render_only
        verdict = (
            ""
            if label == "serial"
            else f"  (target >= {TARGET}: {'met' if ratio >= TARGET else 'MISSED'})"
        )
        print(f"  {label:10} {rate:6.3f} img/s  overlap ratio = {ratio:.2f}{verdict}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="overlap-bench-") as scratch:
        for launch_share in LAUNCH_SHARES:
            simulated_accelerator(Path(scratch), launch_share)
        whole_process(Path(scratch))


if __name__ == "__main__":
    main()
