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

    .venv/bin/python bench/startup_bench.py [--runs N] [--out DIR]
"""

from __future__ import annotations

import argparse
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
DEMO_VARIANTS = 36


def best_wall(command: list[str], runs: int) -> float:
    """The shortest of ``runs`` wall times of ``command``; it must exit 0."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, check=False)
        best = min(best, time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} exited {done.returncode}: "
                             f"{done.stderr.decode(errors='replace')}")
    return best


def a_variant_id(out: Path) -> str:
    with sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True) as ledger:
        (variant_id,) = ledger.execute("SELECT variant_id FROM renders ORDER BY id LIMIT 1"
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
    parser.add_argument("--out", type=Path, help="an output folder with a ledger (default: "
                        "the demo, populated with stub models in a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as temp:
        out = args.out
        if out is None:
            out = Path(temp) / "out"
            populate_with_stubs(DEMO, out, DEMO_VARIANTS)
        timed = {name: best_wall(command, args.runs) for name, command in commands(out).items()}
    interpreter = timed["python -c pass"]
    width = max(map(len, timed))
    print(f"{'command':<{width}}  wall s  × python -c pass   (best of {args.runs})")
    for name, wall in timed.items():
        print(f"{name:<{width}}  {wall:6.3f}  {wall / interpreter:5.1f}×")


if __name__ == "__main__":
    main()
