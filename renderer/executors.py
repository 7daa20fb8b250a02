"""Where jobs are produced: the ``Executor`` protocol and the local executor.

An executor runs ``renderer.produce.Worker.produce`` on jobs (one pipeline call's batch
each) and yields what each produced; the driver (``renderer.execute``) commits it to the
ledger. The local executor does this in-process, ``renderer.ray_executor`` on Ray actors;
both run the same worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from .inputs import Campaign
from .produce import Job, JobResult

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


def resolve_batch_sizes(campaign: Campaign, device: str) -> dict[str, int]:
    from .render import auto_batch_size

    requested = campaign.spec.render.batch_size
    return {family: requested if isinstance(requested, int) else auto_batch_size(device, family)
            for family in dict.fromkeys(recipe.spec.family for recipe in campaign.recipes)}


def make_executor(name: str, campaign: Campaign, out_dir: Path, log: Log, *,
                  address: str | None, workers: int | None) -> Executor:
    if name == "local":
        return LocalExecutor(campaign, out_dir, log)
    import torch

    from .ray_executor import RayExecutor

    return RayExecutor(campaign.source, out_dir, address=address, workers=workers,
                       gpus_per_worker=1.0 if torch.cuda.is_available() else 0.0,
                       threads=torch.get_num_threads(), log=log)
