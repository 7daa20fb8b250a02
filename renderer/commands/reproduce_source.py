"""Where a reproduction's spec comes from: the ledger's record, or the image itself.

The source of truth is the *stored* spec, never today's recipe or campaign file: the render
row's variant JSON (every pixel-deciding setting, files by name and sha256), its input files
(paths and sha256), its batch and its environment fingerprint. Without a ledger, the image
says it itself: its ``campaign_variant`` JSON is the spec and its ``campaign_render``
(``renderer.produce.metadata.RenderContext``) its batch — each member's spec rebuilt from the
image's own and checked against its id —, output name, pixel-changing render options and
config folder; untrusted input, validated by the same schema as the files. Each becomes a
``Target``: what ``renderer.commands.reproduce`` renders again and compares.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import ValidationError

from postprocess.embedded_metadata import RENDER_KEY, VARIANT_KEY, read_export_metadata
from renderer.core.errors import InputError
from renderer.core.hashing import sha256_bytes, sha256_json
from renderer.core.json_value import JsonObject, JsonValue
from renderer.ledger.records import RenderRow
from renderer.ledger.store import Ledger
from renderer.load.schema import FileId
from renderer.plan.variant_spec import spec_problem
from renderer.produce.metadata import MAX_RENDER_BYTES, RenderContext


@dataclass(frozen=True)
class Target:
    """One deliverable to reproduce, as recorded."""

    variant_id: str
    spec: Mapping[str, Any]  # the stored JSON (what the id hashes)
    output_name: str  # the re-render goes to FOLDER/OUTPUT-NAME.png below dest
    original: Path | None  # the recorded image (to compare pixels with)
    original_sha256: str | None  # the recorded bytes' hash
    input_files: Sequence[Mapping[str, str]] = ()
    environment: Mapping[str, Any] | None = None
    batch: Sequence[str] = ()  # variant ids rendered with it, in order (empty: unknown)
    source: str = ""
    search: Sequence[Path] = ()  # where its per-variant images may be (the campaign's folder)
    folder: str | None = None  # None: the layout's (renderer.plan.output_folder)
    # The files it may be, compared with the same file's re-render: a channel export's name,
    # None for the master (several: a PNG export of the master's size, until bytes tell).
    channels: tuple[str | None, ...] = (None,)
    checkpoint_config: FileId | None = None  # a single-file checkpoint's config folder
    # From the image's campaign_render (the ledger's rows and environment say the same):
    mates: Mapping[str, JsonObject] = field(default_factory=dict)  # batch mates' specs
    options: Mapping[str, Any] = field(default_factory=dict)  # render options changing pixels
    unknown_batch: str = "batch not recorded"  # why, when ``batch`` is empty


def targets_from_ledger(ledger: Ledger, variant_ids: Sequence[str]) -> list[Target]:
    latest = ledger.latest_renders(variant_ids)
    targets = []
    for variant_id in variant_ids:
        row = latest.get(variant_id)
        if row is None:
            raise InputError(f"no render with id {variant_id} in the ledger", file=ledger.path)
        targets.append(_target_of(ledger, row))
    return targets


def _target_of(ledger: Ledger, row: RenderRow) -> Target:
    where = f"ledger row {row.id} of run {row.run_id}"
    _check_spec(row.spec, row.variant_id, where, ledger.path)
    run = ledger.run(row.run_id)
    config = next(
        (
            FileId(name=Path(entry["path"]).name, sha256=entry["sha256"])
            for entry in row.input_files
            if entry["role"] == "checkpoint_config"
        ),
        None,
    )
    return Target(
        variant_id=row.variant_id,
        spec=row.spec,
        output_name=row.output_name,
        folder=row.files_folder,
        original=ledger.path.parent / row.output_path,
        original_sha256=row.output_sha256,
        checkpoint_config=config,
        input_files=row.input_files,
        environment=ledger.environment(row.environment_hash),
        batch=row.batch,
        source=where,
        # Control images are named relative to the campaign file; the ledger records the
        # files a recipe names by path, a variant's images by name and sha256 only.
        search=(Path(run.campaign_file).parent,) if run else (),
    )


def target_from_image(path: Path, ledger: Ledger | None) -> Target:
    """A target from an image's own metadata — a master PNG or a channel export in any
    format — and the ledger's record of it when there is one."""
    data = path.read_bytes()
    spec, context, size, kind = _embedded(path, data)
    variant_id = sha256_json(spec)
    _check_spec(spec, variant_id, "the image's campaign_variant metadata", path)
    channels = _channels_of(spec, size, kind, sha256_bytes(data), ledger, path)
    if ledger is not None and ledger.renders_of(variant_id):
        recorded = targets_from_ledger(ledger, [variant_id])[0]
        return dataclasses.replace(
            recorded,
            original=path,
            original_sha256=sha256_bytes(data),
            channels=channels,
            source=f"{path} ({recorded.source})",
        )
    target = Target(
        variant_id=variant_id,
        spec=spec,
        output_name=path.stem,
        folder="",
        original=path,
        original_sha256=sha256_bytes(data),
        channels=channels,
        source=f"metadata of {path}",
    )
    if context is None:  # written before campaign_render: into dest itself, by its file name
        return target
    batch = _batch_of(spec, variant_id, context, path)
    return dataclasses.replace(
        target,
        output_name=context.output_name,
        folder=None,
        batch=() if context.batch_size else tuple(batch) or (variant_id,),
        mates={mate: mate_spec for mate, mate_spec in batch.items() if mate != variant_id},
        options=context.options,
        checkpoint_config=context.checkpoint_config,
        unknown_batch=f"its batch of {context.batch_size} images is not in the file (their "
        f"list was over the {MAX_RENDER_BYTES}-byte budget of campaign_render)",
    )


