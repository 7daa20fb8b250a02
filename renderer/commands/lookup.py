"""Find renders in the ledger and tell everything about one (``campaign show``).

A render is named by its variant id: the full 64 hex digits or a unique prefix of at least
6, or by the path of its image (the id is read from the PNG's ``campaign_variant``). A LoRA
of its recipe that a training of this ledger made (its sha256 is that training's LoRA or one
of its checkpoints) is shown with that training and its dataset: the provenance chain from
the image back to the pictures and captions the LoRA learnt from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from postprocess.embedded_metadata import VARIANT_KEY, read_export_metadata
from postprocess.gate_rules import guideline_summary
from renderer.core.errors import InputError
from renderer.core.hashing import hash_file, sha256_file, sha256_json
from renderer.core.terminal import printable
from renderer.ledger.store import LEDGER_NAME, Ledger
from renderer.load.yamlsource import read_bounded
from renderer.validate.file_probes import MAX_IMAGE_BYTES

MIN_PREFIX = 6
_HEX = re.compile(r"^[0-9a-f]+$")


def is_hash_prefix(text: str) -> bool:
    """Whether ``text`` (lower case) can stand for a hash: MIN_PREFIX hex digits or more."""
    return len(text) >= MIN_PREFIX and bool(_HEX.match(text))


def open_ledger(out_dir: Path, *, read_only: bool = True) -> Ledger:
    """The ledger of an output folder, for a command that does not render (read-only
    unless it records something, as ``campaign gate`` does)."""
    path = out_dir / LEDGER_NAME
    if not path.is_file() or path.stat().st_size == 0:
        raise InputError(
            "no ledger here",
            file=path,
            fix=f"pass --out with the folder you rendered into (it holds {LEDGER_NAME})",
        )
    return Ledger(path, read_only=read_only)


def resolve_variant_id(ledger: Ledger, text: str) -> str:
    """The rendered variant id that ``text`` names (an id, a unique prefix, or a PNG path)."""
    candidate = Path(text)
    if candidate.is_file():
        return variant_id_of_image(candidate)
    wanted = text.strip().lower()
    if not is_hash_prefix(wanted):
        raise InputError(
            f"{text!r} is neither a render id nor an image file",
            expected=f"a variant id or a unique prefix of at least {MIN_PREFIX} "
            "hex digits (see `campaign history --renders`), or a PNG path",
            found=repr(text),
        )
    matches = ledger.variant_ids_with_prefix(wanted)
    if not matches:
        raise InputError(
            f"no render with id {wanted} in the ledger",
            file=ledger.path,
            fix="list renders with `campaign history --renders`",
        )
    if len(matches) > 1:
        raise InputError(
            f"id prefix {wanted} is ambiguous",
            file=ledger.path,
            found=", ".join(match[:16] + "…" for match in matches),
            fix="give more hex digits",
        )
    return matches[0]


def variant_id_of_image(path: Path) -> str:
    """The variant id an image states: the hash of the ``campaign_variant`` JSON it carries
    (a master PNG, or a channel export in PNG, JPEG or WebP)."""

    data = read_bounded(path, MAX_IMAGE_BYTES, what="image")
    try:
        text = read_export_metadata(data).get(VARIANT_KEY)
        spec = None if text is None else json.loads(text)
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(
            "cannot read this image",
            file=path,
            found=str(err),
            fix="pass an image written by `campaign render`",
        ) from None
    if spec is None:
        raise InputError(
            "the image carries no campaign_variant metadata",
            file=path,
            fix="pass an image written by `campaign render` (metadata intact), or a render id",
        )
    return sha256_json(spec)


def file_state(path: Path, recorded_sha256: str) -> str:
    """'ok', 'missing' or 'altered (sha256 …)' for a file the ledger recorded."""
    if not path.exists():
        return "missing"
    found = hash_file(path) if path.is_dir() else sha256_file(path)
    return "ok" if found == recorded_sha256 else f"altered (sha256 now {found})"


def render_details(ledger: Ledger, variant_id: str) -> dict[str, Any]:
    """Everything the ledger knows about the current render of one variant, and how its
    files stand now."""
    rows = ledger.renders_of(variant_id)
    if not rows:
        raise InputError(f"no render with id {variant_id} in the ledger", file=ledger.path)
    row = rows[-1]
    out_dir = ledger.path.parent
    version = ledger.recipe_version(row.recipe_name, row.recipe_version)
    output = out_dir / row.output_path
    return {
        "variant_id": variant_id,
        "campaign": row.campaign,
        "render": {
            "row": row.id,
            "run_id": row.run_id,
            "created_at": row.created_at,
            "render_seconds": row.render_seconds,
            "rerender_reason": row.rerender_reason,
            "batch": list(row.batch) or None,
        },
        "recipe": {
            "name": row.recipe_name,
            "version": row.recipe_version,
            "content_hash": row.recipe_hash,
            "first_rendered_at": version["first_rendered_at"] if version else None,
            "resolved": version["resolved"] if version else None,
        },
        "seed": row.seed,
        "width": row.width,
        "height": row.height,
        "axes": row.axes,
        "prompt": row.prompt,
        "variant": row.spec,
        "output": {
            "path": row.output_path,
            "absolute": str(output.resolve()),
            "sha256": row.output_sha256,
            "bytes": row.output_bytes,
            "now": file_state(output, row.output_sha256),
        },
        "input_files": [
            {**entry, "now": file_state(Path(entry["path"]), entry["sha256"])}
            for entry in row.input_files
        ],
        "environment": {
            "hash": row.environment_hash,
            **(ledger.environment(row.environment_hash) or {}),
        },
        "scores": row.scores,
        "gate": {
            "status": row.status,
            "reasons": list(row.decision.reasons) if row.decision else [],
        },
        "guidelines": [item.as_json() for item in row.decision.guidelines] if row.decision else [],
        "decisions": [decision.as_json() for decision in ledger.decisions_of(row.id)],
        "review_state": row.review_state,
        "review": row.review.as_json() if row.review else None,
        "reviews": [review.as_json() for review in ledger.reviews_of(variant_id)],
        "exports": [
            {
                **export.as_json(),
                "size": [export.width, export.height],
                "now": file_state(out_dir / export.path, export.sha256),
            }
            for export in ledger.exports_of([row.id]).get(row.id, [])
        ],
        "runs": ledger.runs_with_variant(variant_id),
        "trained_loras": trained_loras(ledger, row.spec),
        "earlier_renders": [
            {
                "row": old.id,
                "run_id": old.run_id,
                "created_at": old.created_at,
                "output_sha256": old.output_sha256,
                "rerender_reason": old.rerender_reason,
            }
            for old in rows[:-1]
        ],
    }


def trained_loras(ledger: Ledger, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each LoRA of the render's recipe that a training recorded here made: the training,
    which of its checkpoints the file is, and its dataset with each file's state now."""
    loras = spec["recipe"]["loras"]
    made = {
        sha256: (training, step)
        for training, sha256, step in ledger.trainings_of_loras([lora["sha256"] for lora in loras])
    }
    out_dir = ledger.path.parent
    found = []
    for lora in loras:
        if lora["sha256"] not in made:
            continue
        training, step = made[lora["sha256"]]
        checkpoint = next(c for c in training.checkpoints if c["step"] == step)
        # The final LoRA is the last checkpoint's bytes: name the file recipes pin.
        path = (
            training.lora_path
            if step == training.spec["train"]["steps"] and training.lora_path
            else checkpoint["lora"]
        )
        found.append(
            {
                "lora": lora,
                "training": training.id,
                "ref": training.ref,
                "status": training.status,
                "spec_file": training.spec_file,
                "spec_hash": training.spec_hash,
                "finished_at": training.finished_at,
                "base": training.spec["base"],
                "steps": training.spec["train"]["steps"],
                "step": step,
                "loss": checkpoint["loss"],
                "report": training.report_path,
                "lora_path": path,
                "lora_now": file_state(out_dir / path, lora["sha256"]),
                "dataset": [
                    {**item, "now": file_state(Path(item["path"]), item["sha256"])}
                    for item in training.dataset
                ],
            }
        )
    return found


