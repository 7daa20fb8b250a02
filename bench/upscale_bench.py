"""Model upscaler memory: tiled vs untiled, and tiled as the output grows 1K → 2K → 4K.

Each case runs in a fresh process (so no case inherits another's allocator high-water
mark) that loads the demo x2 Real-ESRGAN (RRDBNet) upscaler, warms torch up on a 64 px
image, then upscales one noise image to 1K (1024×576), 2K (2048×1152) or 4K UHD
(3840×2160) on CPU in float32. Memory is the child's peak RSS during the call less its
RSS before it, with the input made: the upscale's own cost, output included. Linux keeps
the peak as VmHWM in /proc/self/status, and writing 5 to /proc/self/clear_refs resets it
after the warm-up (``getrusage``'s ru_maxrss cannot be reset, so import-time peaks would
hide the small cases).
Tiled: ``Tiling(tile=256, overlap=32, batch=4)``, so even 1K has whole tiles and only the
image-sized buffers can grow with the output.

    .venv/bin/python bench/upscale_bench.py [--model PATH]   # default models/demo/upscaler-x2
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTPUTS = {"1K": (1024, 576), "2K": (2048, 1152), "4K": (3840, 2160)}
TILING = {"tile": 256, "overlap": 32, "batch": 4}
ONE_CASE = """
import json, re, sys, time
import numpy as np
from postprocess.tiling import Tiling
from postprocess.upscale import load_upscaler, upscale_images

def status_mb(key):
    with open("/proc/self/status") as status:
        return int(re.search(key + r":\\s+(\\d+) kB", status.read()).group(1)) / 1024

path, width, height, tiling = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tiling = Tiling(**json.loads(tiling)) if tiling != "none" else None
model = load_upscaler(path)
upscale_images([np.zeros((64, 64, 3), np.uint8)], model, tiling)  # torch's one-time set-up
image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # VmHWM := VmRSS
before = status_mb("VmRSS")
started = time.perf_counter()
result, = upscale_images([image], model, tiling)
seconds = time.perf_counter() - started
assert result.shape == (height * model.scale, width * model.scale, 3)
print(json.dumps({"before_mb": before, "peak_mb": status_mb("VmHWM"), "seconds": seconds}))
"""


def run_case(model: Path, output: tuple[int, int], tiled: bool) -> dict:
    width, height = (side // 2 for side in output)  # the x2 model's input
    tiling = json.dumps(TILING) if tiled else "none"
    done = subprocess.run(
        [sys.executable, "-c", ONE_CASE, str(model), str(width), str(height), tiling],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    row = json.loads(done.stdout)
    return row | {"added_mb": row["peak_mb"] - row["before_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=REPO / "models" / "demo" / "upscaler-x2.safetensors"
    )
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = arguments.model
        if not model.is_file():  # built on the fly, as `campaign demo-models` would
            sys.path.insert(0, str(REPO))
            from renderer.demo.models import BUILDERS

            model = Path(scratch) / "upscaler-x2.safetensors"
            BUILDERS[model.name](model)
        rows = {
            (name, tiled): run_case(model, output, tiled)
            for name, output in OUTPUTS.items()
            for tiled in (True, False)
        }
    print(
        f"x2 upscale on CPU, float32, {model.name}; tiled = {TILING}; "
        "memory = peak RSS added by the call (fresh process per case)"
    )
    print(
        f"  {'output':<16} {'tiled MB':>9} {'untiled MB':>11} {'ratio':>7} "
        f"{'tiled s':>8} {'untiled s':>10}"
    )
    for name, (width, height) in OUTPUTS.items():
        tiled, untiled = rows[name, True], rows[name, False]
        print(
            f"  {name} {width}x{height:<8} {tiled['added_mb']:9.0f} {untiled['added_mb']:11.0f} "
            f"{untiled['added_mb'] / tiled['added_mb']:6.1f}x {tiled['seconds']:8.2f} "
            f"{untiled['seconds']:10.2f}"
        )
    small, large = (OUTPUTS[name][0] * OUTPUTS[name][1] for name in ("1K", "4K"))
    growth = rows["4K", True]["added_mb"] - rows["1K", True]["added_mb"]
    output_growth = (large - small) * 3 / 2**20  # uint8 RGB
    # One row of tiles blends in float32: tile × 2 output rows across the output's width.
    band_growth = TILING["tile"] * 2 * (OUTPUTS["4K"][0] - OUTPUTS["1K"][0]) * 3 * 4 / 2**20
    print(
        f"  tiled 1K → 4K: {large / small:.1f}x the pixels, memory +{growth:.0f} MB, of which "
        f"the uint8 output is {output_growth:.0f} MB and the float32 row of tiles "
        f"{band_growth:.0f} MB"
    )


if __name__ == "__main__":
    main()
