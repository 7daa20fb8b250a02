"""`make bench`: the renderer versus hand-written diffusers code, side by side in one run.

1. Per family (sd15, sdxl, flux): the 36-variant demo campaign rendered by
   `campaign render` versus `bench/hand_loop.py` (pipeline loaded once, LoRAs loaded,
   one call per variant). Both are fresh processes (imports and model loading included),
   run REPEATS times alternately; the best time counts. The renderer does more work
   (logo overlay, CLIP scoring, PNG metadata, ledger, report).
2. A campaign interleaving three LoRA stacks: the renderer (base loaded once, adapters
   switched) versus reloading the pipeline and LoRAs for every variant, in process.
3. A second `campaign render` of the finished demo campaign (everything skipped).
"""

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REPEATS = int(os.environ.get("BENCH_REPEATS", "2"))
SIDE = int(os.environ.get("BENCH_SIDE", "64"))  # the images' short side (the demo's: 64 px)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(command: list[str]) -> float:
    """Wall seconds of a command; exit 0 or 1 (a render whose images fail a gate — at
    another BENCH_SIDE than the demo's, the demo's gates may — did all its work)."""
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def family_campaign(folder: Path, family: str) -> Path:
    campaign = yaml.safe_load((REPO / "campaigns" / "demo.yaml").read_text())
    campaign.update(
        name=f"bench-{family}",
        recipe=f"demo-{family}@1",
        recipes_dir=str(REPO / "recipes"),
        brand=str(REPO / "campaigns" / campaign["brand"]),
    )
    campaign["scoring"]["clip_model"] = str(REPO / "models" / "demo" / "clip")
    campaign["render"]["batch_size"] = "auto"
    campaign["size"]["short_side"] = SIDE
    path = folder / f"{family}.yaml"
    path.write_text(yaml.safe_dump(campaign, sort_keys=False))
    return path


def step_sums(out_dir: Path) -> list[tuple[str, float]]:
    """Seconds per step (base: the denoiser; postprocess, score, write: what only the
    renderer does) summed over a run's images, from the ledger's per-image shares."""
    sums: dict[str, float] = {}
    with sqlite3.connect(out_dir / "ledger.sqlite") as db:
        for (steps,) in db.execute("SELECT steps_json FROM renders"):
            for step in json.loads(steps):
                sums[step["step"]] = sums.get(step["step"], 0.0) + step["seconds"]
    return list(sums.items())