def format_details(details: dict[str, Any]) -> str:
    """``render_details`` for a person."""
    render, recipe, output = details["render"], details["recipe"], details["output"]
    variant = details["variant"]
    lines = [
        f"render {details['variant_id']}",
        f"  campaign     {details['campaign']}",
        f"  recipe       {recipe['name']}@{recipe['version']}  content {recipe['content_hash']}"
        + (
            f"  first rendered {recipe['first_rendered_at'][:19]}"
            if recipe["first_rendered_at"]
            else ""
        ),
        f"  run          {render['run_id']}  row {render['row']}  at {render['created_at'][:19]}"
        f"  {render['render_seconds']:.3f} s/image"
        + (f"  re-rendered: file {render['rerender_reason']}" if render["rerender_reason"] else ""),
        f"  seed         {details['seed']}",
        f"  size         {details['width']}x{details['height']}",
        f"  axes         {json.dumps(details['axes'], ensure_ascii=False)}",
        f"  prompt       {details['prompt']}",
        f"  negative     {variant.get('negative_prompt', '')}",
        f"  steps/cfg    {variant['recipe']['steps']} / {variant['recipe']['cfg']}, scheduler "
        f"{variant['recipe']['scheduler']}",
        f"  output       {output['path']}  {output['bytes']} bytes  sha256 {output['sha256']}"
        f"  [{output['now']}]",
        f"  gate         {details['gate']['status']}"
        + (f" ({'; '.join(details['gate']['reasons'])})" if details["gate"]["reasons"] else ""),
        "  guidelines   "
        + guideline_summary(
            len(details["guidelines"]),
            [item["name"] for item in details["guidelines"] if not item["passed"]],
        ),
        "  scores       "
        + ", ".join(f"{name} {value:.4f}" for name, value in details["scores"].items()),
    ]
    for decision in details["decisions"]:
        lines.append(
            f"  decided      {decision['status']:<6} run {decision['run_id']} "
            f"({decision['source']}, {decision['decided_at'][:19]})"
            + (f": {'; '.join(decision['reasons'])}" if decision["reasons"] else "")
        )
    review = details["review"]
    lines.append(
        f"  review       {details['review_state']}"
        + (
            f" by {review['reviewer']} at {review['reviewed_at'][:19]}"
            + (f": {review['note']}" if review["note"] else "")
            if review
            else ""
        )
    )
    for export in details["exports"]:
        lines.append(
            f"  export       {export['name']:<10} {export['size'][0]}x{export['size'][1]} "
            f"{export['format']:<4} {export['path']}  [{export['now']}]"
        )
    lines += [
        "  input files",
    ]
    lines += [
        f"    {entry['role']:<18} {entry['sha256'][:12]}  {entry['path']}  [{entry['now']}]"
        for entry in details["input_files"]
    ]
    environment = {key: value for key, value in details["environment"].items() if key != "hash"}
    lines.append(f"  environment  {details['environment']['hash'][:12]}")
    lines += [
        f"    {key:<18} {json.dumps(value) if isinstance(value, dict) else value}"
        for key, value in environment.items()
    ]
    if render["batch"]:
        lines.append(
            f"  batch        {len(render['batch'])} image(s): "
            + ", ".join(member[:12] for member in render["batch"])
        )
    lines += _format_trained(details["trained_loras"])
    lines.append(
        "  runs         "
        + ", ".join(
            f"{run['id']} ({run['status']}, "
            f"{'rendered it' if run['outcome'] == 'to_render' else 'already done'})"
            for run in details["runs"]
        )
    )
    for old in details["earlier_renders"]:
        lines.append(
            f"  earlier      row {old['row']} run {old['run_id']} at "
            f"{old['created_at'][:19]} sha256 {old['output_sha256'][:12]}"
        )
    return "\n".join(lines)


