"""Render on a Ray cluster: one actor per GPU (or per configured CPU share).

Each actor loads the campaign's pipeline once (in the render service's runner, once for
every run that shares it: actors are kept between runs, their models warm) and runs the
local executor's worker
(``renderer.produce.worker.Worker``) on whole batches (the same batches as the local executor:
same grouping, same size, same per-image generators and the same torch thread count, so
the same bytes), through the pipelined executor's ``OverlappedStages``: an actor renders
the batch it is given while it finishes the one before, and hands that one back.
Actors write their images straight to the output folder — which must therefore be a path
every node can reach — and return paths, hashes, scores and timings; the driver alone
writes the ledger. The batches an actor held when it died (the one rendering, the one
finishing) are given to a fresh actor; only the driver's ledger commit makes a render
count, so every variant ends with exactly one render row.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from renderer.core.errors import InputError, RenderFailure
from renderer.core.terminal import Log
from renderer.plan.jobs import Job
from renderer.produce.job import JobResult
from renderer.produce.warm import keep_models_warm, warm_models
from renderer.produce.worker import OverlappedStages, Worker
from renderer.render.diffusers_renderer import campaign_batch_sizes
from renderer.validate.campaign import load_campaign

MAX_ATTEMPTS = 3


def _worker_class() -> Any:
    import ray

    @ray.remote
    class RenderWorker:
        """Holds loaded pipelines; produces a run's batches into its output folder. In the
        render service's runner it is kept between runs, its models warm
        (``renderer.produce.warm``): ``start`` gives it the next run's campaign."""

        def __init__(self, threads: int, warm_bytes: int | None):
            import torch

            # Ray pins OMP threads to the actor's CPU share; a different thread count moves
            # pixels by 1/255, so use the driver's to give the local executor's bytes.
            torch.set_num_threads(threads)
            self.said: list[str] = []  # what its warm models said since the last start
            if warm_bytes is not None:
                keep_models_warm(warm_bytes, self.said.append)

        def start(self, campaign_path: str, out_dir: str) -> list[str]:
            """Take a run; what its warm models said of it (a renderer already loaded)."""
            self.campaign = load_campaign(Path(campaign_path), verify_hashes=False)
            self.worker = Worker.for_campaign(
                self.campaign, log=lambda message: print(message, flush=True)
            )
            self.stages = OverlappedStages(self.worker, Path(out_dir))
            said, self.said[:] = list(self.said), []
            return said

        def finish(self) -> list[str]:
            """The run ended: trim the warm models to their bound; what it evicted."""
            warm = warm_models()
            return warm.trim() if warm is not None else []

        def environment(self) -> dict[str, Any]:
            return self.worker.environment()

        def batch_sizes(self) -> dict[str, int]:
            return campaign_batch_sizes(self.campaign, self.worker.renderer.device)

        def push(self, job: Job) -> JobResult | None:
            """Render ``job`` and hand back the job given before it, written (None: none)."""
            return self.stages.push(job)

        def drain(self) -> JobResult | None:
            """Hand back the job given last, written."""
            return self.stages.drain()

    return RenderWorker


# The render service's runner keeps its actors between runs (models warm), by how they were
# made: (address, actors, GPUs each, threads). A plain `campaign render` kills them at its end.
_KEPT: dict[tuple[object, ...], list[Any]] = {}


