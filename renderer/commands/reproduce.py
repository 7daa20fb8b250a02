"""Re-render past deliverables from what was recorded, and say whether they match.

The source of truth is the *stored* spec, never today's recipe or campaign file: the render
row's variant JSON (every pixel-deciding setting, files by name and sha256), its input files
(paths and sha256), its batch and its environment fingerprint. Without a ledger, the image
says it itself: its ``campaign_variant`` JSON is the spec and its ``campaign_render``
(``renderer.produce.metadata.RenderContext``) its batch — each member's spec rebuilt from the
image's own and checked against its id —, output name, pixel-changing render options and
config folder; untrusted input, validated by the same schema as the files. Files are found
by name and sha256 under search folders, else by content.

Order of work:
1. **Inputs.** Every file the spec names is located (``renderer.validate.file_finder``:
   recorded path, then the search folders) and its sha256 checked. A missing or changed
   file stops here: nothing is rendered and the report names the file, the recorded and the
   found hash.
2. **Environment.** The recorded thread count, device and dtype are pinned where this
   machine allows (from an image alone: its options); what still differs (a package
   version, the device, …) is listed.
3. **Render.** Each target is rendered inside the same batch it was rendered in (without
   it, pixels move: ``WITHOUT_BATCH``) by the worker ``campaign render`` uses
   (``renderer.produce.worker.Worker``), so it is post-processed and encoded exactly as then, at
   its recorded path below the destination.
4. **Compare** (``renderer.commands.image_diff``). Identical bytes, else the largest per-channel
   difference and SSIM against the tolerance: 0 when the environment is the same, 1/255
   when it differs (override with ``tolerance``/``min_ssim``).

Exit codes: 0 every target matches within tolerance, 1 drift, 2 bad input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from renderer.commands.image_diff import compare
from renderer.core.errors import InputError, RenderFailure
from renderer.core.hashing import sha256_bytes, sha256_json
from renderer.core.terminal import Log
from renderer.ledger.records import RenderRow
from renderer.ledger.store import LEDGER_NAME, Ledger
from renderer.load.schema import FileId
from renderer.plan.output_folder import reproduction_root
from renderer.plan.variant_spec import VariantSpec, spec_problem
from renderer.plan.variants import Variant
from renderer.produce.metadata import MAX_RENDER_BYTES, RenderContext
from renderer.produce.worker import WITHOUT_BATCH, Job, Produced, Worker
from renderer.render.environment import differences, options_like, pixel_option_differences
from renderer.validate.checks import pickle_weights
from renderer.validate.file_finder import FileFinder, InputProblem, file_role, spec_files
from renderer.validate.inputs import FileIndex, ResolvedFile

if TYPE_CHECKING:
    from renderer.render.diffusers_renderer import LoraSlots

TOLERANCE_OTHER_ENVIRONMENT = 1  # in 1/255 steps, per channel (README: "Ids, seeds …")
DEFAULT_MIN_SSIM = 0.99


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
    mates: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # batch mates' specs
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
    import io
    import json

    from PIL import Image

    from postprocess.embedded_metadata import RENDER_KEY, VARIANT_KEY, read_export_metadata

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
    from pydantic import ValidationError

    if not isinstance(err, ValidationError):
        return str(err)
    first = err.errors(include_url=False)[0]
    return f"{'.'.join(str(part) for part in first['loc']) or '(top)'}: {first['msg']}"


def _batch_of(
    spec: Mapping[str, Any], variant_id: str, context: RenderContext, path: Path
) -> dict[str, dict[str, Any]]:
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


def _check_spec(spec: Mapping[str, Any], variant_id: str, where: str, file: Path) -> None:
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


@dataclass
class Outcome:
    variant_id: str
    source: str
    status: str = "pending"  # identical | within tolerance | drift | inputs changed
    reproduced: str | None = None
    identical_bytes: bool | None = None
    max_pixel_difference: int | None = None  # in 1/255 steps, per channel
    ssim: float | None = None
    tolerance: int = 0
    min_ssim: float = DEFAULT_MIN_SSIM
    input_problems: list[str] = field(default_factory=list)
    environment_differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return self.status in ("identical", "within tolerance")

    def describe(self) -> str:
        head = f"{self.variant_id[:12]}  {self.status.upper()}"
        figures = []
        if self.identical_bytes is not None:
            figures.append("identical bytes" if self.identical_bytes else "bytes differ")
        if self.max_pixel_difference is not None:
            figures.append(
                f"max pixel difference {self.max_pixel_difference}/255 "
                f"(tolerance {self.tolerance}/255)"
            )
        if self.ssim is not None:
            figures.append(f"SSIM {self.ssim:.6f} (min {self.min_ssim})")
        lines = [head + (f": {', '.join(figures)}" if figures else "")]
        lines += [f"    input: {problem}" for problem in self.input_problems]
        lines += [f"    environment: {difference}" for difference in self.environment_differences]
        lines += [f"    note: {note}" for note in self.notes]
        if self.reproduced:
            lines.append(f"    re-rendered: {self.reproduced}")
        lines.append(f"    from: {self.source}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "matches": self.matches}


def reproduce(
    what: str | Path | None = None,
    *,
    out_dir: Path = Path("outputs"),
    run: str | None = None,
    into: Path | None = None,
    search: Sequence[Path] = (),
    tolerance: int | None = None,
    min_ssim: float = DEFAULT_MIN_SSIM,
    allow_pickle: bool = False,
    log: Log = lambda _: None,
) -> list[Outcome]:
    """Re-render deliverables and compare them with what was recorded: ``what`` is a variant
    id (or a unique prefix of one) or an image path; ``run`` takes a run's whole set
    instead. The ledger is ``out_dir/ledger.sqlite`` (optional for an image); re-renders go
    to ``into`` (``output_folder.reproduction_root``). Pickle weights are refused unless
    ``allow_pickle`` (the caller's word: a spec, above all one read from an image, cannot
    grant it)."""
    from renderer.commands.lookup import open_ledger, resolve_variant_id

    if (what is None) == (run is None):
        raise InputError(
            "give one render id, image or --run RUN",
            fix="campaign reproduce "
            "ID, campaign reproduce IMAGE.png, or campaign reproduce --run RUN",
        )
    image = Path(what) if what is not None and Path(what).is_file() else None
    has_ledger = (out_dir / LEDGER_NAME).is_file()
    ledger = open_ledger(out_dir) if image is None or has_ledger else None
    try:
        if image is not None:
            targets = [target_from_image(image, ledger)]
        elif run is not None:
            recorded = ledger.find_run(run)
            targets = targets_from_ledger(
                ledger, [row.variant_id for row in ledger.run_rows(recorded.id)]
            )
        else:
            targets = targets_from_ledger(ledger, [resolve_variant_id(ledger, str(what))])
        return reproduce_targets(
            targets,
            reproduction_root(out_dir, into),
            lookup=ledger.latest_renders if ledger else lambda ids: {},
            search=search,
            tolerance=tolerance,
            min_ssim=min_ssim,
            allow_pickle=allow_pickle,
            log=log,
        )
    finally:
        if ledger is not None:
            ledger.close()


def reproduce_targets(
    targets: Sequence[Target],
    dest: Path,
    *,
    lookup: Callable[[Sequence[str]], Mapping[str, RenderRow]] = lambda ids: {},
    search: Sequence[Path] = (),
    tolerance: int | None = None,
    min_ssim: float = DEFAULT_MIN_SSIM,
    allow_pickle: bool = False,
    log: Log = lambda _: None,
) -> list[Outcome]:
    """Re-render ``targets`` into ``dest`` and compare; ``lookup`` gives the stored render
    rows of batch mates by variant id."""
    outcomes = {
        target.variant_id: Outcome(target.variant_id, target.source, min_ssim=min_ssim)
        for target in targets
    }
    # 1. Every batch to render again: the recorded one, else the target alone.
    units: dict[tuple[str, ...], list[Target]] = {}
    for target in targets:
        key = tuple(target.batch) if target.variant_id in target.batch else (target.variant_id,)
        units.setdefault(key, []).append(target)
    names = {target.variant_id: (target.output_name, target.folder) for target in targets}
    specs: dict[str, Mapping[str, Any]] = {t.variant_id: t.spec for t in targets}
    for target in targets:  # batch mates an image names (co-members: never written)
        for mate, spec in target.mates.items():
            specs.setdefault(mate, spec)
            names.setdefault(mate, (mate, ""))
    for mate, row in lookup([mate for key in units for mate in key if mate not in specs]).items():
        specs[mate], names[mate] = row.spec, (row.output_name, row.files_folder)
    # 2. Locate and check every file of every spec involved, before loading anything.
    hints = [folder for target in targets for folder in target.search]
    finder = FileFinder(
        [entry for target in targets for entry in target.input_files],
        [*search, *dict.fromkeys(hints)],
    )
    located: list[ResolvedFile] = []
    for spec in specs.values():
        for key, name, sha256 in spec_files(spec):
            if (found := finder.find(file_role(key), name, sha256)) is not None:
                located.append(found)
    # The LoRAs a compiled run's hot-swap slots loaded first (another recipe's, maybe).
    slots = {target.variant_id: _recorded_slots(target, finder, located) for target in targets}
    # A pickle is refused as soon as it is found, whatever else is missing.
    if not allow_pickle and (
        pickled := [(file, why) for file in located if (why := pickle_weights(file.path))]
    ):
        file, why = pickled[0]
        raise InputError(
            f"{file.path.name} holds pickle weights ({why}); they are not loaded",
            file=file.path,
            expected=".safetensors weights",
            fix="convert the file to .safetensors, or pass --allow-pickle if you "
            "trust it (loading a pickle can run code; a spec cannot allow it)",
        )
    configs: dict[str, Path] = {}
    recorded_configs: dict[str, FileId] = {}  # as the files name them (the worker embeds it)
    config_problems: dict[str, InputProblem] = {}
    for target in targets:
        checkpoint = finder.found.get(_checkpoint_key(target.spec))
        if checkpoint is not None:
            config, problem = finder.checkpoint_config(target.checkpoint_config, checkpoint)
            if config is not None:
                configs[checkpoint.sha256] = config
                if target.checkpoint_config is not None:
                    recorded_configs[checkpoint.sha256] = target.checkpoint_config
            if problem:
                config_problems[target.variant_id] = problem

    def problems_of(spec: Mapping[str, Any]) -> list[InputProblem]:
        return [
            finder.problems[(name, sha)]
            for _, name, sha in spec_files(spec)
            if (name, sha) in finder.problems
        ]

    for mate in [mate for mate in specs if mate not in outcomes]:
        if problems_of(specs[mate]):  # a batch mate whose own files are gone: leave it out
            del specs[mate]
    for target in targets:
        outcome = outcomes[target.variant_id]
        problems = problems_of(target.spec) + (
            [config_problems[target.variant_id]] if target.variant_id in config_problems else []
        )
        if problems:
            outcome.status = "inputs changed"
            outcome.input_problems = list(dict.fromkeys(p.describe() for p in problems))
    if any(outcome.input_problems for outcome in outcomes.values()):
        for outcome in outcomes.values():
            if not outcome.input_problems:
                outcome.status = "not rendered"
                outcome.notes.append("nothing rendered: other targets' inputs changed")
        return list(outcomes.values())
    files = FileIndex.of(located, configs)
    # 3. Render each batch again, pinned to the recorded environment where possible.
    renderer = None
    for key, members in units.items():
        first = members[0]
        mates = [mate for mate in key if mate in specs]
        batch = [
            Variant(
                spec=VariantSpec.from_json(specs[mate]),
                id=mate,
                output_name=names[mate][0],
                aspect=None,
                folder=names[mate][1],
            )
            for mate in mates
        ]
        if len(mates) < len(key):
            for target in members:
                outcomes[target.variant_id].notes.append(
                    f"{len(key) - len(mates)} of the {len(key)} images of its batch are not in "
                    f"the ledger or the image, or their files are gone: rendered without "
                    f"them ({WITHOUT_BATCH})"
                )
        elif len(key) == 1 and not first.batch:
            outcomes[first.variant_id].notes.append(
                f"{first.unknown_batch}: rendered alone ({WITHOUT_BATCH})"
            )
        renderer = _renderer_for(
            renderer, first.environment, first.options, slots[first.variant_id], allow_pickle, log
        )
        # It compares pixels, not scores.
        worker = Worker(renderer, files, scoring=None, configs=recorded_configs)
        log(f"rendering {len(batch)} image(s) for {len(members)} target(s)")
        # Only the targets are written; their recorded batch mates render beside them.
        job = Job(tuple(batch), frozenset(target.variant_id for target in members))
        result = worker.produce(job, dest)
        if failed := [item for item in result.failed if not item.co_member]:
            raise RenderFailure(
                f"{len(failed)} reproduction(s) could not be finished: "
                + "; ".join(item.describe() for item in failed)
            )
        produced = {item.variant.id: item for item in result.produced}
        current = worker.environment()
        for target in members:
            outcome = outcomes[target.variant_id]
            outcome.environment_differences = differences(target.environment, current)
            if changed := pixel_option_differences(
                target.environment, current, type(renderer.options).changing_pixels()
            ):
                outcome.notes.append(
                    "render options that change pixels differ: " + "; ".join(changed)
                )
            _judge(outcome, target, produced[target.variant_id], dest, tolerance)
    return list(outcomes.values())


def _checkpoint_key(spec: Mapping[str, Any]) -> tuple[str, str]:
    checkpoint = spec["recipe"]["checkpoint"]
    return checkpoint["name"], checkpoint["sha256"]


def _recorded_slots(
    target: Target, finder: FileFinder, located: list[ResolvedFile]
) -> dict[str, LoraSlots]:
    """The hot-swap slots the target's run used whose first LoRAs are found (added to
    ``located``); a checkpoint's slots with one missing are left out: its stacks switch
    with set_adapters, and the environment difference (``options.lora_hotswap``) says so."""
    from renderer.render.diffusers_renderer import LoraSlots

    found = {}
    for checkpoint, slots in LoraSlots.recorded(target.environment).items():
        files = [
            finder.find("lora (hot-swap slot)", file.name, file.sha256) for file in slots.first
        ]
        if all(files):
            located.extend(file for file in files if file is not None)
            found[checkpoint] = slots
    return found


def _renderer_for(
    renderer: Any,
    environment: Mapping[str, Any] | None,
    options: Mapping[str, Any],
    lora_slots: Mapping[str, LoraSlots],
    allow_pickle: bool,
    log: Log,
) -> Any:
    """A renderer set up as the recorded environment was (threads, device, dtype, options,
    a compiled denoiser's LoRA hot-swap slots); without one, with the pixel-changing
    ``options`` an image names."""
    import torch

    from renderer.render.diffusers_renderer import DiffusersRenderer, RenderOptions

    if environment and environment.get("threads"):
        torch.set_num_threads(int(environment["threads"]))
    wanted = RenderOptions(**{**options, **options_like(environment, RenderOptions.known())})
    # Slots are recorded for compiled runs only, and their options say compile.
    if renderer is None or renderer.options != wanted or renderer.lora_slots != lora_slots:
        renderer = DiffusersRenderer(
            wanted, allow_pickle=allow_pickle, log=log, lora_slots=lora_slots
        )
    return renderer


def _judge(
    outcome: Outcome, target: Target, produced: Produced, dest: Path, tolerance: int | None
) -> None:
    exports = {export.name: export.path for export in produced.exports}
    paths = [
        dest / (produced.output_path if channel is None else exports[channel])
        for channel in target.channels
    ]  # the same file's re-render
    path = next(
        (path for path in paths if sha256_bytes(path.read_bytes()) == target.original_sha256),
        paths[0],
    )
    outcome.reproduced = str(path)
    outcome.tolerance = (
        tolerance
        if tolerance is not None
        else (0 if not outcome.environment_differences else TOLERANCE_OTHER_ENVIRONMENT)
    )
    result = compare(target.original, target.original_sha256, path.read_bytes(), path)
    outcome.identical_bytes = result.identical_bytes
    outcome.max_pixel_difference, outcome.ssim = result.max_pixel_difference, result.ssim
    outcome.notes += result.notes
    if result.identical_bytes:
        outcome.status = "identical"
        return
    if not result.comparable:
        outcome.status = "drift"
        return
    within = result.max_pixel_difference <= outcome.tolerance and result.ssim >= outcome.min_ssim
    outcome.status = "within tolerance" if within else "drift"
    if not within and not outcome.environment_differences:
        outcome.notes.append(
            "same environment, yet the pixels moved: check the files' hashes "
            "and the batch notes above"
        )
