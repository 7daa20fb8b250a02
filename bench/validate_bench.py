"""How fast `campaign validate` refuses each file of the bad-file corpus (tests/bad/).

Two figures per file, side by side:
- in-process: ``load_any`` from first byte to the raised error, modules already imported
  (the best of three tries) — the cost of the checks themselves, alias bombs and
  runaway templates included;
- command: the wall time of ``campaign validate FILE`` in a fresh process, start-up
  included — what a user waits for. The line ``python -c pass`` is the interpreter's
  own start-up on this machine, for scale.

The issue-11 target is a refusal in under 1 s for every file; the last line says whether
every file met it.

    .venv/bin/python bench/validate_bench.py [--runs N]
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BAD = REPO / "tests" / "bad"
CAMPAIGN = Path(sys.executable).parent / "campaign"
TARGET_S = 1.0


def corpus() -> list[Path]:
    return sorted(path for path in BAD.rglob("*.yaml")
                  if path.read_text().startswith("# expect:"))


def in_process_seconds(path: Path, runs: int) -> float:
    from renderer.errors import CampaignError
    from renderer.validate import load_any

    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        try:
            load_any(path)
        except CampaignError:
            pass
        else:
            raise SystemExit(f"{path} validated: the corpus says it must not")
        best = min(best, time.perf_counter() - started)
    return best


def command_seconds(*command: str) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True)
    return time.perf_counter() - started, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="in-process tries per file")
    args = parser.parse_args()
    files = corpus()
    interpreter, _ = command_seconds(sys.executable, "-c", "pass")
    rows = []
    for path in files:
        inside = in_process_seconds(path, args.runs)
        wall, code = command_seconds(str(CAMPAIGN), "validate", str(path.relative_to(REPO)))
        if code != 2:
            raise SystemExit(f"campaign validate {path} exited {code}, not 2")
        rows.append((str(path.relative_to(BAD)), inside, wall))
    width = max(len(name) for name, _, _ in rows)
    print(f"{'file':<{width}}  in-process ms  command s")
    for name, inside, wall in sorted(rows, key=lambda row: -row[2]):
        print(f"{name:<{width}}  {inside * 1000:13.1f}  {wall:9.2f}")
    walls = [wall for _, _, wall in rows]
    insides = [inside for _, inside, _ in rows]
    print(f"\n{len(rows)} files; python -c pass {interpreter:.2f} s")
    print(f"in-process: median {statistics.median(insides) * 1000:.1f} ms, "
          f"max {max(insides) * 1000:.1f} ms")
    print(f"command:    median {statistics.median(walls):.2f} s, max {max(walls):.2f} s "
          f"({max(walls) / interpreter:.1f}× python start-up)")
    slow = [name for name, _, wall in rows if wall >= TARGET_S]
    print(f"under {TARGET_S:.0f} s: {len(rows) - len(slow)}/{len(rows)}"
          + (f" — slow: {', '.join(slow)}" if slow else ""))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
