"""Run a campaign: validate → plan → skip what is done → produce → commit → decide → report.

``render_campaign`` is the *execute* layer. Everything that can be wrong with the input is
found before the output folder is touched or a model is loaded; after that, each image
is written atomically and then committed to the ledger in its own transaction, so an
interrupted run keeps everything it finished and the next run resumes from there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .decisions import campaign_gates, decide_run
from .errors import CampaignError, InputError, RenderFailure
from .executors import make_executor
from .hashing import sha256_file, sha256_json
from .inputs import Campaign, ResolvedFile
from .ledger import LEDGER_NAME, Ledger, RenderRecord
from .locking import hold_output_folder, recover_after_crash
from .plan import Plan, Variant, cut_batches, make_plan, recipe_content
from .produce import Produced
from .progress import Progress
from .validate import hash_file, load_campaign

Log = Callable[[str], None]


def log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
            "counts": {"planned": self.planned, "rendered": self.rendered,
                       "skipped": self.skipped, **self.counts},
            "out_dir": str(self.out_dir),
            "ledger": str(self.ledger),
            "report": str(self.report),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class PendingVariant:
    variant: Variant
    rerender_reason: str | None  # None: never rendered; 'missing' or 'altered' file


def render_campaign(campaign: Path | Campaign, out_dir: Path, *, log: Log = log_to_stderr,
                    show_progress: bool = True, wait: bool = True, executor: str = "local",
                    address: str | None = None, workers: int | None = None) -> RunSummary:
    """Render a campaign (a file, or one loaded with ``load_campaign``) into ``out_dir``."""
    started = time.perf_counter()
    # 1. Load and validate every input (no model, nothing written).
    if not isinstance(campaign, Campaign):
        campaign = load_campaign(campaign)
    # 2. State every variant with its spec and id.
    plan = make_plan(campaign)
    gates = campaign_gates(campaign)
    ledger_path = out_dir / LEDGER_NAME
    # 3. Refuse a recipe edited in place before opening (and so creating) the ledger.
    check_recipe_version(ledger_path, campaign)
    # One render per output folder: another waits (or refuses, wait=False) while this holds
    # it; holding it, clean up after a killed run (temp files, runs left 'running').
    with hold_output_folder(out_dir, wait=wait, log=log, holder=campaign.spec.name), \
            Ledger(ledger_path) as ledger:
        check_recipe_version(ledger_path, campaign)  # again: a run we waited for may have
        recover_after_crash(out_dir, ledger, log)    # recorded this version first
        pending = find_pending(ledger, plan, out_dir)
        log(f"{campaign.spec.name}: {len(plan.variants)} variants planned, "
            f"{len(plan.variants) - len(pending)} already done, {len(pending)} to render")
        # 4. Record the run, then produce what is pending.
        recipe = campaign.recipe
        recipe_hash = ledger.record_recipe_version(recipe.spec.name, recipe.spec.version,
                                                   recipe_content(recipe))
        runner = make_executor(executor, campaign, out_dir, log, address=address,
                               workers=workers) if pending else None
        environment = runner.environment() if runner else {"device": "none (nothing to render)"}
        run_id = ledger.start_run(
            campaign=campaign.spec.name, campaign_file=str(campaign.source),
            recipe_name=recipe.spec.name, recipe_version=recipe.spec.version,
            executor=executor, environment=environment,
            variant_ids=[variant.id for variant in plan.variants],
            to_render={item.variant.id for item in pending}, rules=gates.as_json(),
            report={"grids": [[grid.x, grid.y]] if (grid := campaign.spec.report.grid) else []})
        recorder = RunRecorder(campaign, ledger, run_id=run_id, recipe_hash=recipe_hash,
                               pending=pending)
        skipped = len(plan.variants) - len(pending)
        try:
            if runner:
                progress = Progress(len(pending)) if show_progress else None
                batches = cut_batches([item.variant for item in pending], runner.batch_size())
                for produced in runner.produce_all(batches):
                    recorder.commit(produced)
                    if progress:
                        progress.advance(len(produced))
                if progress:
                    progress.close()
        except BaseException as err:
            ledger.finish_run(run_id, status="error", rendered=recorder.committed,
                              skipped=skipped)
            if isinstance(err, CampaignError) or not isinstance(err, Exception):
                raise
            raise RenderFailure(f"run {run_id} stopped: {type(err).__name__}: {err}; "
                                "finished images are kept, run the same command to resume"
                                ) from err
        finally:
            if runner:
                runner.close()
        # 5. Decide the whole deliverable set (with the run metrics), write the report.
        counts = decide_run(ledger, run_id, gates, source="render").counts
        ledger.finish_run(run_id, status="finished", rendered=len(pending), skipped=skipped)
        from .run_report import write_run_report

        report = write_run_report(ledger, run_id, out_dir / campaign.spec.name / "report.html")
    return RunSummary(run_id=run_id, campaign=campaign.spec.name,
                      status="passed" if counts["failed"] == 0 else "failed",
                      planned=len(plan.variants), rendered=len(pending), skipped=skipped,
                      counts=counts, out_dir=out_dir, ledger=ledger_path, report=report,
                      seconds=time.perf_counter() - started)


def check_recipe_version(ledger_path: Path, campaign: Campaign) -> None:
    if not ledger_path.exists():
        return
    recipe = campaign.recipe
    content_hash = sha256_json(recipe_content(recipe))
    with Ledger(ledger_path) as ledger:
        conflict = ledger.recipe_conflict(recipe.spec.name, recipe.spec.version, content_hash)
    if conflict:
        raise InputError(
            f"recipe {recipe.ref} changed since it produced {conflict.deliverables} "
            f"deliverables (first on {conflict.first_rendered_at[:10]}): bump its version",
            file=recipe.source, key_path="version",
            expected=f"content hash {conflict.stored_hash[:12]}… as first rendered",
            found=f"content hash {content_hash[:12]}…",
            fix=f"set version: {recipe.spec.version + 1} (and update the campaign's recipe "
            "reference), or restore the file")


def find_pending(ledger: Ledger, plan: Plan, out_dir: Path) -> list[PendingVariant]:
    """Variants with no committed render, or whose file (or one of its exports) is gone or
    no longer matches."""
    done = ledger.latest_renders([variant.id for variant in plan.variants])
    exports = ledger.exports_of([render.id for render in done.values()])
    pending = []
    for variant in plan.variants:
        previous = done.get(variant.id)
        if previous is None:
            pending.append(PendingVariant(variant, None))
            continue
        files = [(previous.output_path, previous.output_sha256)] + [
            (export.path, export.sha256) for export in exports.get(previous.id, [])]
        for relative, sha256 in files:
            path = out_dir / relative
            if not path.is_file():
                pending.append(PendingVariant(variant, "missing"))
                break
            if sha256_file(path) != sha256:
                pending.append(PendingVariant(variant, "altered"))
                break
    return pending


class RunRecorder:
    """The driver side: commits one ledger row per produced image."""

    def __init__(self, campaign: Campaign, ledger: Ledger, *, run_id: str, recipe_hash: str,
                 pending: Sequence[PendingVariant]):
        self.campaign, self.ledger = campaign, ledger
        self.run_id, self.recipe_hash = run_id, recipe_hash
        self.reasons = {item.variant.id: item.rerender_reason for item in pending}
        self.input_files = input_files(campaign)
        self.committed = 0

    def commit(self, produced: Sequence[Produced]) -> None:
        recipe = self.campaign.recipe.spec
        for item in produced:
            variant = item.variant
            self.ledger.add_render(RenderRecord(
                run_id=self.run_id, variant_id=variant.id, campaign=self.campaign.spec.name,
                recipe_name=recipe.name, recipe_version=recipe.version,
                recipe_hash=self.recipe_hash, variant_json=variant.spec_json, seed=variant.seed,
                axes=variant.axes, prompt=variant.prompt, width=variant.width,
                height=variant.height, input_files=self.input_files,
                output_path=item.output_path, output_sha256=item.output_sha256,
                output_bytes=item.output_bytes,
                environment_hash=self.ledger.record_environment(item.environment),
                scores=item.scores, render_seconds=item.seconds,
                rerender_reason=self.reasons[variant.id], batch=list(item.batch),
                embedding=item.embedding, exports=item.exports,
                steps=[{"step": step, "seconds": seconds} for step, seconds in item.steps]))
            self.committed += 1


def input_files(campaign: Campaign) -> list[Mapping[str, str]]:
    """Every file a render of this campaign read, with its sha256 (reproduce checks them)."""
    recipe = campaign.recipe
    files = [("checkpoint", recipe.checkpoint)]
    if config := recipe.checkpoint_config:  # reproduce needs it to load offline
        files += [("checkpoint_config", ResolvedFile(config, hash_file(config)))]
    files += [("lora", lora) for lora, _ in recipe.loras]
    files += [("controlnet", model) for model in recipe.controlnets]
    files += [("ip_adapter", model) for model in [recipe.ip_adapter] if model]
    files += [(".".join(str(part) for part in key[1:] if not isinstance(part, int)), model)
              for key, model in recipe.refine_files.items()]  # e.g. "refiner.checkpoint"
    files += [("logo", campaign.brand.logo)]
    files += [("reference", ref) for ref in campaign.brand.references]
    files += [(f"font {role}", font) for role, font in campaign.brand.fonts.items()]
    return [{"role": role, "path": str(ref.path), "sha256": ref.sha256} for role, ref in files]