def _embedded(
    path: Path, data: bytes
) -> tuple[dict[str, Any], RenderContext | None, tuple[int, int], str]:
    """The variant JSON and the render context a PNG, JPEG or WebP written by the renderer
    carries (PNG text, or XMP ``campaign:KEY``), with the image's size and format."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            size, kind = image.size, str(image.format).lower()
        metadata = read_export_metadata(data)
        spec = json.loads(metadata[VARIANT_KEY]) if VARIANT_KEY in metadata else None
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(
            "cannot read this image's metadata",
            file=path,
            found=f"{type(err).__name__}: {err}",
            fix="pass a PNG, JPEG or WebP written by `campaign render`",
        ) from None
    if not isinstance(spec, dict):
        raise InputError(
            "the image carries no campaign_variant metadata",
            file=path,
            fix="pass an image written by `campaign render` (metadata intact), or a render id",
        )
    text = metadata.get(RENDER_KEY)
    try:
        return spec, None if text is None else RenderContext.read(text), size, kind
    except ValueError as err:
        raise InputError(
            f"the image's {RENDER_KEY} metadata is not one this renderer writes",
            file=path,
            found=_first_error(err),
            fix="pass the file as `campaign render` wrote it (metadata intact), "
            "or reproduce it by its render id from the ledger",
        ) from None


def _first_error(err: ValueError) -> str:
    """A validation error's first problem, where it is (``batch.0.id: …``); else the text."""
    if not isinstance(err, ValidationError):
        return str(err)
    first = err.errors(include_url=False)[0]
    return f"{'.'.join(str(part) for part in first['loc']) or '(top)'}: {first['msg']}"


def _batch_of(
    spec: JsonObject, variant_id: str, context: RenderContext, path: Path
) -> dict[str, dict[str, JsonValue]]:
    """The specs of the image's batch by id, in call order, rebuilt from its own ``spec``
    and each checked against its id; empty when it was rendered alone."""
    members = context.members(spec)
    ids = [member for member, _ in members]
    if members and (variant_id not in ids or len(set(ids)) < len(ids)):
        raise InputError(
            f"the image's campaign_render batch must list its own variant "
            f"{variant_id[:12]} once among distinct ids",
            file=path,
            found=", ".join(member[:12] for member in ids),
            fix="pass the file as `campaign render` wrote it (metadata intact)",
        )
    for index, (member, member_spec) in enumerate(members):
        _check_spec(
            member_spec, member, f"member {index} of the image's campaign_render batch", path
        )
    return dict(members)


def _channels_of(
    spec: Mapping[str, Any],
    size: tuple[int, int],
    kind: str,
    sha256: str,
    ledger: Ledger | None,
    path: Path,
) -> tuple[str | None, ...]:
    """Which file of its variant an image may be: the master (None) or a channel export — by
    the ledger's record of its bytes, else by its format and size among the spec's (a PNG
    export of the master's size may be either: the re-render's bytes tell)."""
    if ledger is not None:
        for row in ledger.renders_of(sha256_json(spec)):
            for export in ledger.exports_of([row.id]).get(row.id, []):
                if export.sha256 == sha256:
                    return (export.name,)
    exports = spec["postprocess"].get("exports") or []
    master: list[str | None] = (
        [None] if kind == "png" and size == (spec["width"], spec["height"]) else []
    )
    matches = master + [
        export["name"]
        for export in exports
        if export["format"] == kind and (export["width"], export["height"]) == size
    ]
    if not matches:
        raise InputError(
            f"this {kind.upper()} {size[0]}x{size[1]} is neither the variant's "
            "master nor one of its channel exports",
            file=path,
            expected="the master PNG "
            f"{spec['width']}x{spec['height']} or an export: "
            + (
                ", ".join(f"{e['name']} {e['format']} {e['width']}x{e['height']}" for e in exports)
                or "none"
            ),
            fix="pass the file as `campaign render` wrote it (not resized or converted)",
        )
    return tuple(matches)


def _check_spec(spec: JsonObject, variant_id: str, where: str, file: Path) -> None:
    if sha256_json(spec) != variant_id:
        raise InputError(
            f"{where}: the stored variant JSON does not hash to its id",
            file=file,
            expected=variant_id,
            found=sha256_json(spec),
            fix="it was edited or is damaged: restore the ledger or the image from a backup",
        )
    if problem := spec_problem(spec):
        raise InputError(
            f"{where} is not a variant spec this renderer can render",
            file=file,
            found=problem,
            fix="pass an image written by `campaign render` with its metadata "
            "intact, or a render id from the ledger",
        )
