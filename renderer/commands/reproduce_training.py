"""``campaign reproduce --training ID``: train a recorded training again and compare bytes.

The source of truth is the ledger's copy of the resolved spec, never today's spec file:
every setting, the base checkpoint (and its config folder) and each image with its caption,
files by name and sha256. Then, as for renders:

1. **Inputs.** Each file is located (``renderer.validate.file_finder``: the recorded path, then the
   ``--search`` folders) and its sha256 checked; a missing or changed one stops here.
2. **Environment.** The recorded thread count (and CPU, when the training ran there) is
   pinned; what still differs is listed.
3. **Train** from nothing into a scratch folder (``--into``, default ``OUT/reproduce/
   trainings/NAME@VERSION``, replaced) with its own feature cache, so latents and
   embeddings are computed again too.
4. **Compare** the LoRA's sha256 with the recorded one. On drift it names what differs:
   the environment, the first step whose loss moved, the tensors and header keys that
   differ from the recorded file (when it is still there, intact).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from renderer.commands.lookup import MIN_PREFIX, file_state, is_hash_prefix, open_ledger
from renderer.core.errors import InputError
from renderer.core.json_value import JsonValue
from renderer.core.terminal import Log
from renderer.ledger.records import TrainingRow
from renderer.ledger.store import Ledger
from renderer.plan.output_folder import reproduction_root
from renderer.render.diffusers_renderer import quiet_libraries
from renderer.render.environment import differences
from renderer.train.command import TRAININGS_DIR, dated, job_of
from renderer.train.engine import train
from renderer.train.job import TrainingJob
from renderer.train.results import Progress
from renderer.validate.file_finder import FileFinder, spec_files
from renderer.validate.inputs import FileIndex


@dataclass
class TrainingReproduction:
    training_id: str
    status: str = "pending"  # identical | drift | inputs changed
    recorded_sha256: str | None = None
    reproduced_sha256: str | None = None
    reproduced: str | None = None  # the re-trained LoRA
    input_problems: list[str] = field(default_factory=list)
    environment_differences: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)  # what differs in the result
    notes: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return self.status == "identical"

    def describe(self) -> str:
        lines = [
            f"{self.training_id}  {self.status.upper()}"
            + (f": LoRA sha256 {self.reproduced_sha256}" if self.reproduced_sha256 else "")
        ]
        if self.status == "drift":
            lines.append(f"    recorded sha256 {self.recorded_sha256}")
        lines += [f"    input: {problem}" for problem in self.input_problems]
        lines += [f"    environment: {difference}" for difference in self.environment_differences]
        lines += [f"    differs: {difference}" for difference in self.differences]
        lines += [f"    note: {note}" for note in self.notes]
        if self.reproduced:
            lines.append(f"    re-trained: {self.reproduced}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, JsonValue]:
        return {**dataclasses.asdict(self), "matches": self.matches}


def resolve_training(ledger: Ledger, text: str) -> TrainingRow:
    """The training ``text`` names: its id, ``NAME@VERSION``, or a unique spec-hash prefix."""
    if (row := ledger.training(text)) is not None:
        return row
    name, at, version = text.partition("@")
    if at and version.isdigit() and (row := ledger.training_named(name, int(version))):
        return row
    wanted = text.strip().lower()
    matches = ledger.trainings_with_spec_hash_prefix(wanted) if is_hash_prefix(wanted) else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InputError(
            f"spec hash prefix {wanted} is ambiguous",
            file=ledger.path,
            found=", ".join(row.id for row in matches),
            fix="give more hex digits",
        )
    raise InputError(
        f"no training {text!r} in the ledger",
        file=ledger.path,
        expected=f"a training id, NAME@VERSION or a spec hash prefix of at least "
        f"{MIN_PREFIX} hex digits",
        fix="list trainings with `campaign history --trainings`",
    )


def reproduce_training(
    text: str,
    *,
    out_dir: Path,
    into: Path | None = None,
    search: Sequence[Path] = (),
    progress: Callable[[Progress], None] | None = None,
    log: Log = lambda _: None,
) -> TrainingReproduction:
    dest = reproduction_root(out_dir, into)  # never over the output folder's records
    with open_ledger(out_dir) as ledger:
        row = resolve_training(ledger, text)
        recorded_environment = (
            ledger.environment(row.environment_hash) if row.environment_hash else None
        )
    lora_path, lora_sha256 = row.lora_path, row.lora_sha256
    if row.status != "finished" or lora_path is None or lora_sha256 is None:
        raise InputError(
            f"training {row.id} is {row.status}, not finished: there is no LoRA to compare with",
            file=ledger.path,
            fix=f"finish it first: campaign train {row.spec_file}",
        )
    outcome = TrainingReproduction(row.id, recorded_sha256=row.lora_sha256)
    # 1. Every file the stored spec names, by name and sha256, before anything loads.
    finder = FileFinder(row.input_files, search)
    located = [
        found
        for key, name, sha256 in spec_files(row.spec)
        if (found := finder.find(_role(key), name, sha256)) is not None
    ]
    if finder.problems:
        outcome.status = "inputs changed"
        outcome.input_problems = [problem.describe() for problem in finder.problems.values()]
        return outcome
    base = row.spec["base"]
    by_sha = {file.sha256: file for file in located}
    configs = (
        {base["checkpoint"]["sha256"]: by_sha[base["config"]["sha256"]].path}
        if base["config"]
        else {}
    )
    job = dated(job_of(row.spec, FileIndex.of(located, configs), row.spec_hash, row.id), row)
    # 2. The recorded environment where this machine allows.
    job = _pinned(job, recorded_environment)
    # 3. From nothing: a fresh folder and a fresh feature cache.
    scratch = (dest if into else dest / TRAININGS_DIR) / row.ref
    if scratch.exists():
        log(f"replacing the earlier re-training in {scratch}")
        shutil.rmtree(scratch)

    quiet_libraries()
    result = train(job, scratch, scratch / ".cache", progress=progress, log=log)
    outcome.reproduced, outcome.reproduced_sha256 = str(result.lora), result.sha256
    outcome.environment_differences = differences(recorded_environment, result.environment)
    # 4. Compare.
    if result.sha256 == row.lora_sha256:
        outcome.status = "identical"
        return outcome
    outcome.status = "drift"
    outcome.differences = _loss_drift(row.step_losses, result.step_losses)
    recorded = out_dir / lora_path
    state = file_state(recorded, lora_sha256)
    if state == "ok":
        outcome.differences += lora_differences(recorded, result.lora)
    else:
        outcome.notes.append(
            f"the recorded LoRA {recorded} is {state}: only its sha256 could be compared"
        )
    if not outcome.environment_differences:
        outcome.notes.append(
            "same environment, yet the bytes moved: check the files' hashes "
            "and the differences above"
        )
    return outcome


def _role(key: tuple) -> str:
    """How a report names a file by where the resolved spec holds it."""
    if key[:1] == ("dataset",):
        return f"image {key[1]}"
    return {("base", "checkpoint"): "checkpoint", ("base", "config"): "checkpoint config"}[key]


def _pinned(job: TrainingJob, environment: Mapping[str, Any] | None) -> TrainingJob:
    """The job on the recorded thread count, and on the CPU when it trained there: 'auto'
    would pick a GPU here. Neither is in the LoRA's header, only in how its numbers come
    out."""
    import torch

    if environment and environment.get("threads"):
        torch.set_num_threads(int(environment["threads"]))
    if environment and environment.get("device") == "cpu" and job.train.device != "cpu":
        job = dataclasses.replace(job, train=dataclasses.replace(job.train, device="cpu"))
    return job


def _loss_drift(recorded: Sequence[float], now: Sequence[float]) -> list[str]:
    for step, (old, new) in enumerate(zip(recorded, now, strict=False), 1):
        if old != new:
            return [f"step losses from step {step} on: recorded {old!r}, now {new!r}"]
    if len(recorded) != len(now):
        return [f"step count: recorded {len(recorded)}, now {len(now)}"]
    return ["every step loss is the same, the file's bytes are not"]


def lora_differences(recorded: Path, reproduced: Path) -> list[str]:
    """Which tensors (largest absolute difference) and header keys differ between two LoRA
    files."""
    from safetensors import safe_open

    found = []
    with safe_open(str(recorded), "pt") as old, safe_open(str(reproduced), "pt") as new:
        old_keys, new_keys = set(old.keys()), set(new.keys())
        for name, keys in (
            ("only in the recorded file", old_keys - new_keys),
            ("only in the re-trained file", new_keys - old_keys),
        ):
            if keys:
                found.append(
                    f"tensors {name}: {', '.join(sorted(keys)[:5])}"
                    + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
                )
        moved = []
        for key in sorted(old_keys & new_keys):
            a, b = old.get_tensor(key), new.get_tensor(key)
            if a.shape != b.shape or not bool((a == b).all()):
                delta = (
                    float((a.float() - b.float()).abs().max())
                    if a.shape == b.shape
                    else float("inf")
                )
                moved.append((delta, key))
        if moved:
            delta, key = max(moved)
            found.append(
                f"{len(moved)} of {len(old_keys & new_keys)} tensors, most {key} "
                f"(max |difference| {delta:.3g})"
            )
        old_meta, new_meta = old.metadata() or {}, new.metadata() or {}
        header_keys = sorted(
            key for key in set(old_meta) | set(new_meta) if old_meta.get(key) != new_meta.get(key)
        )
        if header_keys:
            found.append(f"header keys: {', '.join(header_keys)}")
    return found
