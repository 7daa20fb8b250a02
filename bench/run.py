"""`make bench`: the renderer versus a hand-written diffusers loop, side by side.

Both run as fresh processes on the same 36 demo variants (imports and model loading
included in both); each is run REPEATS times, alternating, and the best time counts.
The renderer does more work (logo overlay, CLIP scoring, PNG metadata, ledger, report),
so a ratio >= 1.0 means that batching more than pays for it.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CAMPAIGN = REPO / "campaigns" / "demo.yaml"
RECIPE = REPO / "recipes" / "demo-sd15.yaml"
REPEATS = int(os.environ.get("BENCH_REPEATS", "2"))


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        plan = scratch_path / "plan.json"
        plan.write_text(subprocess.run([str(BIN / "campaign"), "plan", str(CAMPAIGN), "--json"],
                                       check=True, capture_output=True, text=True).stdout)
        count = len(json.loads(plan.read_text()))
        renderer, hand = [], []
        for repeat in range(REPEATS):
            out = scratch_path / f"out{repeat}"
            renderer.append(timed([str(BIN / "campaign"), "render", str(CAMPAIGN),
                                   "--out", str(out)]))
            hand.append(timed([sys.executable, str(REPO / "bench" / "hand_loop.py"),
                               str(RECIPE), str(plan)]))
        resume = timed([str(BIN / "campaign"), "render", str(CAMPAIGN), "--out",
                        str(scratch_path / "out0")])
    best_renderer, best_hand = min(renderer), min(hand)
    print(f"demo campaign, {count} variants, sd15 at 64 px, threads={os.cpu_count()}")
    print(f"  hand-written diffusers loop : {best_hand:6.2f} s  (runs: "
          f"{', '.join(f'{t:.2f}' for t in hand)})")
    print(f"  campaign render             : {best_renderer:6.2f} s  (runs: "
          f"{', '.join(f'{t:.2f}' for t in renderer)})")
    print(f"  speed-up (hand / renderer)  : {best_hand / best_renderer:6.2f}x  (target >= 1.0)")
    print(f"  second render (all skipped) : {resume:6.2f} s  (target < 10 s)")


if __name__ == "__main__":
    main()
