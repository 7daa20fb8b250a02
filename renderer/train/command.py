"""``campaign train``: a validated training spec → the engine's job → a LoRA, in the ledger.

1. **Resolve** (``resolve``): the spec with every unset setting filled from the engine's
   defaults (``train/job.py``: the dataclasses, ``FAMILY_DEFAULTS``, ``DEFAULT_TARGETS``) and
   every file by name and sha256 — the *resolved spec*. Its sha256 (canonical JSON) is the
   spec hash, and the training id is ``NAME@VERSION-`` + its first 12 hex digits. The engine's
   ``TrainingJob`` is the resolved spec plus this machine's paths (``job_of``; reproduce builds
   its job the same way from the ledger's copy).
2. **Decide** before importing torch: a changed spec under a ``name@version`` that already
   trained is refused (bump the version, as with recipes); a finished training whose LoRA is
   intact is a no-op.
3. **Train** holding ``OUT/trainings/NAME@VERSION/`` (one training per folder): the attempt is
   recorded, ``train`` runs (it resumes the folder's last checkpoint), the report is written
   beside the LoRA, then the result is recorded. A killed attempt leaves its row ``running``;
   the next one resumes it and says so. Latents and embeddings are cached by content under
   ``OUT/.cache/training``, shared by every training of that folder.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from renderer.core.errors import InputError
from renderer.core.hashing import HashCache, hash_file, sha256_json
from renderer.core.json_value import JsonValue
from renderer.core.terminal import Log
from renderer.ledger.records import TrainingRow
from renderer.ledger.store import LEDGER_NAME, Ledger
from renderer.ledger.trainings import TrainingFinish, TrainingStart
from renderer.load.schema import FileId
from renderer.plan.output_folder import CACHE, TRAININGS, OutputFolder
from renderer.train.job import (
    DEFAULT_TARGETS,
    FAMILY_DEFAULTS,
    TEXT_ENCODER_TARGETS,
    LoraSettings,
    SampleSettings,
    TrainingJob,
    TrainSettings,
    check_job,
)
from renderer.train.results import Progress, TrainingResult
from renderer.validate.inputs import FileIndex, ResolvedFile
from renderer.validate.training_spec import TrainingSpec

TRAININGS_DIR = TRAININGS  # OUT/trainings/NAME@VERSION/
CACHE_DIR = f"{CACHE}/training"  # OUT/.cache/training: latents and embeddings
# Why a training is started again, by the status its row had.
_LAST_ATTEMPT = {
    "running": "its last attempt stopped without a word (killed?)",
    "error": "its last attempt failed",
    "interrupted": "its last attempt was interrupted",
    "finished": "it finished, but its LoRA or report is gone or altered",
}


@dataclass(frozen=True)
class ResolvedTraining:
    spec: TrainingSpec
    resolved: dict[str, Any]  # what the spec hash is taken over
    spec_hash: str
    training_id: str
    job: TrainingJob
    input_files: list[dict[str, str]]  # role, path, sha256: what the training reads


def resolve(spec: TrainingSpec) -> ResolvedTraining:
    """The resolved spec, its hash and id, and the job; the engine's own checks run here, so
    they too name the spec's file and line."""
    resolved = resolved_spec(spec)
    spec_hash = sha256_json(resolved)
    training_id = f"{spec.ref}-{spec_hash[:12]}"
    base = spec.base
    configs = {base.checkpoint.sha256: base.checkpoint_config} if base.checkpoint_config else {}
    job = job_of(resolved, FileIndex.of(spec.files(), configs), spec_hash, training_id)
    try:
        check_job(job, HashCache())
    except InputError as err:
        raise in_spec(spec, err) from None
    files = [("checkpoint", base.checkpoint)]
    if base.checkpoint_config is not None:
        files.append(
            (
                "checkpoint_config",
                ResolvedFile(base.checkpoint_config, resolved["base"]["config"]["sha256"]),
            )
        )
    files += [("image", image.file) for image in spec.images]
    return ResolvedTraining(
        spec,
        resolved,
        spec_hash,
        training_id,
        job,
        [{"role": role, "path": str(file.path), "sha256": file.sha256} for role, file in files],
    )


