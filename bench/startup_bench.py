"""How fast the commands that do not render start (issue 15): wall time in fresh processes.

Each command is the real ``campaign`` entry point in a new process, timed from start to
exit, the best of ``--runs`` tries (the least disturbed by other work on the machine),
beside ``python -c pass`` — the interpreter's own start-up, which no command can beat:

* ``campaign --help``;
* ``campaign validate campaigns/demo.yaml`` (every check, hashes from the hash cache);
* ``campaign plan campaigns/demo.yaml`` (validate, then 36 specs and ids, the estimates);
* ``campaign history --out OUT`` and ``campaign show ID --out OUT`` (the ledger, read-only).

``OUT`` is the demo campaign rendered through the real execute path with the diffusers
pipeline and CLIP stubbed (bench/ledger_bench.py's stubs), in a temporary folder — unless
``--out`` names a folder a real ``campaign render`` wrote (``outputs`` after ``make demo``).
``ID`` is a variant id from its ledger.

``--baseline DIR`` times another checkout's code too (``/work/main``, say), each try of a
command alternating between the two so that both see the same load; the last column is
the baseline's time over this checkout's. Each side runs with ``PYTHONPATH`` set to its
own tree, which comes before the virtual environment's editable install (that may point
at yet another checkout), and with bytecode cached under the temporary folder's
``campaign-bench-pycache`` (as an installed package has it, even where the environment sets
``PYTHONDONTWRITEBYTECODE``; no checkout is written to); the first try fills it.

    .venv/bin/python bench/startup_bench.py [--runs N] [--out DIR] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.ledger_bench import CAMPAIGN_BIN, populate_with_stubs  # noqa: E402

DEMO = REPO / "campaigns" / "demo.yaml"
PYCACHE = Path(tempfile.gettempdir()) / "campaign-bench-pycache"
DEMO_VARIANTS = 36


def code_of(tree: Path) -> dict[str, str]:
    """The environment in which ``campaign`` runs ``tree``'s code, from cached bytecode."""
    environment = {**os.environ, "PYTHONPATH": str(tree), "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    return environment


def wall(command: list[str], tree: Path, code: int = 0) -> float:
    """The wall time of ``command`` run with ``tree``'s code; it must exit with ``code``."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=code_of(tree), capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != code:
        raise SystemExit(
            f"{' '.join(command)} ({tree}) exited {done.returncode}, not {code}: "
            f"{done.stderr.decode(errors='replace')}"
        )
    return elapsed


def best_walls(command: list[str], trees: list[Path], runs: int) -> list[float]:
    """The shortest of ``runs`` wall times of ``command`` under each tree, the trees
    taking turns within each try."""
    best = [float("inf")] * len(trees)
    for _ in range(runs):
        for index, tree in enumerate(trees):
            best[index] = min(best[index], wall(command, tree))
    return best


def a_variant_id(out: Path) -> str:
    with sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True) as ledger:
        (variant_id,) = ledger.execute(
            "SELECT variant_id FROM renders ORDER BY id LIMIT 1"
        ).fetchone()
    return variant_id


def commands(out: Path) -> dict[str, list[str]]:
    campaign = [str(CAMPAIGN_BIN)]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "campaign --help": [*campaign, "--help"],
        "campaign validate campaigns/demo.yaml": [*campaign, "validate", str(DEMO)],
        "campaign plan campaigns/demo.yaml": [*campaign, "plan", str(DEMO)],
        "campaign history --out OUT": [*campaign, "history", "--out", str(out)],
        "campaign show ID --out OUT": [*campaign, "show", a_variant_id(out), "--out", str(out)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="tries per command (best kept)")
    parser.add_argument(
        "--out",
        type=Path,
        help="an output folder with a ledger (default: "
        "the demo, populated with stub models in a temporary folder)",
    )
    parser.add_argument(
        "--baseline", type=Path, help="another checkout to time beside this one, e.g. /work/main"
    )
    args = parser.parse_args()
    trees = [REPO] if args.baseline is None else [args.baseline.resolve(), REPO]
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as temp:
        out = args.out
        if out is None:
            out = Path(temp) / "out"
            populate_with_stubs(DEMO, out, DEMO_VARIANTS)
        timed = {
            name: best_walls(command, trees, args.runs) for name, command in commands(out).items()
        }
    interpreter = timed["python -c pass"][-1]
    width = max(map(len, timed))
    print(f"best of {args.runs}; wall s (× python -c pass)")
    if args.baseline is None:
        print(f"{'command':<{width}}  {REPO}")
    else:
        print(f"{'command':<{width}}  {trees[0]!s:<16}  {REPO!s:<16}  baseline / this")
    for name, walls in timed.items():
        cells = "  ".join(f"{seconds:6.3f} ({seconds / interpreter:4.1f}×)" for seconds in walls)
        ratio = f"  {walls[0] / walls[1]:6.2f}×" if len(walls) == 2 else ""
        print(f"{name:<{width}}  {cells}{ratio}")


if __name__ == "__main__":
    main()
