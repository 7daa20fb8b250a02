"""Re-render past deliverables from what was recorded, and say whether they match.

The source of truth is the *stored* spec, never today's recipe or campaign file: the render
row's variant JSON (every pixel-deciding setting, files by name and sha256), its input files
(paths and sha256), its batch and its environment fingerprint. Without a ledger, the
``campaign_variant`` JSON inside the PNG serves, and files are found by name and sha256
under search folders.

Order of work:
1. **Inputs.** Every file the spec names is located (recorded path, then the search
   folders) and its sha256 checked. A missing or changed file stops here: nothing is
   rendered and the report names the file, the recorded and the found hash (exit 1).
2. **Environment.** The recorded thread count, device and dtype are pinned where this
   machine allows; what still differs (a package version, the device, …) is listed.
3. **Render.** Each target is rendered inside the same batch it was rendered in (alone, an
   image may move by 1/255), post-processed and encoded exactly as ``campaign render`` does.
4. **Compare.** Identical bytes, else the largest per-channel difference and SSIM against
   the tolerance: 0 when the environment is the same, 1/255 when it differs (override with
   ``tolerance``/``min_ssim``).

Exit codes: 0 every target matches within tolerance, 1 drift, 2 bad input.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .atomic import write_bytes_atomic
from .config import Recipe, RecipeFile, ResolvedFile, hash_file
from .errors import InputError
from .hashing import sha256_bytes, sha256_json
from .ledger import Ledger
from .plan import Variant
from .yamlsource import YamlDocument

Log = Callable[[str], None]
TOLERANCE_OTHER_ENVIRONMENT = 1  # in 1/255 steps, per channel (DESIGN.md)
DEFAULT_MIN_SSIM = 0.99


# ---------------------------------------------------------------- what was recorded


@dataclass(frozen=True)
class Target:
    """One deliverable to reproduce, as recorded."""

    variant_id: str
    spec: Mapping[str, Any]
    name: str                       # where the re-render goes, relative to the destination
    original: Path | None           # the recorded image (to compare pixels with)
    original_sha256: str | None     # the recorded bytes' hash
    input_files: Sequence[Mapping[str, str]] = ()
    environment: Mapping[str, Any] | None = None
    batch: Sequence[str] = ()       # variant ids rendered with it, in order (empty: unknown)
    source: str = ""
    search: Sequence[Path] = ()    # where its per-variant images may be (the campaign's folder)


def targets_from_ledger(ledger: Ledger, variant_ids: Sequence[str]) -> list[Target]:
    out_dir = ledger.path.parent
    targets = []
    for variant_id in variant_ids:
        rows = ledger.renders_of(variant_id)
        if not rows:
            raise InputError(f"no render with id {variant_id} in the ledger", file=ledger.path)
        row = rows[-1]
        spec = json.loads(row["variant_json"])
        _check_spec_id(spec, variant_id, f"ledger row {row['id']}")
        targets.append(Target(
            variant_id=variant_id, spec=spec, name=row["output_path"],
            original=out_dir / row["output_path"], original_sha256=row["output_sha256"],
            input_files=json.loads(row["input_files_json"]),
            environment=ledger.environment(row["environment_hash"]),
            batch=json.loads(row["batch_json"]) if row["batch_json"] else (),
            source=f"ledger row {row['id']} of run {row['run_id']}",
            search=_campaign_folder(ledger, row["run_id"])))
    return targets


def _campaign_folder(ledger: Ledger, run_id: str) -> tuple[Path, ...]:
    """Control images are named relative to the campaign file; the ledger records the
    files a recipe names by path, a variant's images by name and sha256 only."""
    run = ledger.run(run_id)
    return (Path(run["campaign_file"]).parent,) if run else ()


def target_from_image(path: Path, ledger: Ledger | None) -> Target:
    """A target from a PNG's own metadata; the ledger's record of it when there is one."""
    from .metadata import read_png_metadata

    data = path.read_bytes()
    try:
        spec = read_png_metadata(data).get("variant")
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError("cannot read this image", file=path, found=str(err)) from None
    if spec is None:
        raise InputError("the image carries no campaign_variant metadata", file=path,
                         fix="pass a PNG written by `campaign render`, or a render id")
    variant_id = sha256_json(spec)
    if ledger is not None and ledger.renders_of(variant_id):
        recorded = targets_from_ledger(ledger, [variant_id])[0]
        return dataclasses.replace(recorded, name=path.name, original=path,
                                   original_sha256=sha256_bytes(data),
                                   source=f"{path} ({recorded.source})")
    return Target(variant_id=variant_id, spec=spec, name=path.name, original=path,
                  original_sha256=sha256_bytes(data), source=f"metadata of {path}")