def resolved_spec(spec: TrainingSpec) -> dict[str, Any]:
    """Every setting that decides the LoRA's bytes, files by name and sha256 (never by path:
    moving the project changes no hash)."""
    family, file = spec.spec.family, spec.spec
    defaults = FAMILY_DEFAULTS[family]
    lora = _settings(LoraSettings, file.lora.model_dump(), {})
    lora["alpha"] = lora["alpha"] if file.lora.alpha is not None else float(lora["rank"])
    lora["target_modules"] = lora["target_modules"] or list(DEFAULT_TARGETS[family])
    if lora["train_text_encoder"]:
        lora["text_encoder_target_modules"] = lora["text_encoder_target_modules"] or list(
            TEXT_ENCODER_TARGETS
        )
    samples = _settings(
        SampleSettings,
        {**file.samples.model_dump(), "prompts": list(spec.sample_prompts)},
        defaults["samples"],
    )
    config = spec.base.checkpoint_config
    return {
        "name": file.name,
        "version": file.version,
        "family": family,
        "base": {
            "recipe": spec.base.ref,
            "checkpoint": spec.base.checkpoint.identity.model_dump(),
            "config": None
            if config is None
            else FileId(name=config.name, sha256=hash_file(config)).model_dump(),
        },
        "dataset": [
            {**image.file.identity.model_dump(), "caption": image.caption} for image in spec.images
        ],
        "lora": lora,
        "train": _settings(TrainSettings, file.train.model_dump(), defaults["train"]),
        "samples": samples,
        "comment": file.comment,
    }


