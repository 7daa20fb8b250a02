"""A training's output folder: held by one training at a time, the resumable state each
checkpoint ends with (``checkpoints/state-STEP.pt``), and its PNGs, written atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import torch
from PIL import Image

from renderer.core.atomic import TEMP_PREFIX, write_bytes_atomic
from renderer.core.errors import InputError, RenderFailure
from renderer.core.json_value import JsonValue

STATE_PREFIX = "state-"


class SavedCheckpoint(TypedDict):
    """A checkpoint as the training state keeps it (paths relative to the output folder)."""

    step: int
    loss: float  # mean step loss since the previous checkpoint
    lora: str
    samples: list[str]  # prompt-major, then seed


class TrainingState(TypedDict):
    """Everything the training after a step depends on: the RNG "state" is (seed, step)."""

    fingerprint: str  # the job's: a state resumes only the job that wrote it
    step: int
    position: int  # micro-batches used
    lora: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    lr_scheduler: dict[str, Any]
    scaler: dict[str, Any]
    step_losses: list[float]
    checkpoints: list[SavedCheckpoint]
    environment: dict[str, JsonValue]


# Output folders this process holds: `campaign train` holds its folder across its ledger
# updates and the engine's `train` inside (a second flock from the same process would block).
_HELD: set[Path] = set()


@contextlib.contextmanager
def hold_training_folder(folder: Path) -> Iterator[None]:
    """One training per output folder; the kernel drops the lock if its holder dies.
    Re-entrant within a process."""
    key = folder.resolve()
    if key in _HELD:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".training.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RenderFailure(
                f"{folder}: another training is running in this folder; wait "
                "for it or give another output folder"
            ) from None
        # Temp files of a killed run: safe to sweep while we hold the folder.
        for leftover in folder.rglob(f"{TEMP_PREFIX}*"):
            leftover.unlink(missing_ok=True)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


def write_png(path: Path, image: Image.Image) -> None:
    """A PIL image as PNG, atomically (Pillow writes no timestamp: same pixels, same bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def _state_files(folder: Path) -> list[Path]:
    return sorted((folder / "checkpoints").glob(f"{STATE_PREFIX}*.pt"))


def latest_state(folder: Path, fingerprint: str) -> tuple[Path, TrainingState] | None:
    """The last state saved in ``folder`` (None: none yet); it must be the job
    ``fingerprint`` names."""
    states = _state_files(folder)
    if not states:
        return None
    path = states[-1]
    try:
        state: TrainingState = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # atomic writes make this a foreign or damaged file
        raise RenderFailure(
            f"{path}: unreadable training state ({err}); delete it to "
            "resume from an earlier one or to start over"
        ) from err
    if state["fingerprint"] != fingerprint:
        raise InputError(
            "the output folder holds a checkpoint of another training job",
            file=path,
            fix="give this job a new output folder, or delete the "
            "checkpoints/ folder to start it over",
        )
    return path, state


def save_state(folder: Path, state: TrainingState) -> None:
    """Write the state of step ``state["step"]``, then drop the older ones."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    older = _state_files(folder)
    write_bytes_atomic(
        folder / "checkpoints" / f"{STATE_PREFIX}{state['step']:06d}.pt", buffer.getvalue()
    )
    for path in older:
        path.unlink(missing_ok=True)