def _check_spec_id(spec: Mapping[str, Any], variant_id: str, where: str) -> None:
    if sha256_json(spec) != variant_id:
        raise InputError(f"{where}: the stored variant JSON does not hash to its id",
                         expected=variant_id, found=sha256_json(spec),
                         fix="the ledger was edited or is damaged; restore it from a backup")


# ---------------------------------------------------------------- input files


@dataclass(frozen=True)
class InputProblem:
    role: str
    name: str
    recorded_sha256: str
    path: str | None = None         # where a file of that name was found
    found_sha256: str | None = None  # None: missing
    looked_in: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.found_sha256 is None:
            return (f"{self.role} {self.name} is missing (recorded sha256 "
                    f"{self.recorded_sha256}); looked in: {', '.join(self.looked_in)}")
        return (f"{self.role} {self.name} changed: {self.path} has sha256 {self.found_sha256}, "
                f"the render used sha256 {self.recorded_sha256}")


class FileFinder:
    """Locate a file by name and sha256: the recorded paths first, then the search folders
    (the folder itself, then anywhere below it). Hashes go through the hash cache."""

    def __init__(self, recorded: Iterable[Mapping[str, str]], search: Sequence[Path]):
        self.recorded = list(recorded)
        self.search = [folder for folder in search if folder.is_dir()]
        self.found: dict[tuple[str, str], ResolvedFile] = {}
        self.problems: dict[tuple[str, str], InputProblem] = {}

    def find(self, role: str, name: str, sha256: str) -> ResolvedFile | None:
        key = (name, sha256)
        if key in self.found:
            return self.found[key]
        if key in self.problems:
            return None
        candidates = [Path(entry["path"]) for entry in self.recorded
                      if entry.get("sha256") == sha256 or Path(entry["path"]).name == name]
        for folder in self.search:
            candidates.append(folder / name)
            candidates.extend(_below(folder, name))
        changed: tuple[Path, str] | None = None
        seen: set[Path] = set()
        for path in candidates:
            if path in seen or not path.exists() or path.name != name:
                continue
            seen.add(path)
            found = hash_file(path)
            if found == sha256:
                self.found[key] = ResolvedFile(path.resolve(), sha256)
                return self.found[key]
            changed = changed or (path, found)
        looked = tuple(dict.fromkeys([str(p.parent) for p in candidates if p.name == name]
                                     + [str(folder) for folder in self.search]))
        self.problems[key] = InputProblem(
            role, name, sha256, path=str(changed[0]) if changed else None,
            found_sha256=changed[1] if changed else None, looked_in=looked or ("(nowhere)",))
        return None


def _below(folder: Path, name: str) -> list[Path]:
    """Files or folders called ``name`` anywhere below ``folder``, hidden folders skipped."""
    found = []
    for parent, folders, files in os.walk(folder):
        folders[:] = sorted(entry for entry in folders if not entry.startswith("."))
        if name in files or name in folders:
            found.append(Path(parent) / name)
    return found


def spec_files(spec: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str, str]]:
    """(key path, file name, sha256) of every file a variant spec names, wherever it sits:
    any mapping with a ``name`` and a 64-hex ``sha256`` is a file."""
    found: list[tuple[tuple[str | int, ...], str, str]] = []

    def walk(value: Any, key: tuple[str | int, ...]) -> None:
        if isinstance(value, Mapping):
            sha = value.get("sha256")
            if isinstance(sha, str) and len(sha) == 64 and isinstance(value.get("name"), str):
                found.append((key, value["name"], sha))
            for name, child in value.items():
                walk(child, (*key, name))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                walk(child, (*key, index))

    walk(spec, ())
    return found


