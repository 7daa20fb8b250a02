"""The pipeline calls that render what is pending (README, "Resume"): ``Job``, one call's
batch and the members to write, and ``plan_jobs``.

Batches of variants never rendered are cut from the whole deliverable set in plan order,
whatever is pending; a variant rendered before renders inside the batch the ledger recorded
for it; members that are done render again only as co-members (compared, never written).
So an image's bytes depend on its variant and the stack, never on what else was pending.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from renderer.core.terminal import Log
from renderer.plan.variants import Plan, Variant, cut_batches
from renderer.validate.file_finder import spec_files
from renderer.validate.inputs import FileIndex

# What rendering an image without the rest of its batch does (README, "Reproducing a
# deliverable": the demo campaign on CPU, float32).
WITHOUT_BATCH = (
    "may move pixels: measured up to 2/255 in a master, 3/255 in a JPEG "
    "export, 14/255 in a WebP one"
)


@dataclass(frozen=True)
class Job:
    """One pipeline call: its members in order, and which of them to write and commit."""

    batch: tuple[Variant, ...]
    write: frozenset[str]  # variant ids; the other members are co-members

    @classmethod
    def all_of(cls, batch: Sequence[Variant]) -> Job:
        return cls(tuple(batch), frozenset(variant.id for variant in batch))


def plan_jobs(
    plan: Plan,
    pending: Sequence[Variant],
    batch_sizes: Mapping[str, int],
    recorded_batches: Mapping[str, tuple[str, ...]],
    recorded_variants: Callable[[Sequence[str]], Mapping[str, Variant]],
    files: FileIndex,
    log: Log,
) -> list[Job]:
    """The pipeline calls that render ``pending``: for a variant never rendered, its batch
    in the whole deliverable set cut in plan order; for one rendered before, the batch the
    ledger recorded for it. Members not pending are co-members (rendered, not written);
    a recorded member whose files are no longer at hand is left out, and said so.
    ``recorded_batches``: the batch the ledger recorded for each pending variant rendered
    before; ``recorded_variants``: the ledger's variants of ids no longer in the plan. Jobs
    come grouped by recipe, in the campaign's order, so each recipe's pipeline loads once."""
    by_id = {variant.id: variant for variant in plan.variants}
    batch_of = {
        variant.id: batch for batch in cut_batches(plan.variants, batch_sizes) for variant in batch
    }
    calls: dict[tuple[str, ...], set[str]] = {}
    for variant in pending:
        recorded = recorded_batches.get(variant.id)
        if recorded is not None and variant.id in recorded:
            members = recorded
        else:
            members = tuple(member.id for member in batch_of[variant.id])
        calls.setdefault(tuple(members), set()).add(variant.id)
    stored = recorded_variants(
        [member for members in calls for member in members if member not in by_id]
    )
    recipe_order = {recipe.ref: index for index, recipe in enumerate(plan.campaign.recipes)}
    order = {
        variant.id: (recipe_order[variant.spec.recipe.ref], position)
        for position, variant in enumerate(plan.variants)
    }
    jobs = []
    for members, write in sorted(calls.items(), key=lambda item: min(order[i] for i in item[1])):
        batch = []
        for member in members:
            found = by_id.get(member) or stored.get(member)
            if found is None or not _files_at_hand(found, files):
                log(
                    f"batch mate {member[:12]} of {', '.join(sorted(w[:12] for w in write))} "
                    f"is no longer at hand: rendering without it ({WITHOUT_BATCH})"
                )
                continue
            batch.append(found)
        jobs.append(Job(tuple(batch), frozenset(write)))
    if extra := sum(len(job.batch) - len(job.write) for job in jobs):
        log(
            f"co-members: {extra} done image(s) render again in "
            f"{sum(len(job.write) < len(job.batch) for job in jobs)} batch(es), compared with "
            "their files and never written, so the re-rendered ones come out as before "
            f"({extra} extra image render(s) for {len(pending)} to write)"
        )
    return jobs


def _files_at_hand(variant: Variant, files: FileIndex) -> bool:

    return all(sha256 in files.paths for _, _, sha256 in spec_files(variant.spec.to_json()))
