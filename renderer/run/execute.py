"""``campaign render``'s task: validate → plan → skip what is done → produce → commit →
decide → report, each stage's own module called once, in that order.

``render_campaign`` is the *execute* layer. Everything that can be wrong with the input is
found before the output folder is touched or a model is loaded (``renderer.validate``,
``renderer.run.folder_state``); after that, each image is written atomically and then
committed to the ledger in its own transaction (``renderer.ledger.run_recorder``), so an
interrupted run keeps everything it finished and the next run resumes from there.

What a run does is planned so the folder ends byte-identical to an uninterrupted run
(README, "Resume"): ``renderer.plan.jobs`` cuts the batches, and an export that is gone or
altered is rebuilt from its intact master, without rendering
(``renderer.produce.exports.rebuild_exports``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from renderer.core.errors import CampaignError, InputError, RenderFailure
from renderer.core.json_value import JsonValue
from renderer.core.progress import Progress
from renderer.core.terminal import Log, say
from renderer.ledger.decisions import campaign_gates, decide_run
from renderer.ledger.locking import hold_output_folder, recover_after_crash
from renderer.ledger.records import RunRow
from renderer.ledger.run_recorder import RunRecorder
from renderer.ledger.store import LEDGER_NAME, Ledger
from renderer.plan.jobs import plan_jobs
from renderer.plan.output_folder import report_path
from renderer.plan.variants import Variant, make_plan, recipe_content
from renderer.produce.exports import rebuild_exports
from renderer.produce.metadata import LoraHashes
from renderer.render.environment import device_problem
from renderer.report.run_report import write_run_report
from renderer.run.adopt import ADOPTED, adopt, adoptable
from renderer.run.executors import make_executor
from renderer.run.folder_state import (
    PendingVariant,
    Repair,
    check_output_paths,
    check_recipe_versions,
    check_unrecorded_images,
    find_work,
    recorded_paths,
)
from renderer.validate.campaign import load_campaign
from renderer.validate.inputs import Campaign, FileIndex


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

    def as_json(self) -> dict[str, JsonValue]:
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
            reasons.update(dict.fromkeys(adopted_ids, ADOPTED))
            recorder.commit(adopt(campaign, adopted, out_dir, log))
        try:
            if runner:
                progress = Progress(len(pending)) if show_progress else None
                jobs = plan_jobs(
                    plan,
                    [item.variant for item in pending],
                    runner.batch_sizes(),
                    recorded_batches(ledger, pending),
                    lambda ids: {
                        variant_id: row.variant()
                        for variant_id, row in ledger.latest_renders(ids).items()
                    },
                    campaign.files(),
                    log,
                )
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


def completed_summary(ledger: Ledger, run: RunRow, out_dir: Path, started: float) -> RunSummary:
    """What a render that found its whole set done says: the run that completed it."""
    report = out_dir / report_path(run.campaign, run.id)
    if not report.is_file():
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


def recorded_batches(
    ledger: Ledger, pending: Sequence[PendingVariant]
) -> dict[str, tuple[str, ...]]:
    """The batch the ledger recorded for each pending variant rendered before (its master
    gone or altered): it renders in that batch again, so its bytes come out as before."""
    rendered = ledger.latest_renders([item.variant.id for item in pending if item.rerender_reason])
    return {variant_id: row.batch for variant_id, row in rendered.items()}


def repair_exports(
    ledger: Ledger, repairs: Sequence[Repair], out_dir: Path, files: FileIndex, log: Log
) -> None:
    """Rebuild lost or altered exports from their intact masters, and record a rebuilt file
    whose bytes differ from the record."""
    lora_hashes = LoraHashes(files.path)
    for repair in repairs:
        recorded = {export.name: export for export in repair.exports}
        for made in rebuild_exports(
            repair.variant,
            out_dir / repair.render.output_path,
            list(recorded),
            out_dir,
            lora_hashes,
        ):
            if made.sha256 != recorded[made.name].sha256:
                log(
                    f"export {made.path} rebuilt from its master with other bytes than "
                    f"recorded (sha256 {recorded[made.name].sha256[:12]}… then, "
                    f"{made.sha256[:12]}… now: another stack?); the ledger now records the "
                    "rebuilt file"
                )
                ledger.replace_export(repair.render.id, made)
        log(
            f"rebuilt {len(repair.exports)} export(s) of {repair.render.output_path} from "
            "its master"
        )
