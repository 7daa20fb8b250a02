"""Run a campaign: plan → skip what is done → render → post-process → score → gate → write.

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

from PIL import Image

from .atomic import write_bytes_atomic
from .config import Campaign, ResolvedFile, hash_file, load_campaign
from .errors import CampaignError, InputError, RenderFailure
from .hashing import sha256_bytes, sha256_file, sha256_json
from .ledger import LEDGER_NAME, Ledger, RenderRecord
from .locking import hold_output_folder, recover_after_crash
from .metadata import encode_png
from .plan import Plan, Variant, make_plan
from .progress import Progress

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
    passed: int
    failed: int
    out_dir: Path
    ledger: Path
    report: Path
    seconds: float

    @property
    def exit_code(self) -> int:
        return 0 if self.failed == 0 else 1

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "campaign": self.campaign,
            "status": self.status,
            "counts": {"planned": self.planned, "rendered": self.rendered,
                       "skipped": self.skipped, "passed": self.passed, "failed": self.failed},
            "out_dir": str(self.out_dir),
            "ledger": str(self.ledger),
            "report": str(self.report),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class PendingVariant:
    variant: Variant
    rerender_reason: str | None  # None: never rendered; 'missing' or 'altered' file


def render_campaign(campaign_path: Path, out_dir: Path, *, log: Log = log_to_stderr,
                    show_progress: bool = True, wait: bool = True) -> RunSummary:
    started = time.perf_counter()
    # 1. Load and validate every input (no model, nothing written).
    campaign = load_campaign(campaign_path)
    # 2. Expand the matrix into variants with ids and seeds.
    plan = make_plan(campaign)
    rules = gate_rules(campaign)
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
        # 4. Record the run, then render what is pending.
        recipe_hash = ledger.record_recipe_version(campaign.recipe.spec.name,
                                                   campaign.recipe.spec.version,
                                                   campaign.recipe.identity())
        stage = RenderStage(campaign, log) if pending else None
        environment = stage.environment() if stage else {"device": "none (nothing to render)"}
        run_id, environment_hash = ledger.start_run(
            campaign=campaign.spec.name, campaign_file=str(campaign.source),
            recipe_name=campaign.recipe.spec.name, recipe_version=campaign.recipe.spec.version,
            executor="local", environment=environment,
            variant_ids=[variant.id for variant in plan.variants],
            to_render={item.variant.id for item in pending},
            thresholds={rule.metric: rule.describe() for rule in rules})
        try:
            if stage:
                stage.run(pending, ledger, out_dir, run_id=run_id, recipe_hash=recipe_hash,
                          environment_hash=environment_hash, rules=rules,
                          show_progress=show_progress)
        except BaseException as err:
            ledger.finish_run(run_id, status="error", rendered=stage.rendered if stage else 0,
                              skipped=len(plan.variants) - len(pending), passed=0, failed=0)
            if isinstance(err, CampaignError) or not isinstance(err, Exception):
                raise
            raise RenderFailure(f"run {run_id} stopped: {type(err).__name__}: {err}; "
                                "finished images are kept, run the same command to resume"
                                ) from err
        # 5. Count gate results over the whole deliverable set and write the report.
        rows = ledger.run_rows(run_id)
        passed = sum(row["gate_status"] == "pass" for row in rows)
        failed = len(rows) - passed
        status = "passed" if failed == 0 else "failed"
        ledger.finish_run(run_id, status=status, rendered=len(pending),
                          skipped=len(plan.variants) - len(pending), passed=passed,
                          failed=failed)
        from .reporting import write_run_report

        report = write_run_report(ledger, run_id, out_dir / campaign.spec.name / "report.html")
    return RunSummary(run_id=run_id, campaign=campaign.spec.name, status=status,
                      planned=len(plan.variants), rendered=len(pending),
                      skipped=len(plan.variants) - len(pending), passed=passed, failed=failed,
                      out_dir=out_dir, ledger=ledger_path, report=report,
                      seconds=time.perf_counter() - started)


def gate_rules(campaign: Campaign) -> list[Any]:
    from postprocess.gate import GateRule

    return [GateRule(metric, gate.min, gate.max) for metric, gate in campaign.spec.gates.items()]


def check_recipe_version(ledger_path: Path, campaign: Campaign) -> None:
    if not ledger_path.exists():
        return
    recipe = campaign.recipe
    with Ledger(ledger_path) as ledger:
        conflict = ledger.recipe_conflict(recipe.spec.name, recipe.spec.version,
                                          sha256_json(recipe.identity()))
    if conflict:
        raise InputError(
            f"recipe {recipe.ref} changed since it produced {conflict.deliverables} "
            f"deliverables (first on {conflict.first_rendered_at[:10]}): bump its version",
            file=recipe.source, key_path="version",
            expected=f"content hash {conflict.stored_hash[:12]}… as first rendered",
            found=f"content hash {sha256_json(recipe.identity())[:12]}…",
            fix=f"set version: {recipe.spec.version + 1} (and update the campaign's recipe "
            "reference), or restore the file")


def find_pending(ledger: Ledger, plan: Plan, out_dir: Path) -> list[PendingVariant]:
    """Variants with no committed render, or whose file is gone or no longer matches."""
    done = ledger.latest_renders([variant.id for variant in plan.variants])
    pending = []
    for variant in plan.variants:
        previous = done.get(variant.id)
        if previous is None:
            pending.append(PendingVariant(variant, None))
            continue
        path = out_dir / previous.output_path
        if not path.is_file():
            pending.append(PendingVariant(variant, "missing"))
        elif sha256_file(path) != previous.output_sha256:
            pending.append(PendingVariant(variant, "altered"))
    return pending


class RenderStage:
    """Models and brand assets loaded once for a run; renders pending variants in batches."""

    def __init__(self, campaign: Campaign, log: Log):
        from postprocess.scoring import ClipScorer

        from .render import DiffusersRenderer, RenderOptions

        self.campaign, self.log = campaign, log
        render = campaign.spec.render
        self.renderer = DiffusersRenderer(RenderOptions(
            device=render.device, dtype=render.dtype, compile=render.compile,
            channels_last=render.channels_last, vae_tiling=render.vae_tiling,
            vae_slicing=render.vae_slicing, cpu_offload=render.cpu_offload), log=log)
        self.scorer = ClipScorer.from_folder(campaign.clip_model,
                                             batch_size=campaign.spec.scoring.batch_size)
        self.logo = _open_image(campaign.brand.logo.path, "RGBA")
        self.references = [_open_image(ref.path, "RGB") for ref in campaign.brand.references]
        self.rendered = 0

    def environment(self) -> dict[str, Any]:
        return self.renderer.fingerprint()

    def run(self, pending: Sequence[PendingVariant], ledger: Ledger, out_dir: Path, *,
            run_id: str, recipe_hash: str, environment_hash: str, rules: Sequence[Any],
            show_progress: bool) -> None:
        from postprocess.gate import decide

        from .render import plan_batches

        reasons = {item.variant.id: item.rerender_reason for item in pending}
        progress = Progress(len(pending)) if show_progress else None
        input_files = self.input_files()
        for batch in plan_batches([item.variant for item in pending], self.batch_size()):
            started = time.perf_counter()
            images = self.renderer.render_resilient(self.campaign.recipe, batch)
            finished = [self.finish_image(image, variant) for image, variant in
                        zip(images, batch, strict=True)]
            scores = self.scorer.score(finished, [v.prompt for v in batch], self.references)
            seconds_each = (time.perf_counter() - started) / len(batch)
            for variant, image, score in zip(batch, finished, scores, strict=True):
                decision = decide(score.as_dict(), rules)
                data = encode_png(image, variant.spec)
                relative = f"{self.campaign.spec.name}/{variant.output_name}.png"
                write_bytes_atomic(out_dir / relative, data)
                ledger.add_render(RenderRecord(
                    run_id=run_id, variant_id=variant.id, campaign=self.campaign.spec.name,
                    recipe_name=self.campaign.recipe.spec.name,
                    recipe_version=self.campaign.recipe.spec.version, recipe_hash=recipe_hash,
                    variant_json=variant.spec_json, seed=variant.seed, axes=variant.axes,
                    prompt=variant.prompt, width=variant.width, height=variant.height,
                    input_files=input_files, output_path=relative,
                    output_sha256=sha256_bytes(data), output_bytes=len(data),
                    environment_hash=environment_hash, scores=score.as_dict(),
                    gate_status=decision.status, gate_reasons=decision.reasons,
                    render_seconds=round(seconds_each, 4),
                    rerender_reason=reasons[variant.id], batch=[v.id for v in batch]))
                self.rendered += 1
            if progress:
                progress.advance(len(batch))
        if progress:
            progress.close()

    def batch_size(self) -> int:
        from .render import auto_batch_size

        requested = self.campaign.spec.render.batch_size
        return requested if isinstance(requested, int) else auto_batch_size(
            self.renderer.device, self.campaign.recipe.spec.family)

    def finish_image(self, image: Image.Image, variant: Variant) -> Image.Image:
        """Post-process as the variant's spec says (what is hashed is what is applied)."""
        from postprocess.overlay import LogoPlacement, overlay_logo

        logo = variant.spec["postprocess"]["logo"]
        if logo is None:
            return image
        placement = LogoPlacement(anchor=logo["anchor"], margin=logo["margin"],
                                  scale=logo["scale"])
        return overlay_logo(image, self.logo, placement)

    def input_files(self) -> list[Mapping[str, str]]:
        campaign = self.campaign
        files = [("checkpoint", campaign.recipe.checkpoint)]
        if config := campaign.recipe.checkpoint_config:  # reproduce needs it to load offline
            files += [("checkpoint_config", ResolvedFile(config, hash_file(config)))]
        files += [("lora", lora) for lora, _ in campaign.recipe.loras]
        files += [("controlnet", model) for model in campaign.recipe.controlnets]
        files += [("ip_adapter", model) for model in [campaign.recipe.ip_adapter] if model]
        files += [("logo", campaign.brand.logo)]
        files += [("reference", ref) for ref in campaign.brand.references]
        return [{"role": role, "path": str(ref.path), "sha256": ref.sha256}
                for role, ref in files]


def _open_image(path: Path, mode: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert(mode)

