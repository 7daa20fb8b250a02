"""Re-render past deliverables from what was recorded, and say whether they match.

Each deliverable is a ``Target`` read from its stored spec, never today's recipe or
campaign file (``renderer.commands.reproduce_source``: the ledger's row, or the image's own
metadata). Files are found by name and sha256 under search folders, else by content.

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
from typing import Any

from renderer.commands.image_diff import compare
from renderer.commands.lookup import open_ledger, resolve_variant_id
from renderer.commands.reproduce_source import Target, target_from_image, targets_from_ledger
from renderer.core.errors import InputError, RenderFailure
from renderer.core.hashing import sha256_bytes
from renderer.core.json_value import JsonObject, JsonValue
from renderer.core.terminal import Log
from renderer.ledger.records import RenderRow
from renderer.ledger.store import LEDGER_NAME, Ledger
from renderer.load.schema import FileId
from renderer.plan.jobs import WITHOUT_BATCH, Job
from renderer.plan.output_folder import reproduction_root
from renderer.plan.variant_spec import VariantSpec
from renderer.plan.variants import Variant
from renderer.produce.job import Produced
from renderer.produce.worker import Worker
from renderer.render.diffusers_renderer import DiffusersRenderer
from renderer.render.environment import differences, options_like, pixel_option_differences
from renderer.render.loras import LoraSlots
from renderer.render.options import RenderOptions
from renderer.validate.file_finder import FileFinder, InputProblem, file_role, spec_files
from renderer.validate.file_probes import pickle_weights
from renderer.validate.inputs import FileIndex, ResolvedFile

TOLERANCE_OTHER_ENVIRONMENT = 1  # in 1/255 steps, per channel (README: "Ids, seeds …")
DEFAULT_MIN_SSIM = 0.99


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

    def as_json(self) -> dict[str, JsonValue]:
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
        else:
            assert ledger is not None  # opened above: only an image may go without one
            targets = _recorded_targets(ledger, what, run)
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


def _recorded_targets(ledger: Ledger, what: str | Path | None, run: str | None) -> list[Target]:
    """The ledger's targets: ``run``'s whole set, else the one ``what`` names."""
    if run is not None:
        recorded = ledger.find_run(run)
        return targets_from_ledger(ledger, [row.variant_id for row in ledger.run_rows(recorded.id)])
    return targets_from_ledger(ledger, [resolve_variant_id(ledger, str(what))])


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
        for key_path, name, sha256 in spec_files(spec):
            if (found := finder.find(file_role(key_path), name, sha256)) is not None:
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
        for key, recorded in _single_file_models(target):
            model = finder.found.get(key)
            if model is None:
                continue
            family = str(target.spec["recipe"]["family"])
            config, problem = finder.checkpoint_config(recorded, model, family)
            if config is not None:
                configs[model.sha256] = config
                if recorded is not None and key == _checkpoint_key(target.spec):
                    recorded_configs[model.sha256] = recorded  # the worker embeds it
            if problem:
                config_problems[target.variant_id] = problem

    def problems_of(spec: JsonObject) -> list[InputProblem]:
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


def _single_file_models(target: Target) -> list[tuple[tuple[str, str], FileId | None]]:
    """The models a config folder may load (the checkpoint, an SDXL refiner) by (name,
    sha256), each with its config folder as recorded (None: not recorded)."""
    models = [(_checkpoint_key(target.spec), target.checkpoint_config)]
    refiner = ((target.spec["recipe"].get("refine") or {}).get("refiner") or {}).get("checkpoint")
    if refiner:
        recorded = next(
            (
                FileId(name=Path(entry["path"]).name, sha256=entry["sha256"])
                for entry in target.input_files
                if entry["role"] == "refiner.checkpoint_config"
            ),
            None,
        )
        models.append(((refiner["name"], refiner["sha256"]), recorded))
    return models


def _recorded_slots(
    target: Target, finder: FileFinder, located: list[ResolvedFile]
) -> dict[str, LoraSlots]:
    """The hot-swap slots the target's run used whose first LoRAs are found (added to
    ``located``); a checkpoint's slots with one missing are left out: its stacks switch
    with set_adapters, and the environment difference (``options.lora_hotswap``) says so."""
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
    renderer: DiffusersRenderer | None,
    environment: Mapping[str, Any] | None,
    options: Mapping[str, Any],
    lora_slots: Mapping[str, LoraSlots],
    allow_pickle: bool,
    log: Log,
) -> DiffusersRenderer:
    """A renderer set up as the recorded environment was (threads, device, dtype, options,
    a compiled denoiser's LoRA hot-swap slots); without one, with the pixel-changing
    ``options`` an image names."""
    import torch  # lazy: the command's start-up loads no torch until it renders

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
    difference, ssim = result.max_pixel_difference, result.ssim
    if difference is None or ssim is None:  # the recorded file is gone, altered or resized
        outcome.status = "drift"
        return
    within = difference <= outcome.tolerance and ssim >= outcome.min_ssim
    outcome.status = "within tolerance" if within else "drift"
    if not within and not outcome.environment_differences:
        outcome.notes.append(
            "same environment, yet the pixels moved: check the files' hashes "
            "and the batch notes above"
        )