def _role(key: tuple[str | int, ...]) -> str:
    """How a report names a file by where the spec holds it."""
    named = {("recipe", "checkpoint"): "checkpoint", ("recipe", "loras"): "lora",
             ("recipe", "controlnets"): "controlnet", ("recipe", "ip_adapter"): "ip_adapter",
             ("postprocess", "logo"): "logo"}
    if key[:2] in named:
        return named[key[:2]]
    if key[:1] == ("images",):
        return f"image {key[1]}"
    return ".".join(str(part) for part in key if not isinstance(part, int)) or "file"


def checkpoint_config(target: Target, checkpoint: ResolvedFile,
                      finder: FileFinder) -> tuple[Path | None, InputProblem | None]:
    """The local diffusers config folder a single-file checkpoint loads with: the recorded
    one (hash checked), else a sibling folder named like the checkpoint."""
    if checkpoint.path.is_dir():
        return None, None
    recorded = [entry for entry in target.input_files if entry["role"] == "checkpoint_config"]
    if recorded:
        entry = recorded[0]
        name = Path(entry["path"]).name
        found = finder.find("checkpoint config", name, entry["sha256"])
        if found is None:
            return None, finder.problems[(name, entry["sha256"])]
        return found.path, None
    stem = checkpoint.path.name.removesuffix(".safetensors")
    for folder in [checkpoint.path.parent, *finder.search]:
        candidate = folder / stem
        if (candidate / "model_index.json").is_file():
            return candidate, None
    return None, InputProblem("checkpoint config", stem, "(not recorded)",
                              looked_in=(str(checkpoint.path.parent),
                                         *map(str, finder.search)))


# ---------------------------------------------------------------- objects from the spec


def recipe_from_spec(spec: Mapping[str, Any], files: Mapping[tuple[str | int, ...], ResolvedFile],
                     config: Path | None, source: Path) -> Recipe:
    """A ``Recipe`` rebuilt from a variant spec's recipe identity, with the files located on
    this machine (the spec names files by name and sha256, never by path)."""
    recipe = spec["recipe"]

    def ref(key: tuple[str | int, ...], **extra: Any) -> dict[str, Any]:
        file = files[key]
        return {"path": str(file.path), "sha256": file.sha256, **extra}

    data: dict[str, Any] = {
        key: value for key, value in recipe.items()
        if key not in ("checkpoint", "loras", "controlnets", "ip_adapter")}
    data["checkpoint"] = ref(("recipe", "checkpoint"),
                             **({"config": str(config)} if config else {}))
    data["loras"] = [ref(("recipe", "loras", index), weight=lora["weight"])
                     for index, lora in enumerate(recipe["loras"])]
    if "controlnets" in recipe:
        data["controlnets"] = [{**control, "model": ref(("recipe", "controlnets", index,
                                                          "model"))}
                               for index, control in enumerate(recipe["controlnets"])]
    if "ip_adapter" in recipe:
        data["ip_adapter"] = {**recipe["ip_adapter"],
                              "model": ref(("recipe", "ip_adapter", "model"))}
    recipe_spec = RecipeFile.model_validate(data)
    extra: dict[str, Any] = {}
    names = {item.name for item in dataclasses.fields(Recipe)}
    if "controlnets" in names:
        extra["controlnets"] = tuple(files[("recipe", "controlnets", index, "model")]
                                     for index in range(len(recipe.get("controlnets", []))))
    if "ip_adapter" in names:
        extra["ip_adapter"] = files.get(("recipe", "ip_adapter", "model"))
    return Recipe(
        spec=recipe_spec, source=source, document=YamlDocument(source, "", data, {}),
        checkpoint=files[("recipe", "checkpoint")], checkpoint_config=config,
        loras=tuple((files[("recipe", "loras", index)], lora["weight"])
                    for index, lora in enumerate(recipe["loras"])), **extra)


def variant_from_spec(spec: Mapping[str, Any], output_name: str,
                      files: Mapping[tuple[str | int, ...], ResolvedFile]) -> Variant:
    """A ``Variant`` rebuilt from its stored spec (the id is the spec's hash)."""
    recipe = spec["recipe"]
    extra: dict[str, Any] = {}
    if "images" in {item.name for item in dataclasses.fields(Variant)}:
        extra["images"] = {tuple(int(part) if part.isdigit() else part
                                 for part in dotted.split(".")): files[("images", dotted)]
                           for dotted in spec.get("images", {})}
    return Variant(
        id=sha256_json(spec), seed=spec["seed"], axes=spec["axes"], prompt=spec["prompt"],
        negative_prompt=spec["negative_prompt"], width=spec["width"], height=spec["height"],
        steps=recipe["steps"], cfg=recipe["cfg"],
        lora_weights=tuple(lora["weight"] for lora in recipe["loras"]), aspect=None,
        output_name=output_name, spec=spec, **extra)