def renderer_versus_hand_loop(folder: Path) -> None:
    print(
        f"renderer vs hand-written diffusers loop (36 demo variants at {SIDE} px, best of "
        f"{REPEATS}, fresh processes, imports and model loading included):"
    )
    for family in ("sd15", "sdxl", "flux"):
        campaign = family_campaign(folder, family)
        plan = folder / f"{family}-plan.json"
        planned = subprocess.run(
            [str(BIN / "campaign"), "plan", str(campaign), "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        plan.write_text(json.dumps(json.loads(planned)["variants"]))
        renderer, hand = [], []
        for repeat in range(REPEATS):
            renderer.append(
                timed(
                    [
                        str(BIN / "campaign"),
                        "render",
                        str(campaign),
                        "--out",
                        str(folder / f"out-{family}-{repeat}"),
                    ]
                )
            )
            hand.append(
                timed(
                    [
                        sys.executable,
                        str(REPO / "bench" / "hand_loop.py"),
                        str(REPO / "recipes" / f"demo-{family}.yaml"),
                        str(plan),
                    ]
                )
            )
        print(
            f"  {family:5} hand loop {min(hand):6.2f} s   campaign render {min(renderer):6.2f} s"
            f"   speed-up {min(hand) / min(renderer):5.2f}x   (runs: hand "
            f"{', '.join(f'{t:.2f}' for t in hand)}; renderer "
            f"{', '.join(f'{t:.2f}' for t in renderer)})"
        )
        best = folder / f"out-{family}-{renderer.index(min(renderer))}"
        print(
            "        the renderer's best run, its images' steps summed (ledger): "
            + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in step_sums(best))
        )
    resume = timed(
        [
            str(BIN / "campaign"),
            "render",
            str(folder / "sd15.yaml"),
            "--out",
            str(folder / "out-sd15-0"),
        ]
    )
    print(f"  second render of the finished sd15 campaign (all skipped): {resume:.2f} s")


def render_paths(folder: Path) -> None:
    """The render path alone, in this process (imports done, no CLIP, no files): the hand
    loop (load once, one call per variant) versus DiffusersRenderer (load once, batches)."""
    sys.path.insert(0, str(REPO / "bench"))
    import hand_loop

    from renderer.plan.variants import cut_batches, make_plan
    from renderer.render.diffusers_renderer import DiffusersRenderer
    from renderer.validate.campaign import load_campaign

    print("render path only, in process (model load included, 36 variants):")
    for family in ("sd15", "sdxl", "flux"):
        plan = make_plan(load_campaign(family_campaign(folder, family)))
        variants = [
            {
                "prompt": v.prompt,
                "negative_prompt": v.negative_prompt,
                "seed": v.seed,
                "width": v.width,
                "height": v.height,
            }
            for v in plan.variants
        ]
        started = time.perf_counter()
        pipe, recipe = hand_loop.load(REPO / "recipes" / f"demo-{family}.yaml")
        hand_loop.render_all(pipe, recipe, variants)
        hand = time.perf_counter() - started
        del pipe
        started = time.perf_counter()
        renderer, files = DiffusersRenderer(), plan.campaign.files()
        for batch in cut_batches(plan.variants, 8):
            renderer.render_batch([variant.spec for variant in batch], files)
        ours = time.perf_counter() - started
        print(
            f"  {family:5} hand loop {hand:6.2f} s   renderer (batches of 8) {ours:6.2f} s   "
            f"speed-up {hand / ours:5.2f}x (target >= 1.5)"
        )


def three_stacks(folder: Path) -> None:
    from renderer.plan.variants import cut_batches, make_plan
    from renderer.render.diffusers_renderer import DiffusersRenderer
    from renderer.validate.campaign import load_campaign

    campaign = yaml.safe_load(family_campaign(folder, "sd15").read_text())
    campaign["name"] = "bench-stacks"
    axes = campaign["matrix"]["axes"]
    campaign["matrix"]["axes"] = {
        "product": axes["product"],
        "background": axes["background"],
        "aspect": ["1:1"],
        "seed": [1, 2],
        "look": ["both", "style", "brand"],
    }
    campaign["output"] += "-{{ look }}"
    campaign["overrides"] = [
        {"when": {"look": "style"}, "set": {"lora_weights": {"lora-brand": 0.0}}},
        {"when": {"look": "brand"}, "set": {"lora_weights": {"lora-style": 0.0}}},
    ]
    path = folder / "stacks.yaml"
    path.write_text(yaml.safe_dump(campaign, sort_keys=False))
    plan = make_plan(load_campaign(path))
    files = plan.campaign.files()

    started = time.perf_counter()
    renderer = DiffusersRenderer()
    for batch in cut_batches(plan.variants, 8):
        renderer.render_batch([variant.spec for variant in batch], files)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    for variant in plan.variants:  # what a script without a pipeline cache does
        DiffusersRenderer().render_batch([variant.spec], files)
    reload = time.perf_counter() - started
    print(
        f"three LoRA stacks interleaved in the file, {len(plan.variants)} variants "
        "(render path, in process):"
    )
    print(
        f"  reload pipeline + LoRAs per variant {reload:6.2f} s   renderer {ours:6.2f} s "
        f"(loads: {renderer.loads})   speed-up {reload / ours:5.1f}x (target >= 10x)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        renderer_versus_hand_loop(Path(scratch))
        render_paths(Path(scratch))
        three_stacks(Path(scratch))


if __name__ == "__main__":
    main()
