"""Where jobs are produced: the ``Executor`` protocol and the local executors.

An executor runs the worker's stages (``renderer.produce.Worker``: render → finish →
write) on jobs (one pipeline call's batch each) and yields what each produced, in job
order; the driver (``renderer.execute``) commits it to the ledger. The local executors do
this in-process — ``LocalExecutor`` one stage after the other, ``PipelinedExecutor`` with
the denoiser rendering the next batch while this one is finished — and
``renderer.ray_executor`` on Ray actors; all of them run the same worker.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from .inputs import Campaign
from .produce import FinishedJob, Job, JobResult, RenderedJob

Log = Callable[[str], None]


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

    def __init__(self, campaign: Campaign, out_dir: Path, log: Log):
        from .produce import Worker

        self.campaign = campaign
        self.worker, self.out_dir = Worker.for_campaign(campaign, log), out_dir

    def environment(self) -> dict[str, Any]:
        return self.worker.environment()

    def batch_sizes(self) -> dict[str, int]:
        return resolve_batch_sizes(self.campaign, self.worker.renderer.device)

    def produce_all(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        for job in jobs:
            yield self.worker.produce(job, self.out_dir)

    def close(self) -> None:
        """Nothing to release: the models go with the process."""


# Jobs between the start of their render and the end of their finish: one is finished
# while the next renders. More would not keep the denoiser busier (a finish shorter than a
# render is done by then), only hold more images in memory.
JOBS_IN_FLIGHT = 2
# Threads finishing one batch's images side by side (post-processing, encoding): OpenCV,
# Pillow's encoders and torch release the GIL.
FINISH_THREADS = min(4, os.cpu_count() or 1)


class PipelinedExecutor(LocalExecutor):
    """Produces batches in this process with the stages overlapped: a render thread runs
    the denoiser on batch N+1 while a finish thread post-processes, scores and encodes
    batch N (its images side by side on ``FINISH_THREADS``), and this thread writes batch
    N's files and yields it. Results come in job order, and the stages are the serial
    path's own (``Worker.render``, ``finish``, ``write``), so files, rows and decisions are
    the same. Files are written here, right before the driver commits them, so a kill
    leaves as few files without their row as the serial path does (at most one job's)."""

    def __init__(self, campaign: Campaign, out_dir: Path, log: Log):
        super().__init__(campaign, out_dir, log)
        self.log = log
        log(f"local executor: pipelined (rendering overlaps post-processing, "
            f"{FINISH_THREADS} finishing thread(s); render.pipeline: false turns it off)")

    def produce_all(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        stopping = threading.Event()  # set: start no render, finish nothing more
        in_flight: deque[tuple[Future[RenderedJob | None], Future[FinishedJob | None]]] = deque()
        with ThreadPoolExecutor(1, thread_name_prefix="render") as denoiser, \
                ThreadPoolExecutor(1, thread_name_prefix="finish") as finisher, \
                ThreadPoolExecutor(FINISH_THREADS, thread_name_prefix="finish-image") as images:

            def render(job: Job) -> RenderedJob | None:
                return None if stopping.is_set() else self.worker.render(job)

            def finish(rendering: Future[RenderedJob | None]) -> FinishedJob | None:
                rendered = rendering.result()  # a render's error is raised here, in order
                if rendered is None or stopping.is_set():
                    return None
                return self.worker.finish(rendered, images.map)

            def written(finishing: Future[FinishedJob | None]) -> JobResult:
                finished = finishing.result()
                assert finished is not None, "only a stopped pipeline drops a job"
                return self.worker.write(finished, self.out_dir)

            try:
                for job in jobs:
                    if len(in_flight) == JOBS_IN_FLIGHT:
                        yield written(in_flight.popleft()[1])
                    rendering = denoiser.submit(render, job)
                    in_flight.append((rendering, finisher.submit(finish, rendering)))
                while in_flight:
                    yield written(in_flight.popleft()[1])
            except KeyboardInterrupt:
                self.log("interrupted: waiting for the batch being rendered to end (its "
                         "images are not written)")
                raise
            finally:
                # On an error, an interrupt or the driver closing this generator: nothing
                # after the job that failed is written, and the threads are joined on the
                # way out of the pools (the batch being rendered runs to its end).
                stopping.set()
                for rendering, finishing in in_flight:
                    rendering.cancel()
                    finishing.cancel()


def resolve_batch_sizes(campaign: Campaign, device: str) -> dict[str, int]:
    from .render import auto_batch_size

    requested = campaign.spec.render.batch_size
    return {family: requested if isinstance(requested, int) else auto_batch_size(device, family)
            for family in dict.fromkeys(recipe.spec.family for recipe in campaign.recipes)}


def make_executor(name: str, campaign: Campaign, out_dir: Path, log: Log, *,
                  address: str | None, workers: int | None) -> Executor:
    if name == "local":
        pipelined = campaign.spec.render.pipeline
        return (PipelinedExecutor if pipelined else LocalExecutor)(campaign, out_dir, log)
    import torch

    from .ray_executor import RayExecutor

    return RayExecutor(campaign.source, out_dir, address=address, workers=workers,
                       gpus_per_worker=1.0 if torch.cuda.is_available() else 0.0,
                       threads=torch.get_num_threads(), log=log)