# ---------------------------------------------------------------- comparing


def ssim(first: np.ndarray, second: np.ndarray, window: int = 7) -> float:
    """Mean structural similarity of two HxWxC images (0-255), uniform window as
    scikit-image's default (7x7, sample covariance)."""
    a, b = first.astype(np.float64), second.astype(np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    window = min(window, a.shape[0], a.shape[1])
    window -= 1 - window % 2  # odd
    if window < 3:
        return 1.0 if np.array_equal(a, b) else 0.0
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    n = window * window
    norm = n / (n - 1)
    mean_a, mean_b = _box_mean(a, window), _box_mean(b, window)
    var_a = norm * (_box_mean(a * a, window) - mean_a ** 2)
    var_b = norm * (_box_mean(b * b, window) - mean_b ** 2)
    cov = norm * (_box_mean(a * b, window) - mean_a * mean_b)
    value = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / (
        (mean_a ** 2 + mean_b ** 2 + c1) * (var_a + var_b + c2))
    return float(value.mean())


def _box_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean over every window x window square (valid positions only), via an integral image."""
    total = np.pad(x, ((1, 0), (1, 0), (0, 0))).cumsum(0).cumsum(1)
    sums = (total[window:, window:] - total[:-window, window:] - total[window:, :-window]
            + total[:-window, :-window])
    return sums / (window * window)


def environment_differences(recorded: Mapping[str, Any] | None,
                            current: Mapping[str, Any]) -> list[str]:
    if recorded is None:
        return ["environment not recorded (reproducing from image metadata)"]
    old, new = _flatten(recorded), _flatten(current)
    # What was asked for (options.device 'auto') matters less than what it resolved to
    # (device, dtype), which are compared themselves.
    requested = {"options.device", "options.dtype"}
    return [f"{key}: {old.get(key)} (recorded) -> {new.get(key)} (now)"
            for key in sorted((set(old) | set(new)) - requested) if old.get(key) != new.get(key)]


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, child in value.items():
        if isinstance(child, Mapping):
            flat.update(_flatten(child, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = child
    return flat


def _metadata_differences(first: bytes, second: bytes) -> list[str]:
    with Image.open(io.BytesIO(first)) as a, Image.open(io.BytesIO(second)) as b:
        old, new = dict(a.text), dict(b.text)
    return [f"PNG text chunk {key!r} differs" for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)]


# ---------------------------------------------------------------- the report


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
            figures.append(f"max pixel difference {self.max_pixel_difference}/255 "
                           f"(tolerance {self.tolerance}/255)")
        if self.ssim is not None:
            figures.append(f"SSIM {self.ssim:.6f} (min {self.min_ssim})")
        lines = [head + (f": {', '.join(figures)}" if figures else "")]
        lines += [f"    input: {problem}" for problem in self.input_problems]
        lines += [f"    environment: {difference}" for difference in
                  self.environment_differences]
        lines += [f"    note: {note}" for note in self.notes]
        if self.reproduced:
            lines.append(f"    re-rendered: {self.reproduced}")
        lines.append(f"    from: {self.source}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "matches": self.matches}


# ---------------------------------------------------------------- reproducing


def reproduce(targets: Sequence[Target], dest: Path, *, lookup: Callable[[Sequence[str]],
              Mapping[str, str]] = lambda ids: {}, search: Sequence[Path] = (),
              tolerance: int | None = None, min_ssim: float = DEFAULT_MIN_SSIM,
              log: Log = lambda _: None) -> list[Outcome]:
    """Re-render ``targets`` into ``dest`` and compare; ``lookup`` gives the stored spec
    JSON of batch mates by variant id."""
    outcomes = {target.variant_id: Outcome(target.variant_id, target.source, min_ssim=min_ssim)
                for target in targets}
    # 1. Every batch to render again: the recorded one, else the target alone.
    units: dict[tuple[str, ...], list[Target]] = {}
    for target in targets:
        key = tuple(target.batch) if target.variant_id in target.batch else (target.variant_id,)
        units.setdefault(key, []).append(target)
    specs: dict[str, Mapping[str, Any]] = {t.variant_id: t.spec for t in targets}
    missing_mates = [mate for key in units for mate in key if mate not in specs]
    for mate, text in lookup(missing_mates).items():
        specs[mate] = json.loads(text)
    # 2. Locate and check every file of every spec involved, before loading anything.
    hints = [folder for target in targets for folder in target.search]
    finder = FileFinder([entry for target in targets for entry in target.input_files],
                        [*search, *dict.fromkeys(hints)])
    files: dict[str, dict[tuple[str | int, ...], ResolvedFile]] = {}
    for variant_id, spec in specs.items():
        located = files[variant_id] = {}
        for key, name, sha256 in spec_files(spec):
            if (found := finder.find(_role(key), name, sha256)) is not None:
                located[key] = found
    configs: dict[str, Path | None] = {}
    config_problems: dict[str, InputProblem] = {}
    for target in targets:
        checkpoint = files[target.variant_id].get(("recipe", "checkpoint"))
        if checkpoint is not None:
            config, problem = checkpoint_config(target, checkpoint, finder)
            configs[target.variant_id] = config
            if problem:
                config_problems[target.variant_id] = problem
    def problems_of(spec: Mapping[str, Any]) -> list[InputProblem]:
        return [finder.problems[(name, sha)] for _, name, sha in spec_files(spec)
                if (name, sha) in finder.problems]

    for mate in [mate for mate in specs if mate not in outcomes]:
        if problems_of(specs[mate]):  # a batch mate whose own files are gone: leave it out
            del specs[mate]
    for target in targets:
        outcome = outcomes[target.variant_id]
        problems = problems_of(target.spec)
        problems += [config_problems[target.variant_id]] if target.variant_id in \
            config_problems else []
        if problems:
            outcome.status = "inputs changed"
            outcome.input_problems = list(dict.fromkeys(p.describe() for p in problems))
    if any(outcome.input_problems for outcome in outcomes.values()):
        for outcome in outcomes.values():
            if not outcome.input_problems:
                outcome.status = "not rendered"
                outcome.notes.append("nothing rendered: other targets' inputs changed")
        return list(outcomes.values())
    # 3. Render each batch again, pinned to the recorded environment where possible.
    renderer = None
    for key, members in units.items():
        first = members[0]
        mates = [mate for mate in key if mate in specs]
        batch = [variant_from_spec(specs[mate], mate, files[mate]) for mate in mates]
        if len(mates) < len(key):
            for target in members:
                outcomes[target.variant_id].notes.append(
                    f"{len(key) - len(mates)} of the {len(key)} images of its batch are not in "
                    "the ledger: rendered without them (may move pixels by 1/255)")
        elif len(key) == 1 and not first.batch:
            outcomes[first.variant_id].notes.append(
                "batch not recorded: rendered alone (may move pixels by 1/255)")
        recipe = recipe_from_spec(first.spec, files[first.variant_id],
                                  configs.get(first.variant_id), Path(first.source))
        renderer, current = _renderer_for(renderer, first.environment, log)
        log(f"rendering {len(batch)} image(s) of {recipe.ref} for {len(members)} target(s)")
        images = dict(zip(mates, renderer.render_batch(recipe, batch), strict=True))
        for target in members:
            outcome = outcomes[target.variant_id]
            outcome.environment_differences = environment_differences(target.environment,
                                                                      current)
            variant = next(v for v in batch if v.id == target.variant_id)
            finished = _finish(images[target.variant_id], variant, files[target.variant_id])
            _compare(target, finished, dest, outcome, tolerance)
    return list(outcomes.values())


def _renderer_for(renderer: Any, environment: Mapping[str, Any] | None,
                  log: Log) -> tuple[Any, dict[str, Any]]:
    """A renderer set up as the recorded environment was (threads, device, dtype, options)."""
    import torch

    from .render import DiffusersRenderer, RenderOptions, resolve_device, resolve_dtype

    environment = environment or {}
    allowed = {item.name for item in dataclasses.fields(RenderOptions)}
    options = {key: value for key, value in (environment.get("options") or {}).items()
               if key in allowed}
    # The recorded options as given ('auto' stays 'auto'), unless here they would resolve to
    # another device or dtype than the recorded run's and the recorded one is usable.
    device, dtype = environment.get("device"), environment.get("dtype")
    if device and resolve_device(options.get("device", "auto")) != device:
        usable = device == "cpu" or (device.startswith("cuda") and torch.cuda.is_available()) \
            or (device == "mps" and torch.backends.mps.is_available())
        if usable:
            options["device"] = device
    if dtype and resolve_dtype(options.get("dtype", "auto"),
                               resolve_device(options.get("device", "auto"))) != dtype:
        options["dtype"] = dtype
    if environment.get("threads"):
        torch.set_num_threads(int(environment["threads"]))
    wanted = RenderOptions(**options)
    if renderer is None or renderer.options != wanted:
        renderer = DiffusersRenderer(wanted, log=log)
    return renderer, renderer.fingerprint()


def _finish(image: Image.Image, variant: Variant,
            files: Mapping[tuple[str | int, ...], ResolvedFile]) -> Image.Image:
    """The post-processing ``campaign render`` applies, with the files it reads (logo, fonts,
    brand references) found from the stored spec instead of a brand kit."""
    from .produce import Assets, finish_image

    return finish_image(image, variant, Assets(files.values())).image


def _compare(target: Target, image: Image.Image, dest: Path, outcome: Outcome,
             tolerance: int | None) -> None:
    from .metadata import encode_png

    data = encode_png(image, target.spec)
    path = dest / target.name
    write_bytes_atomic(path, data)
    outcome.reproduced = str(path)
    same_environment = not outcome.environment_differences
    outcome.tolerance = tolerance if tolerance is not None else (
        0 if same_environment else TOLERANCE_OTHER_ENVIRONMENT)
    outcome.identical_bytes = sha256_bytes(data) == target.original_sha256
    if outcome.identical_bytes:
        outcome.status, outcome.max_pixel_difference, outcome.ssim = "identical", 0, 1.0
        if target.original is not None and not target.original.is_file():
            outcome.notes.append(f"the recorded file {target.original} is missing; the "
                                 f"re-render is byte-identical to it: restore it from {path}")
        elif target.original is not None and sha256_bytes(target.original.read_bytes()) != \
                target.original_sha256:
            outcome.notes.append(f"the recorded file {target.original} was altered since it was "
                                 f"rendered; the re-render matches the recorded sha256: restore "
                                 f"it from {path}")
        return
    original = target.original
    if original is None or not original.is_file() or \
            sha256_bytes(original.read_bytes()) != target.original_sha256:
        state = "missing" if original is None or not original.is_file() else "altered"
        outcome.status = "drift"
        outcome.notes.append(f"the recorded file is {state}, so only its recorded sha256 "
                             f"{target.original_sha256} can be compared: the re-render's is "
                             f"{sha256_bytes(data)}")
        return
    old_bytes = original.read_bytes()
    with Image.open(io.BytesIO(old_bytes)) as old_image:
        old = np.asarray(old_image.convert("RGB"), dtype=np.int16)
    new = np.asarray(image.convert("RGB"), dtype=np.int16)
    if old.shape != new.shape:
        outcome.status = "drift"
        outcome.notes.append(f"size differs: recorded {old.shape[1]}x{old.shape[0]}, "
                             f"re-rendered {new.shape[1]}x{new.shape[0]}")
        return
    outcome.max_pixel_difference = int(np.abs(old - new).max())
    outcome.ssim = ssim(old, new)
    if outcome.max_pixel_difference == 0:
        outcome.notes += _metadata_differences(old_bytes, data) or ["PNG encoding differs"]
        outcome.notes.append("pixels are identical; only the file's bytes differ")
    within = (outcome.max_pixel_difference <= outcome.tolerance
              and outcome.ssim >= outcome.min_ssim)
    outcome.status = "within tolerance" if within else "drift"
    if not within and not outcome.environment_differences:
        outcome.notes.append("same environment, yet the pixels moved: check the files' hashes "
                             "and the batch notes above")