class RayExecutor:
    def __init__(
        self,
        campaign_path: Path,
        out_dir: Path,
        *,
        address: str | None,
        workers: int | None,
        gpus_per_worker: float,
        threads: int,
        log: Log,
    ):
        import ray
        from ray.exceptions import RayActorError

        self.log = log
        started = time.perf_counter()
        if not ray.is_initialized():
            try:
                ray.init(**_init_arguments(address))
            except (ConnectionError, ValueError, RuntimeError) as err:
                raise InputError(
                    f"cannot reach the Ray cluster: {err}",
                    found=address,
                    fix="start one with `ray start --head` and pass --address "
                    "HOST:6379, or omit --address for a local cluster",
                ) from None
        self.started_ray = time.perf_counter() - started
        resources = ray.cluster_resources()
        if workers is None:
            gpus = int(resources.get("GPU", 0))
            workers = gpus if gpus else max(1, int(resources.get("CPU", 1)))
        options: dict[str, Any] = (
            {"num_gpus": gpus_per_worker}
            if gpus_per_worker
            else {"num_cpus": max(resources.get("CPU", 1) / workers, 0.01)}
        )
        warm = warm_models()
        self._keep = None if warm is None else (address, workers, gpus_per_worker, threads)
        run = (str(campaign_path.resolve()), str(out_dir.resolve()))

        def make() -> Any:
            actor = (
                _worker_class()
                .options(**options)
                .remote(threads, None if warm is None else warm.bound_bytes)
            )
            actor.start.remote(*run)  # an actor runs its calls in order: before any batch
            return actor

        self._make = make
        kept = _KEPT.pop(self._keep, []) if self._keep else []
        self.workers: list[Any] = []
        for actor in kept:
            try:
                said = ray.get(actor.start.remote(*run))
            except RayActorError:  # it died since the last run
                continue
            self.workers.append(actor)
            for line in said:
                log(f"ray: worker {len(self.workers)}: {line}")
        self.workers += [make() for _ in range(workers - len(self.workers))]
        log(
            f"ray: {workers} worker(s) on {resources.get('CPU', 0):g} CPU / "
            f"{resources.get('GPU', 0):g} GPU, cluster ready in {self.started_ray:.1f} s"
            + (f", {len(kept)} kept warm from the last run" if kept else "")
        )

    def environment(self) -> dict[str, Any]:
        import ray

        return {**ray.get(self.workers[0].environment.remote()), "executor": "ray"}

    def batch_sizes(self) -> dict[str, int]:
        """The local executor's batch sizes, so batches (and so pixels) are the same."""
        import ray

        sizes: dict[str, int] = ray.get(self.workers[0].batch_sizes.remote())
        return sizes

    def produce_all(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        """Yield each job's results as it finishes, in completion order. An actor is given
        a new batch while it finishes its last (``RenderWorker.push``); with none left to
        give, it hands its last back (``drain``)."""
        import ray
        from ray.exceptions import ActorDiedError, RayActorError

        queue = list(enumerate(jobs))
        attempts = dict.fromkeys(range(len(jobs)), 0)
        # Each call in flight: its actor, the batch it renders (None: a drain) and the
        # batches lost if the actor dies during it.
        running: dict[Any, tuple[Any, int | None, tuple[int, ...]]] = {}
        held: dict[Any, int] = {}  # actor → the batch it is finishing, not handed back yet
        idle = list(self.workers)
        while queue or running or held:
            for worker in [worker for worker in idle if queue or worker in held]:
                idle.remove(worker)
                holding = (held[worker],) if worker in held else ()
                if queue:
                    index, job = queue.pop(0)
                    attempts[index] += 1
                    running[worker.push.remote(job)] = (worker, index, (index, *holding))
                else:
                    running[worker.drain.remote()] = (worker, None, holding)
            done, _ = ray.wait(list(running), num_returns=1)
            worker, pushed, at_stake = running.pop(done[0])
            try:
                results = ray.get(done[0])
            except (RayActorError, ActorDiedError) as err:
                if failed := [lost for lost in at_stake if attempts[lost] >= MAX_ATTEMPTS]:
                    raise RenderFailure(
                        f"batch {failed[0]} failed on {attempts[failed[0]]} actors: {err}"
                    ) from err
                self.log(
                    f"ray: a worker died on batch(es) {', '.join(map(str, at_stake))} "
                    f"({type(err).__name__}); retrying on a fresh worker"
                )
                held.pop(worker, None)
                self.workers.remove(worker)
                worker = self._make()
                self.workers.append(worker)
                queue[:0] = [(lost, jobs[lost]) for lost in sorted(at_stake)]
                idle.append(worker)
                continue
            held.pop(worker, None)
            if pushed is not None:
                held[worker] = pushed
            idle.append(worker)
            if results is not None:
                yield results

    def close(self) -> None:
        """Kill the actors, or, in the render service's runner, keep them for the next run."""
        import ray

        if self._keep is not None and self.workers:
            for said in ray.get([worker.finish.remote() for worker in self.workers]):
                for line in said:
                    self.log(f"ray: {line}")
            _KEPT[self._keep] = self.workers
        else:
            for worker in self.workers:
                ray.kill(worker)
        self.workers = []


def _init_arguments(address: str | None) -> dict[str, Any]:
    if address:
        return {"address": address, "log_to_driver": False}
    # A private local cluster: its own temp folder (Ray's socket paths must stay short).
    temp_dir = os.environ.get("CAMPAIGN_RAY_TMPDIR") or tempfile.mkdtemp(prefix="ray-")
    return {
        "num_cpus": os.cpu_count(),
        "include_dashboard": False,
        "_temp_dir": temp_dir,
        "log_to_driver": False,
    }
