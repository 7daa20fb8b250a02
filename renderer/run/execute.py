"""Run a campaign: validate → plan → skip what is done → produce → commit → decide → report.

``render_campaign`` is the *execute* layer. Everything that can be wrong with the input is
found before the output folder is touched or a model is loaded; after that, each image
is written atomically and then committed to the ledger in its own transaction, so an
interrupted run keeps everything it finished and the next run resumes from there.

What a run does is planned so the folder ends byte-identical to an uninterrupted run
(README, "Resume"): batches of variants never rendered are cut from the whole deliverable
set in a fixed order, whatever is pending; a variant rendered before whose master is gone
or altered renders inside the batch the ledger recorded for it; batch members that are
done render again only as co-members (compared, never written); and an export that is
gone or altered is rebuilt from its intact master, without rendering.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from renderer.core.errors import CampaignError, InputError, RenderFailure
from renderer.core.hashing import hash_file, sha256_file, sha256_json
from renderer.core.progress import Progress
from renderer.core.terminal import Log, say
from renderer.ledger.decisions import campaign_gates, decide_run
from renderer.ledger.locking import hold_output_folder, recover_after_crash
from renderer.ledger.records import ExportRow, RenderRecord, RenderRow
from renderer.ledger.store import LEDGER_NAME, Ledger
from renderer.plan.output_folder import Holder, OutputFolder, check_planned, report_path
from renderer.plan.variants import Plan, Variant, cut_batches, make_plan, recipe_content
from renderer.produce.job import WITHOUT_BATCH, FailedImage, Job, Produced
from renderer.render.environment import device_problem
from renderer.run.executors import make_executor
from renderer.validate.campaign import load_campaign
from renderer.validate.inputs import Campaign, FileIndex, Recipe, ResolvedFile


def log_to_stderr(message: str) -> None:
    say(message, err=True)


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    campaign: str
    status: str
    planned: int
    rendered: int
    skipped: int
    counts: Mapping[str, int]  # passed, review, failed: the run's decision pass
    out_dir: Path
    ledger: Path
    report: Path
    seconds: float

    @property
    def passed(self) -> int:
        return self.counts["passed"]

    @property
    def review(self) -> int:  # sent to a person (e.g. faces): not failed
        return self.counts["review"]

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed (review does not fail a run), 1 when anything failed."""
        return 0 if self.failed == 0 else 1

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "campaign": self.campaign,
            "status": self.status,
            "counts": {
                "planned": self.planned,
                "rendered": self.rendered,
                "skipped": self.skipped,
                **self.counts,
            },
            "out_dir": str(self.out_dir),
            "ledger": str(self.ledger),
            "report": str(self.report),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class PendingVariant:
    variant: Variant
    rerender_reason: str | None  # None: never rendered; 'missing' or 'altered' master


@dataclass(frozen=True)
class Repair:
    """Exports of a render whose master is intact, to rebuild from it."""

    variant: Variant
    render: RenderRow
    exports: tuple[ExportRow, ...]  # the missing or altered ones


@dataclass(frozen=True)
class Work:
    pending: tuple[PendingVariant, ...]  # masters to render
    repairs: tuple[Repair, ...]


def check_device(campaign: Campaign) -> None:
    """A campaign that names a device this machine lacks is refused here, not by a torch
    error after the run is recorded (validate cannot know the machine that renders)."""
    requested = campaign.spec.render.device
    if requested != "auto" and (problem := device_problem(requested)):
        raise campaign.document.error(
            InputError,
            f"render.device {requested} is not available",
            ("render", "device"),
            found=problem,
            fix="set render.device: auto (CUDA, then MPS, then CPU), or render "
            "on a machine with that device (or with --executor ray on a cluster that has it)",
        )


