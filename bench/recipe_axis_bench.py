"""One campaign with a recipe axis versus one campaign per recipe, side by side.

`campaigns/compare-families.yaml` (SD1.5, SDXL and Flux over the same 6 coordinates, 18
variants; its Flux override left out) rendered by one `campaign render`, against the same
variants rendered by three single-recipe campaigns (the recipe axis taken out), each a
fresh `campaign render` into its own folder. Wall time of the whole
processes (imports, model and CLIP loading, post-processing, ledger, report), run
alternately REPEATS times; the best of each counts. Target: the combined run is not
slower than the three separate ones.

    .venv/bin/python bench/recipe_axis_bench.py          # BENCH_REPEATS=2 by default
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CAMPAIGN = Path(sys.executable).parent / "campaign"
COMPARE = REPO / "campaigns" / "compare-families.yaml"
REPEATS = int(os.environ.get("BENCH_REPEATS", "2"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def campaigns(folder: Path) -> tuple[Path, list[Path]]:
    """compare-families without its overrides (they name the recipe axis), and one
    campaign per recipe of its axis with the same other axes."""
    data = yaml.safe_load(COMPARE.read_text())
    data.update(
        brand=str(COMPARE.parent / data["brand"]), recipes_dir=str(REPO / "recipes"), overrides=[]
    )
    data["scoring"]["clip_model"] = str((COMPARE.parent / data["scoring"]["clip_model"]).resolve())
    combined = folder / "combined.yaml"
    combined.write_text(yaml.safe_dump(data, sort_keys=False))
    axes = data["matrix"]["axes"]
    singles = []
    for ref in axes["recipe"]:
        single = dict(
            data,
            recipe=ref,
            report={},
            matrix=dict(
                data["matrix"],
                axes={name: values for name, values in axes.items() if name != "recipe"},
            ),
        )
        path = folder / f"{ref.split('@')[0]}.yaml"
        path.write_text(yaml.safe_dump(single, sort_keys=False))
        singles.append(path)
    return combined, singles


def render_seconds(campaign: Path, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(CAMPAIGN), "render", str(campaign), "--out", str(out)],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    combined, separate = [], []
    with tempfile.TemporaryDirectory(prefix="recipe-axis-bench-") as scratch:
        folder = Path(scratch)
        together, singles = campaigns(folder)
        for attempt in range(REPEATS):
            combined.append(render_seconds(together, folder / f"combined-{attempt}"))
            separate.append(
                sum(
                    render_seconds(path, folder / f"separate-{attempt}-{path.stem}")
                    for path in singles
                )
            )
    print(f"18 variants (SD1.5, SDXL, Flux × 6), fresh processes, best of {REPEATS}:")
    print(f"  one campaign with a recipe axis   {min(combined):7.1f} s")
    print(f"  three single-recipe campaigns     {min(separate):7.1f} s")
    print(
        f"  combined / separate               {min(combined) / min(separate):7.2f}×"
        "  (target ≤ 1.00)"
    )


if __name__ == "__main__":
    main()
