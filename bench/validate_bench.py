"""How fast `campaign validate` refuses each file of the bad-file corpus (tests/bad/), and
the inputs git cannot hold (made in a temp folder): a brand kit whose logo is a FIFO,
/dev/zero or a link loop, and a YAML file that is a FIFO.

Two figures per file, side by side:
- in-process: ``load_any`` from first byte to the raised error, modules already imported
  (the best of three tries) — the cost of the checks themselves, alias bombs and
  runaway templates included;
- command: the wall time of ``campaign validate FILE`` in a fresh process, start-up
  included — what a user waits for. The line ``python -c pass`` is the interpreter's
  own start-up on this machine, for scale.

The target (issues 11 and 22) is a refusal in under 1 s for every file; the last line says whether
every file met it. ``--baseline DIR`` also times the command with another checkout's code
(as ``bench/startup_bench.py`` does), alternating with this one's file by file.

    .venv/bin/python bench/validate_bench.py [--runs N] [--baseline DIR]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.ledger_bench import CAMPAIGN_BIN  # noqa: E402
from bench.startup_bench import wall  # noqa: E402

BAD = REPO / "tests" / "bad"
TARGET_S = 1.0


def corpus() -> list[Path]:
    return sorted(path for path in BAD.rglob("*.yaml") if path.read_text().startswith("# expect:"))


def special_files(folder: Path) -> list[Path]:
    """Files that name what is no regular file (reading one would block or never end)."""
    brand = (REPO / "campaigns" / "brands" / "kestrel" / "brand.yaml").read_text()
    loop = folder / "loop.png"
    loop.symlink_to(folder / "loop-back.png")
    (folder / "loop-back.png").symlink_to(loop)
    os.mkfifo(folder / "fifo.png")
    cases = []
    for name, logo in (
        ("logo-fifo", folder / "fifo.png"),
        ("logo-dev-zero", Path("/dev/zero")),
        ("logo-link-loop", loop),
    ):
        path = folder / f"{name}.yaml"
        path.write_text(brand.replace("path: logo.png", f"path: {logo}"))
        cases.append(path)
    os.mkfifo(folder / "yaml-fifo.yaml")
    return [*cases, folder / "yaml-fifo.yaml"]


def in_process_seconds(path: Path, runs: int) -> float:
    from renderer.core.errors import CampaignError
    from renderer.train.command import resolve
    from renderer.validate.any_kind import load_any
    from renderer.validate.training_spec import TrainingSpec

    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        try:
            loaded = load_any(path)
            if isinstance(loaded, TrainingSpec):
                resolve(loaded)  # the engine's checks, as `campaign validate` runs them
        except CampaignError:
            pass
        else:
            raise SystemExit(f"{path} validated: the corpus says it must not")
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="in-process tries per file")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout whose command to time beside this one's, e.g. /work/main",
    )
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="validate-bench-"))
    files = corpus() + special_files(scratch)
    trees = [REPO, *([args.baseline.resolve()] if args.baseline else [])]
    for tree in trees:  # compiles and caches the bytecode: a refusal is timed from .pyc
        wall([str(CAMPAIGN_BIN), "validate", str(files[0].relative_to(REPO))], tree, code=2)
    interpreter = wall([sys.executable, "-c", "pass"], REPO)
    rows = []
    for path in files:
        inside = in_process_seconds(path, args.runs)
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        command = [str(CAMPAIGN_BIN), "validate", str(shown)]
        before = wall(command, args.baseline.resolve(), code=2) if args.baseline else None
        name = str(path.relative_to(BAD)) if path.is_relative_to(BAD) else f"made/{path.name}"
        rows.append((name, inside, wall(command, REPO, code=2), before))
    shutil.rmtree(scratch)
    width = max(len(row[0]) for row in rows)
    print(f"{'file':<{width}}  in-process ms  command s" + ("  baseline s" * bool(args.baseline)))
    for name, inside, seconds, before in sorted(rows, key=lambda row: -row[2]):
        print(
            f"{name:<{width}}  {inside * 1000:13.1f}  {seconds:9.2f}"
            + (f"  {before:10.2f}" if before is not None else "")
        )
    walls = [row[2] for row in rows]
    insides = [row[1] for row in rows]
    print(f"\n{len(rows)} files; python -c pass {interpreter:.2f} s")
    print(
        f"in-process: median {statistics.median(insides) * 1000:.1f} ms, "
        f"max {max(insides) * 1000:.1f} ms"
    )
    print(
        f"command:    median {statistics.median(walls):.2f} s, max {max(walls):.2f} s "
        f"({max(walls) / interpreter:.1f}× python start-up)"
    )
    if args.baseline:
        befores = [row[3] for row in rows]
        print(
            f"baseline:   median {statistics.median(befores):.2f} s, max {max(befores):.2f} s "
            f"({args.baseline}; median baseline / this "
            f"{statistics.median(before / seconds for _, _, seconds, before in rows):.2f}×)"
        )
    slow = [name for name, _, seconds, _ in rows if seconds >= TARGET_S]
    print(
        f"under {TARGET_S:.0f} s: {len(rows) - len(slow)}/{len(rows)}"
        + (f" — slow: {', '.join(slow)}" if slow else "")
    )


if __name__ == "__main__":
    main()
