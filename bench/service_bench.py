"""The render service versus the command line (issue 27), side by side in one run.

1. The 36-image demo campaign as a cold ``campaign render`` process (imports, pipeline and
   CLIP loads included) versus the same campaign as a job of a running ``campaign serve``
   whose runner already rendered it once (models warm), submit to done. Each try renders
   into a new output folder; the two alternate ``--runs`` times and the best of each counts.
2. The first job of a recipe on a fresh server (the runner's imports and model loads)
   versus the second.
3. ``--small`` jobs queued at once, each a render of the finished campaign into its own
   folder (nothing new to render: validate, plan, the ledger), submit of the first to done
   of the last, per job, beside the runner's own time per job (started to finished): the
   difference is the queue's overhead.

The campaign is ``campaigns/demo.yaml`` with absolute paths, in a temporary served root.

    .venv/bin/python bench/service_bench.py [--runs N] [--small N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.recipe_axis_bench import render_seconds  # noqa: E402  (a cold render, timed)

CAMPAIGN_BIN = Path(sys.executable).parent / "campaign"
TOKEN = "bench-token-" + "x" * 20
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def served_campaign(root: Path) -> Path:
    campaign = yaml.safe_load((REPO / "campaigns" / "demo.yaml").read_text())
    campaign.update(
        recipes_dir=str(REPO / "recipes"), brand=str(REPO / "campaigns" / campaign["brand"])
    )
    campaign["scoring"]["clip_model"] = str(
        (REPO / "campaigns" / campaign["scoring"]["clip_model"]).resolve()
    )
    path = root / "demo.yaml"
    path.write_text(yaml.safe_dump(campaign, sort_keys=False))
    return path


class Server:
    def __init__(self, root: Path):
        tokens = root / "tokens"
        tokens.write_text(f"{TOKEN} bench admin\n")
        tokens.chmod(0o600)
        self.log = root / f"server-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen(
            [
                str(CAMPAIGN_BIN),
                "serve",
                "--root",
                str(root),
                "--port",
                "0",
                "--token-file",
                str(tokens),
            ],
            stderr=self.log.open("w"),
            env=ENV,
            start_new_session=True,
        )
        while not (found := re.findall(r"at http://127\.0\.0\.1:(\d+)/v1/", self.log.read_text())):
            if self.process.poll() is not None:
                raise RuntimeError(self.log.read_text())
            time.sleep(0.05)
        self.port = int(found[0])

    def call(self, method: str, path: str, body: object = None) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers={"Authorization": f"Bearer {TOKEN}"})
        reply = json.loads(connection.getresponse().read())
        connection.close()
        return reply

    def submit(self, out: str) -> str:
        return self.call(
            "POST", "/v1/jobs", {"kind": "render", "campaign": "demo.yaml", "out": out}
        )["id"]

    def wait(self, job_id: str) -> dict:
        while (job := self.call("GET", f"/v1/jobs/{job_id}"))["status"] in ("queued", "running"):
            time.sleep(0.02)
        if job["status"] != "done":
            raise RuntimeError(json.dumps(job, indent=2))
        return job

    def job_seconds(self, out: str) -> float:
        started = time.perf_counter()
        self.wait(self.submit(out))
        return time.perf_counter() - started

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=60)


def step_seconds(ledger: Path) -> dict[str, float]:
    """A run's seconds by step (base, postprocess, score, write): each render row holds its
    image's share of its batch's seconds (renderer/produce/job.py)."""
    totals: dict[str, float] = {}
    with sqlite3.connect(ledger) as db:
        for (steps,) in db.execute("SELECT steps_json FROM renders"):
            for step in json.loads(steps):
                totals[step["step"]] = totals.get(step["step"], 0.0) + step["seconds"]
    return totals


def runner_seconds(job: dict) -> float:
    times = job["times"]
    return (
        datetime.fromisoformat(times["finished"]) - datetime.fromisoformat(times["started"])
    ).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        campaign = served_campaign(root)
        server = Server(root)
        try:
            first = server.job_seconds("first")
            second = server.job_seconds("second")
            cold, warm = [], []
            for run in range(args.runs):
                cold.append(render_seconds(campaign, root / f"cold-{run}"))
                warm.append(server.job_seconds(f"warm-{run}"))
            best = min(range(args.runs), key=warm.__getitem__)
            steps = step_seconds(root / f"warm-{best}" / "ledger.sqlite")
            started = time.perf_counter()
            ids = [server.submit("first") for _ in range(args.small)]
            jobs = [server.wait(job_id) for job_id in ids]
            total = time.perf_counter() - started
        finally:
            server.stop()
    print(f"demo campaign (36 images), best of {args.runs}, wall seconds:")
    print(f"  cold `campaign render` process   {min(cold):7.2f}")
    print(
        f"  warm service job (submit→done)   {min(warm):7.2f}   "
        f"cold/warm {min(cold) / min(warm):.2f}x"
    )
    spent = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in steps.items())
    print(f"  of the warm job: {spent} (the rest: validate, plan, ledger, gates, report)")
    print(
        f"first vs second job of the recipe on a fresh server: {first:.2f} s vs {second:.2f} s "
        f"({first / second:.2f}x)"
    )
    own = sum(runner_seconds(job) for job in jobs) / len(jobs)
    per_job = total / len(jobs)
    print(
        f"{args.small} queued small jobs (nothing new to render): {per_job * 1000:.0f} ms per job "
        f"submit→done, of which the command {own * 1000:.0f} ms: {(per_job - own) * 1000:.0f} ms "
        "queue overhead per job"
    )


if __name__ == "__main__":
    main()
