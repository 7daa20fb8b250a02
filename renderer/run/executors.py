"""Where jobs are produced: the ``Executor`` protocol and the local executors.

An executor runs the worker's stages (``renderer.produce.worker.Worker``: render → finish →
write) on jobs (one pipeline call's batch each) and yields what each produced; the driver
(``renderer.run.execute``) commits it to the ledger. The local executors do this in-process,
in job order — ``LocalExecutor`` one stage after the other (``render.pipeline: false``),
``PipelinedExecutor`` (``auto``'s choice on an accelerator) with the denoiser rendering
the next batch while this one is finished — and ``renderer.run.ray_executor`` on Ray actors,
each overlapping its stages as the pipelined executor does; all of them run the same
worker.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from renderer.core.terminal import Log
from renderer.plan.jobs import Job
from renderer.produce.job import JobResult
from renderer.produce.worker import FINISH_THREADS, OverlappedStages, Worker
from renderer.render.diffusers_renderer import campaign_batch_sizes
from renderer.render.environment import resolve_device
from renderer.run.ray_executor import RayExecutor
from renderer.validate.inputs import Campaign


class Executor(Protocol):
    def environment(self) -> dict[str, Any]:
        """The environment fingerprint of the workers (recorded with the run)."""

    def batch_sizes(self) -> dict[str, int]:
        """How many variants one pipeline call takes, per family of the campaign's recipes
        (``render.batch_size``, or auto)."""

    def produce_all(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        """Produce every job, yielding each job's results as it finishes."""

    def close(self) -> None:
        """Release the workers."""


class LocalExecutor:
    """Produces batches in this process, one after the other."""

    def __init__(self, campaign: Campaign, out_dir: Path, log: Log, worker: Worker | None = None):
        """``worker``: the campaign's own by default (bench/overlap_bench.py gives one with
        a renderer that only holds the batch, as an accelerator would)."""

        self.campaign = campaign
        self.worker, self.out_dir = worker or Worker.for_campaign(campaign, log), out_dir

    def environment(self) -> dict[str, Any]:
        return self.worker.environment()

    def batch_sizes(self) -> dict[str, int]:
        return campaign_batch_sizes(self.campaign, self.worker.renderer.device)

    def produce_all(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        for job in jobs:
            yield self.worker.produce(job, self.out_dir)

    def close(self) -> None:
        """Nothing to release: the models go with the process."""


class PipelinedExecutor(LocalExecutor):
    """Produces batches in this process with the stages overlapped
    (``renderer.produce.worker.OverlappedStages``): the denoiser renders batch N+1 on this thread
    while a pool post-processes, scores and encodes batch N; batch N is then written and
    yielded. Results come in job order from the serial path's own stages, so files, rows
    and decisions are the same; a render that raises or is interrupted first hands over
    the batch before it, finished, as the serial path would have committed it."""

    def __init__(self, campaign: Campaign, out_dir: Path, log: Log, worker: Worker | None = None):
        super().__init__(campaign, out_dir, log, worker)
        log(
            f"local executor: pipelined (rendering overlaps post-processing on "
            f"{FINISH_THREADS} thread(s); render.pipeline: false renders one batch after the "
            "other)"
        )

    def produce_all(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        stages = OverlappedStages(self.worker, self.out_dir)
        try:
            for job in jobs:
                try:
                    result = stages.push(job)
                except BaseException:  # an error or Ctrl-C in the render: keep the batch before
                    if (finished := stages.drain()) is not None:
                        yield finished
                    raise
                if result is not None:
                    yield result
            if (result := stages.drain()) is not None:
                yield result
        finally:
            stages.close()


def make_executor(
    name: str,
    campaign: Campaign,
    out_dir: Path,
    log: Log,
    *,
    address: str | None,
    workers: int | None,
) -> Executor:
    if name == "local":
        pipelined = campaign.spec.render.pipeline
        if pipelined == "auto":
            pipelined = resolve_device(campaign.spec.render.device) != "cpu"
        return (PipelinedExecutor if pipelined else LocalExecutor)(campaign, out_dir, log)
    import torch  # on use: the local executors' workers load it themselves

    return RayExecutor(
        campaign.source,
        out_dir,
        address=address,
        workers=workers,
        gpus_per_worker=1.0 if torch.cuda.is_available() else 0.0,
        threads=torch.get_num_threads(),
        log=log,
    )