def _settings(kind: type, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The engine dataclass ``kind``'s defaults, the family's, then what the spec sets (its
    keys are the dataclass's own: an unknown one fails here, loudly)."""
    values = {
        **dataclasses.asdict(kind()),
        **defaults,
        **{key: value for key, value in given.items() if value is not None},
    }
    kind(**values)
    return {
        key: list(value) if isinstance(value, tuple) else value for key, value in values.items()
    }


def lora_file_stem(resolved: Mapping[str, Any]) -> str:
    """The LoRA's file name without .safetensors: how recipes and A1111 tags name it."""
    return f"{resolved['name']}-v{resolved['version']}"


def job_of(
    resolved: Mapping[str, Any], files: FileIndex, spec_hash: str, training_id: str
) -> TrainingJob:
    """The engine's job: the resolved spec with each file's path on this machine."""
    base = resolved["base"]
    checkpoint = FileId(**base["checkpoint"])
    config = files.config(checkpoint) if base["config"] else None
    return TrainingJob.from_dict(
        {
            "family": resolved["family"],
            "checkpoint": str(files.path(checkpoint)),
            "checkpoint_config": None if config is None else str(config),
            "items": [
                {
                    "image": str(files.path(FileId(name=item["name"], sha256=item["sha256"]))),
                    "sha256": item["sha256"],
                    "caption": item["caption"],
                }
                for item in resolved["dataset"]
            ],
            "spec_hash": spec_hash,
            "training_id": training_id,
            "lora": resolved["lora"],
            "train": resolved["train"],
            "samples": resolved["samples"],
            "name": lora_file_stem(resolved),
            "comment": resolved["comment"],
        }
    )


def dated(job: TrainingJob, row: TrainingRow) -> TrainingJob:
    """The job with its training's recorded first start, the LoRA header's date: a resumed or
    reproduced training writes the same one, so the same bytes."""
    return dataclasses.replace(job, started_at=row.started_at)


def in_spec(spec: TrainingSpec, err: InputError) -> InputError:
    """An engine error that names a setting (``train.warmup_steps``) as one at its line in
    the spec file; errors that already name a file pass through."""
    if err.file is not None or not err.key_path:
        return err
    key_path = tuple(err.key_path.split("."))
    return spec.document.error(
        type(err), err.message, key_path, expected=err.expected, found=err.found, fix=err.fix
    )


# --- the command --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingOutcome:
    training_id: str
    ref: str
    status: str  # trained | already trained
    lora: Path
    sha256: str
    report: Path
    steps: int
    resumed_from: int  # 0: started fresh (or nothing to do)
    seconds: float

    def as_json(self) -> dict[str, JsonValue]:
        return {**dataclasses.asdict(self), "lora": str(self.lora), "report": str(self.report)}


def train_spec(
    spec: TrainingSpec, out_dir: Path, *, progress: Callable[[Progress], None] | None, log: Log
) -> TrainingOutcome:
    """Train ``spec`` into ``out_dir/trainings/NAME@VERSION/`` (or say it is done)."""
    started = time.perf_counter()
    training = resolve(spec)
    ledger_path = out_dir / LEDGER_NAME
    # The output folder's owner says where, refusing a link out of it or a reserved name.
    owner = OutputFolder(out_dir)
    folder = owner.check(f"{TRAININGS_DIR}/{spec.ref}", "training")
    cache = owner.check(CACHE_DIR, "training")
    if ledger_path.exists():
        with Ledger(ledger_path) as ledger:
            done = finished_training(ledger, training)
        if done is not None:
            return _already(done, out_dir, started)
    # These import torch and diffusers: only once there is work to do.
    from renderer.render.diffusers_renderer import quiet_libraries
    from renderer.train.engine import train
    from renderer.train.report import write_report
    from renderer.train.training_folder import hold_training_folder

    quiet_libraries()
    with hold_training_folder(folder), Ledger(ledger_path) as ledger:
        if (done := finished_training(ledger, training)) is not None:  # while we waited
            return _already(done, out_dir, started)
        before = ledger.start_training(
            TrainingStart(
                id=training.training_id,
                name=spec.spec.name,
                version=spec.spec.version,
                family=spec.spec.family,
                spec_file=str(spec.source.resolve()),
                spec_hash=training.spec_hash,
                spec=training.resolved,
                input_files=training.input_files,
                output_dir=_relative(folder, out_dir),
            )
        )
        if before is not None:
            log(
                f"training {training.training_id}: {_LAST_ATTEMPT[before]}; resuming from its "
                "last checkpoint"
            )
        row = ledger.training(training.training_id)
        if row is None:
            raise InputError(
                f"training {training.training_id} was not recorded",
                file=ledger_path,
                fix="check that the ledger is writable, then run the command again",
            )
        job = dated(training.job, row)
        try:
            result = train(job, folder, cache, progress=progress, log=log)
            report = write_report(job, result, folder, spec.ref)
        except BaseException as err:
            ledger.stop_training(
                training.training_id, "error" if isinstance(err, Exception) else "interrupted"
            )
            if isinstance(err, InputError):
                raise in_spec(spec, err) from None
            raise
        ledger.finish_training(
            training.training_id,
            TrainingFinish(
                lora_path=_relative(result.lora, out_dir),
                lora_sha256=result.sha256,
                lora_bytes=result.lora.stat().st_size,
                report_path=_relative(report, out_dir),
                step_losses=result.step_losses,
                checkpoints=checkpoint_records(job, result, out_dir),
                environment=result.environment,
                timings=result.timings,
                resumed_from=result.resumed_from,
            ),
        )
    return TrainingOutcome(
        training.training_id,
        spec.ref,
        "trained",
        result.lora,
        result.sha256,
        report,
        result.steps,
        result.resumed_from,
        time.perf_counter() - started,
    )


@dataclass(frozen=True)
class FinishedTraining:
    """A finished training whose LoRA and report are intact: nothing is left to do. Paths
    relative to the ledger's folder."""

    row: TrainingRow
    lora_path: str
    lora_sha256: str
    report_path: str


def finished_training(ledger: Ledger, training: ResolvedTraining) -> FinishedTraining | None:
    """This very training when it finished and its LoRA and report are intact; refuses a
    spec changed under a ``name@version`` that trained."""
    spec = training.spec
    row = ledger.training_named(spec.spec.name, spec.spec.version)
    if row is None:
        return None
    if row.spec_hash != training.spec_hash:
        raise spec.document.error(
            InputError,
            f"training {spec.ref} changed since it was first trained (on "
            f"{row.started_at[:10]}, {row.status}): bump its version",
            ("version",),
            expected=f"spec hash {row.spec_hash[:12]}… as first trained",
            found=f"spec hash {training.spec_hash[:12]}…",
            fix=f"set version: {spec.spec.version + 1}, or restore the spec "
            "(`campaign history --trainings --json` shows the stored one)",
        )
    out_dir = ledger.path.parent
    # A finished row has its LoRA and report paths; the other statuses have none.
    if row.status != "finished" or row.lora_path is None or row.report_path is None:
        return None
    if not (out_dir / row.report_path).is_file():
        return None
    lora = out_dir / row.lora_path
    if not lora.is_file() or (sha256 := hash_file(lora)) != row.lora_sha256:
        return None
    return FinishedTraining(row, row.lora_path, sha256, row.report_path)


def _already(done: FinishedTraining, out_dir: Path, started: float) -> TrainingOutcome:
    return TrainingOutcome(
        done.row.id,
        done.row.ref,
        "already trained",
        out_dir / done.lora_path,
        done.lora_sha256,
        out_dir / done.report_path,
        len(done.row.step_losses),
        0,
        time.perf_counter() - started,
    )


def checkpoint_records(
    job: TrainingJob, result: TrainingResult, out_dir: Path
) -> list[dict[str, JsonValue]]:
    """Each checkpoint as the ledger keeps it: loss, LoRA and sample files with sha256."""
    draws = [(prompt, seed) for prompt in job.samples.prompts for seed in job.samples.seeds]
    return [
        {
            "step": checkpoint.step,
            "loss": checkpoint.loss,
            "lora": _relative(checkpoint.lora, out_dir),
            "sha256": hash_file(checkpoint.lora),
            "samples": [
                {
                    "path": _relative(path, out_dir),
                    "sha256": hash_file(path),
                    "prompt": prompt,
                    "seed": seed,
                }
                for path, (prompt, seed) in zip(checkpoint.samples, draws, strict=True)
            ],
        }
        for checkpoint in result.checkpoints
    ]


def _relative(path: Path, out_dir: Path) -> str:
    return path.resolve().relative_to(out_dir.resolve()).as_posix()
