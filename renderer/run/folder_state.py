"""What the output folder and its ledger say before a run renders (README, "Resume" and
"The output folder"): paths other records hold, images a lost ledger made, recipes edited in
place (all refused, exit 2, before the ledger is opened), and the work left: masters to
render and exports to rebuild."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from renderer.core.errors import InputError
from renderer.core.hashing import sha256_file, sha256_json
from renderer.ledger.records import ExportRow, RenderRow
from renderer.ledger.store import Ledger
from renderer.plan.output_folder import Holder, OutputFolder, check_planned
from renderer.plan.variants import Plan, Variant, recipe_content
from renderer.validate.inputs import Campaign


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