def render_campaign(
    campaign: Path | Campaign,
    out_dir: Path,
    *,
    log: Log = log_to_stderr,
    show_progress: bool = True,
    wait: bool = True,
    executor: str = "local",
    address: str | None = None,
    workers: int | None = None,
    existing: str | None = None,
) -> RunSummary:
    """Render a campaign (a file, or one loaded with ``load_campaign``) into ``out_dir``.
    ``existing`` says what to do with this campaign's images already in a folder whose
    ledger is missing or empty: ``adopt`` (check and record them) or ``rerender``; without
    it such a folder is refused, since nothing records how those images were made."""
    started = time.perf_counter()
    # 1. Load and validate every input (no model, nothing written).
    if not isinstance(campaign, Campaign):
        campaign = load_campaign(campaign)
    # 2. State every variant with its spec and id.
    plan = make_plan(campaign)
    gates = campaign_gates(campaign)
    ledger_path = out_dir / LEDGER_NAME
    # 3. Refuse a recipe edited in place, a path no render may write (a reserved or
    #    over-long name, a file another record holds) or images a lost ledger made, before
    #    opening (and so creating) the ledger.
    check_recipe_versions(ledger_path, campaign)
    check_output_paths(plan, out_dir, recorded_paths(ledger_path))
    check_unrecorded_images(ledger_path, plan, out_dir, existing)
    if executor == "local":
        check_device(campaign)
    # One render per output folder: another waits (or refuses, wait=False) while this holds
    # it; holding it, clean up after a killed run (temp files, runs left 'running').
    with (
        hold_output_folder(out_dir, wait=wait, log=log, holder=campaign.spec.name),
        Ledger(ledger_path) as ledger,
    ):
        check_recipe_versions(ledger_path, campaign)  # again: a run we waited for may have
        check_output_paths(plan, out_dir, ledger.held_paths())  # recorded these first
        recover_after_crash(out_dir, ledger, log)
        work = find_work(ledger, plan, out_dir)
        adopted: list[Variant] = []
        if existing == "adopt":
            from renderer.run.adopt import adoptable

            adopted = adoptable([item.variant for item in work.pending], out_dir)
        adopted_ids = {variant.id for variant in adopted}
        pending = tuple(item for item in work.pending if item.variant.id not in adopted_ids)
        log(
            f"{campaign.spec.name}: {len(plan.variants)} variants planned, "
            f"{len(plan.variants) - len(pending)} already done, {len(pending)} to render"
            + (f", {len(work.repairs)} with exports to rebuild" if work.repairs else "")
        )
        repair_exports(ledger, work.repairs, out_dir, campaign.files(), log)
        gate_rules = gates.as_json()
        report_settings = {
            "grids": [[grid.x, grid.y]] if (grid := campaign.spec.report.grid) else []
        }
        if (
            not pending
            and not adopted
            and (
                completed := ledger.completed_run(
                    campaign.spec.name,
                    [variant.id for variant in plan.variants],
                    gate_rules,
                    report_settings,
                )
            )
            is not None
        ):
            # Nothing new: no run row; the run that completed this set stands for it.
            log(
                f"{campaign.spec.name}: nothing new to render; run {completed.id} completed "
                "this set (no new run recorded)"
            )
            return completed_summary(ledger, completed, out_dir, started)
        # 4. Record the run, then produce what is pending.
        recipe_hashes = {
            recipe.ref: ledger.record_recipe_version(
                recipe.spec.name, recipe.spec.version, recipe_content(recipe)
            )
            for recipe in campaign.recipes
        }
        runner = (
            make_executor(executor, campaign, out_dir, log, address=address, workers=workers)
            if pending
            else None
        )
        environment = runner.environment() if runner else {"device": "none (nothing to render)"}
        run_id = ledger.start_run(
            campaign=campaign.spec.name,
            campaign_file=str(campaign.source),
            recipes=[(recipe.spec.name, recipe.spec.version) for recipe in campaign.recipes],
            executor=executor,
            environment=environment,
            variant_ids=[variant.id for variant in plan.variants],
            to_render={item.variant.id for item in pending},
            rules=gate_rules,
            report=report_settings,
        )
        reasons = {item.variant.id: item.rerender_reason for item in work.pending}
        recorder = RunRecorder(
            campaign, ledger, run_id=run_id, recipe_hashes=recipe_hashes, reasons=reasons, log=log
        )
        skipped = len(plan.variants) - len(pending)
        if adopted:
            from renderer.run.adopt import ADOPTED, adopt

            reasons.update(dict.fromkeys(adopted_ids, ADOPTED))
            recorder.commit(adopt(campaign, adopted, out_dir, log))
        try:
            if runner:
                progress = Progress(len(pending)) if show_progress else None
                jobs = plan_jobs(ledger, plan, pending, runner.batch_sizes(), campaign.files(), log)
                for result in runner.produce_all(jobs):
                    recorder.commit(result.produced)
                    recorder.check(result.rechecked)
                    recorder.report(result.failed)
                    if progress:
                        progress.advance(len(result.produced))
                if progress:
                    progress.close()
                recorder.raise_failures()
        except BaseException as err:
            ledger.finish_run(run_id, status="error", rendered=recorder.committed, skipped=skipped)
            if isinstance(err, CampaignError) or not isinstance(err, Exception):
                raise
            raise RenderFailure(
                f"run {run_id} stopped: {type(err).__name__}: {err}; "
                "finished images are kept, run the same command to resume"
            ) from err
        finally:
            if runner:
                runner.close()
        # 5. Decide the whole deliverable set (with the run metrics), write the report.
        counts = decide_run(ledger, run_id, gates, source="render").counts
        ledger.finish_run(run_id, status="finished", rendered=len(pending), skipped=skipped)
        from renderer.report.run_report import write_run_report

        report = write_run_report(ledger, run_id)
    return RunSummary(
        run_id=run_id,
        campaign=campaign.spec.name,
        status="passed" if counts["failed"] == 0 else "failed",
        planned=len(plan.variants),
        rendered=len(pending),
        skipped=skipped,
        counts=counts,
        out_dir=out_dir,
        ledger=ledger_path,
        report=report,
        seconds=time.perf_counter() - started,
    )


