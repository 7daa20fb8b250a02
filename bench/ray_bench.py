"""Ray versus the local executor on the 36-variant demo campaign, in one run.

For each setup the time is split into start-up (Ray cluster and actors), model load
(pipeline + CLIP in the executor) and render (all batches: render, post-process, score,
write). Everything runs in this process on a local Ray cluster (`ray.init` with this
machine's CPUs); the ledger is not involved (it stays on the driver in both cases).
"""

import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    import ray
    import torch

    from renderer.plan.jobs import Job
    from renderer.plan.variants import cut_batches, make_plan
    from renderer.run.executors import LocalExecutor
    from renderer.run.ray_executor import RayExecutor
    from renderer.validate.campaign import load_campaign

    campaign_path = REPO / "campaigns" / "demo.yaml"
    campaign = load_campaign(campaign_path)
    variants = make_plan(campaign).variants
    rows = []
    with tempfile.TemporaryDirectory(prefix="ray-bench-", dir="/tmp") as scratch:
        os.environ["CAMPAIGN_RAY_TMPDIR"] = str(Path(scratch) / "ray")
        started = time.perf_counter()
        executor = LocalExecutor(campaign, Path(scratch) / "local", log=lambda _: None)
        loaded = time.perf_counter()
        jobs = [
            Job(batch, frozenset(variant.id for variant in batch))
            for batch in cut_batches(variants, executor.batch_sizes())
        ]
        for _ in executor.produce_all(jobs):
            pass
        rows.append(("local", 0.0, loaded - started, time.perf_counter() - loaded))
        for workers in (1, 2):
            started = time.perf_counter()
            executor = RayExecutor(
                campaign_path,
                Path(scratch) / f"ray{workers}",
                address=None,
                workers=workers,
                gpus_per_worker=0.0,
                threads=torch.get_num_threads(),
                log=lambda _: None,
            )
            up = time.perf_counter()
            ray.get([worker.environment.remote() for worker in executor.workers])
            loaded = time.perf_counter()
            for _ in executor.produce_all(jobs):
                pass
            rows.append(
                (
                    f"ray, {workers} worker{'s' * (workers > 1)}",
                    up - started,
                    loaded - up,
                    time.perf_counter() - loaded,
                )
            )
            executor.close()
        ray.shutdown()
    local_total = sum(rows[0][1:])
    print(
        f"demo campaign, {len(variants)} variants, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()} per executor"
    )
    print(
        f"  {'setup':16} {'start-up':>9} {'model load':>11} {'render':>8} {'total':>8} "
        f"{'vs local':>9}"
    )
    for name, startup, load, render in rows:
        total = startup + load + render
        print(
            f"  {name:16} {startup:8.2f}s {load:10.2f}s {render:7.2f}s {total:7.2f}s "
            f"{local_total / total:8.2f}x"
        )
    print("  (start-up for the first Ray setup includes ray.init; the second reuses the cluster)")


if __name__ == "__main__":
    main()