def _format_trained(trained: list[dict[str, Any]]) -> list[str]:
    lines = []
    for entry in trained:
        lora, base = entry["lora"], entry["base"]
        which = (
            "its final LoRA"
            if entry["step"] == entry["steps"]
            else f"its checkpoint at step {entry['step']} of {entry['steps']}"
        )
        lines += [
            f"  trained LoRA {lora['name']} (weight {lora['weight']}) sha256 "
            f"{lora['sha256'][:12]}: {which}",
            f"    training   {entry['training']}  {entry['status']}"
            + (f" {entry['finished_at'][:19]}" if entry["finished_at"] else ""),
            f"    spec       {entry['spec_file']}  hash {entry['spec_hash'][:12]}",
            f"    base       {base['recipe']}: {base['checkpoint']['name']} "
            f"{base['checkpoint']['sha256'][:12]}",
            f"    loss       {entry['loss']:.5f} at step {entry['step']}",
            f"    file       {entry['lora_path']}  [{entry['lora_now']}]",
        ]
        if entry["report"]:
            lines.append(f"    report     {entry['report']}")
        lines.append(f"    dataset    {len(entry['dataset'])} images")
        lines += [
            f'      {item["sha256"][:12]}  {item["name"]}  "{item["caption"]}"  '
            f"{item['path']}  [{item['now']}]"
            for item in entry["dataset"]
        ]
    return [printable(line) for line in lines]