def completed_summary(ledger: Ledger, run: Any, out_dir: Path, started: float) -> RunSummary:
    """What a render that found its whole set done says: the run that completed it."""
    report = out_dir / report_path(run.campaign, run.id)
    if not report.is_file():
        from renderer.report.run_report import write_run_report

        report = write_run_report(ledger, run.id)
    return RunSummary(
        run_id=run.id,
        campaign=run.campaign,
        status="passed" if run.counts["failed"] == 0 else "failed",
        planned=run.planned,
        rendered=0,
        skipped=run.planned,
        counts=run.counts,
        out_dir=out_dir,
        ledger=ledger.path,
        report=report,
        seconds=time.perf_counter() - started,
    )


def recorded_paths(ledger_path: Path) -> dict[str, Holder]:
    """The paths the ledger's records hold (none before a first render)."""
    if not ledger_path.is_file() or ledger_path.stat().st_size == 0:
        return {}
    with Ledger(ledger_path) as ledger:
        return ledger.held_paths()


def check_output_paths(plan: Plan, out_dir: Path, held: Mapping[str, Holder]) -> None:
    """Every master and export path of the plan, against each other, the folder's rules
    and the ledger's records (``renderer.plan.output_folder``): exit 2 before any model loads."""
    check_planned(plan.planned_files(), plan.campaign.document, OutputFolder(out_dir, held))


def check_unrecorded_images(
    ledger_path: Path, plan: Plan, out_dir: Path, existing: str | None
) -> None:
    """A missing or empty ledger beside this campaign's images: refused unless told what
    to do with them (they are deliverables nothing records)."""
    fresh = not ledger_path.is_file() or ledger_path.stat().st_size == 0
    if not fresh or existing is not None:
        return
    found = [
        variant.output_path
        for variant in plan.variants
        if (out_dir / variant.output_path).is_file()
    ]
    if found:
        raise InputError(
            f"{len(found)} image(s) of this campaign are in {out_dir} but its ledger is "
            f"{'empty' if ledger_path.is_file() else 'missing'}, so nothing records how they "
            "were made",
            file=ledger_path,
            found=found[0] + (f" and {len(found) - 1} more" if len(found) > 1 else ""),
            fix="put the ledger back if you moved it; else pass --adopt-existing to check the "
            "images against their embedded specs and record them, or --rerender to render "
            "over them",
        )


def check_recipe_versions(ledger_path: Path, campaign: Campaign) -> None:
    """Refuse a recipe whose ``name@version`` rendered before with other content."""
    if not ledger_path.is_file() or ledger_path.stat().st_size == 0:
        return
    with Ledger(ledger_path) as ledger:
        for recipe in campaign.recipes:
            content_hash = sha256_json(recipe_content(recipe))
            conflict = ledger.recipe_conflict(recipe.spec.name, recipe.spec.version, content_hash)
            if conflict is None:
                continue
            raise InputError(
                f"recipe {recipe.ref} changed since it produced {conflict.deliverables} "
                f"deliverables (first on {conflict.first_rendered_at[:10]}): bump its version",
                file=recipe.source,
                key_path="version",
                expected=f"content hash {conflict.stored_hash[:12]}… as first rendered",
                found=f"content hash {content_hash[:12]}…",
                fix=f"set version: {recipe.spec.version + 1} (and update the campaign's "
                "recipe reference), or restore the file",
            )


