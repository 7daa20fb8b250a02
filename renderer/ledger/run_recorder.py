"""The driver side of a run: one ledger row per produced image, committed as it comes, with
the files the render read (``input_files``), its rerender reason and its batch; the images
that failed are said and fail the run once the rest is in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from renderer.core.errors import RenderFailure
from renderer.core.hashing import hash_file
from renderer.core.terminal import Log
from renderer.ledger.records import RenderRecord
from renderer.ledger.store import Ledger
from renderer.plan.variants import Variant
from renderer.produce.job import FailedImage, Produced
from renderer.validate.inputs import Campaign, Recipe, ResolvedFile


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
    if config := recipe.refiner_config:  # a single-file refiner's, as the checkpoint's
        files += [("refiner.checkpoint_config", ResolvedFile(config, hash_file(config)))]
    files += [("logo", campaign.brand.logo)]
    files += [("reference", ref) for ref in campaign.brand.references]
    files += [(f"font {role}", font) for role, font in campaign.brand.fonts.items()]
    files += [(f"font fallback {i}", font) for i, font in enumerate(campaign.brand.font_fallbacks)]
    return [{"role": role, "path": str(ref.path), "sha256": ref.sha256} for role, ref in files]
