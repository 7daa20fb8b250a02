"""What a training reports: each step's progress, each checkpoint, and the final result.

Plain frozen values (no torch), so ``campaign train`` can name them before it imports the
engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from renderer.core.json_value import JsonObject


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    loss: float
    it_per_s: float
    eta_s: float

    def line(self) -> str:
        minutes, seconds = divmod(round(self.eta_s), 60)
        return (
            f"step {self.step}/{self.total} loss {self.loss:.5f} "
            f"{self.it_per_s:.2f} it/s ETA {minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
        )


@dataclass(frozen=True)
class CheckpointRecord:
    step: int
    loss: float  # mean step loss since the previous checkpoint
    lora: Path
    samples: tuple[Path, ...]  # prompt-major, then seed


@dataclass(frozen=True)
class TrainingResult:
    lora: Path
    sha256: str
    steps: int
    step_losses: tuple[float, ...]
    checkpoints: tuple[CheckpointRecord, ...]
    resumed_from: int  # 0: started fresh
    timings: Mapping[str, float]  # seconds: load, features, steps, checkpoints, total
    environment: JsonObject