def find_work(ledger: Ledger, plan: Plan, out_dir: Path) -> Work:
    """What the deliverable set needs: variants with no committed render or whose master is
    gone or no longer matches (render), and intact masters with an export gone or altered
    (rebuild those exports)."""
    done = ledger.latest_renders([variant.id for variant in plan.variants])
    exports = ledger.exports_of([render.id for render in done.values()])
    pending, repairs = [], []
    for variant in plan.variants:
        previous = done.get(variant.id)
        if previous is None:
            pending.append(PendingVariant(variant, None))
        elif state := _file_state(out_dir / previous.output_path, previous.output_sha256):
            pending.append(PendingVariant(variant, state))
        elif broken := tuple(
            export
            for export in exports.get(previous.id, [])
            if _file_state(out_dir / export.path, export.sha256)
        ):
            repairs.append(Repair(variant, previous, broken))
    return Work(tuple(pending), tuple(repairs))


def _file_state(path: Path, sha256: str) -> str | None:
    """None when the file is there with this sha256, else 'missing' or 'altered'."""
    if not path.is_file():
        return "missing"
    return None if sha256_file(path) == sha256 else "altered"


def repair_exports(
    ledger: Ledger, repairs: Sequence[Repair], out_dir: Path, files: FileIndex, log: Log
) -> None:
    """Rebuild lost or altered exports from their masters: the same crop, resize, encoder
    and metadata as when they were made; the master is read, never written."""
    from renderer.produce.exports import exports_of_master
    from renderer.produce.metadata import LoraHashes
    from renderer.produce.worker import Worker

    lora_hashes = LoraHashes(files.path)
    for repair in repairs:
        spec = repair.variant.spec
        rebuilt = {
            export.name: data
            for export, data in exports_of_master(
                out_dir / repair.render.output_path, spec, lora_hashes.of(spec)
            )
        }
        for recorded in repair.exports:
            export = next(e for e in spec.postprocess.exports or () if e.name == recorded.name)
            made = Worker.write_export(repair.variant, export, rebuilt[recorded.name], out_dir)
            if made.sha256 != recorded.sha256:
                log(
                    f"export {made.path} rebuilt from its master with other bytes than "
                    f"recorded (sha256 {recorded.sha256[:12]}… then, {made.sha256[:12]}… now: "
                    "another stack?); the ledger now records the rebuilt file"
                )
                ledger.replace_export(repair.render.id, made)
        log(
            f"rebuilt {len(repair.exports)} export(s) of {repair.render.output_path} from "
            "its master"
        )


def plan_jobs(
    ledger: Ledger,
    plan: Plan,
    pending: Sequence[PendingVariant],
    batch_sizes: Mapping[str, int],
    files: FileIndex,
    log: Log,
) -> list[Job]:
    """The pipeline calls that render ``pending``: for a variant never rendered, its batch
    in the whole deliverable set cut in plan order; for one rendered before, the batch the
    ledger recorded for it. Members not pending are co-members (rendered, not written);
    a recorded member whose files are no longer at hand is left out, and said so. Jobs
    come grouped by recipe, in the campaign's order, so each recipe's pipeline loads once."""
    by_id = {variant.id: variant for variant in plan.variants}
    batch_of = {
        variant.id: batch for batch in cut_batches(plan.variants, batch_sizes) for variant in batch
    }
    rerendered = ledger.latest_renders(
        [item.variant.id for item in pending if item.rerender_reason]
    )
    calls: dict[tuple[str, ...], set[str]] = {}
    for item in pending:
        recorded = rerendered.get(item.variant.id)
        if recorded is not None and item.variant.id in recorded.batch:
            members = recorded.batch
        else:
            members = tuple(variant.id for variant in batch_of[item.variant.id])
        calls.setdefault(tuple(members), set()).add(item.variant.id)
    stored = ledger.latest_renders(
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
            variant = by_id.get(member) or (stored[member].variant() if member in stored else None)
            if variant is None or not _files_at_hand(variant, files):
                log(
                    f"batch mate {member[:12]} of {', '.join(sorted(w[:12] for w in write))} "
                    f"is no longer at hand: rendering without it ({WITHOUT_BATCH})"
                )
                continue
            batch.append(variant)
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
    from renderer.validate.file_finder import spec_files

    return all(sha256 in files.paths for _, _, sha256 in spec_files(variant.spec.to_json()))


class RunRecorder:
    """The driver side: commits one ledger row per produced image."""

    def __init__(
        self,
        campaign: Campaign,
        ledger: Ledger,
        *,
        run_id: str,
        recipe_hashes: Mapping[str, str],
        reasons: Mapping[str, str | None],
        log: Log,
    ):
        self.campaign, self.ledger, self.log = campaign, ledger, log
        self.run_id, self.recipe_hashes, self.reasons = run_id, recipe_hashes, reasons
        self.input_files = {
            recipe.ref: input_files(campaign, recipe) for recipe in campaign.recipes
        }
        self.committed = 0
        self.failed: list[FailedImage] = []

    def commit(self, produced: Sequence[Produced]) -> None:
        """One render row per image, with its rerender reason (None, missing, altered,
        adopted) from ``reasons``."""
        for item in produced:
            variant = item.variant
            recipe = variant.spec.recipe
            self.ledger.add_render(
                RenderRecord(
                    run_id=self.run_id,
                    variant_id=variant.id,
                    campaign=self.campaign.spec.name,
                    recipe_name=recipe.name,
                    recipe_version=recipe.version,
                    recipe_hash=self.recipe_hashes[recipe.ref],
                    variant_json=variant.spec_json,
                    seed=variant.seed,
                    axes=variant.axes,
                    prompt=variant.prompt,
                    width=variant.width,
                    height=variant.height,
                    input_files=self.input_files[recipe.ref],
                    output_path=item.output_path,
                    output_sha256=item.output_sha256,
                    output_bytes=item.output_bytes,
                    environment_hash=self.ledger.record_environment(item.environment),
                    scores=item.scores,
                    render_seconds=item.seconds,
                    rerender_reason=self.reasons[variant.id],
                    batch=item.batch,
                    embedding=item.embedding,
                    exports=item.exports,
                    steps=tuple({"step": step, "seconds": seconds} for step, seconds in item.steps),
                )
            )
            self.committed += 1

    def report(self, failed: Sequence[FailedImage]) -> None:
        """Images that could not be finished: said now, the run fails once the rest is in
        (a co-member's file is done and stays: only its comparison is lost)."""
        for item in failed:
            if item.co_member:
                self.log(f"co-member {item.describe()}: not compared; its file is left as it is")
                continue
            self.log(f"{item.describe()}: not written; the next run renders it again")
            self.failed.append(item)

    def raise_failures(self) -> None:
        if not self.failed:
            return
        listed = "; ".join(item.describe() for item in self.failed[:3])
        more = f" and {len(self.failed) - 3} more" if len(self.failed) > 3 else ""
        raise RenderFailure(
            f"run {self.run_id}: {len(self.failed)} image(s) failed, the other "
            f"{self.committed} are committed: {listed}{more}; run the same command to render "
            "the failed ones again (a fault that repeats is in that step's code or input)"
        )

    def check(self, rechecked: Sequence[tuple[Variant, str]]) -> None:
        """Co-members rendered again: their files stay as they are, drift is said."""
        recorded = self.ledger.latest_renders([variant.id for variant, _ in rechecked])
        for variant, sha256 in rechecked:
            row = recorded.get(variant.id)
            if row is not None and row.output_sha256 != sha256:
                self.log(
                    f"co-member {variant.id[:12]} rendered again with other bytes than "
                    f"{row.output_path} holds ({row.output_sha256[:12]}… recorded, "
                    f"{sha256[:12]}… now); its file is left as it is"
                )


def input_files(campaign: Campaign, recipe: Recipe) -> list[Mapping[str, str]]:
    """Every file a render of this campaign with this recipe read, with its sha256
    (reproduce checks them)."""
    files = [("checkpoint", recipe.checkpoint)]
    if config := recipe.checkpoint_config:  # reproduce needs it to load offline
        files += [("checkpoint_config", ResolvedFile(config, hash_file(config)))]
    files += [("lora", lora) for lora, _ in recipe.loras]
    files += [("controlnet", model) for model in recipe.controlnets]
    files += [("ip_adapter", model) for model in [recipe.ip_adapter] if model]
    files += [
        (".".join(str(part) for part in key[1:] if not isinstance(part, int)), model)
        for key, model in recipe.refine_files.items()
    ]  # e.g. "refiner.checkpoint"
    files += [("logo", campaign.brand.logo)]
    files += [("reference", ref) for ref in campaign.brand.references]
    files += [(f"font {role}", font) for role, font in campaign.brand.fonts.items()]
    return [{"role": role, "path": str(ref.path), "sha256": ref.sha256} for role, ref in files]
