"""Small campaigns and folder checks shared by the ledger, crash and reproduce tests."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from PIL import Image

from postprocess.gate_rules import TEXT_METRICS
from renderer.core.hashing import sha256_bytes

from .conftest import REPO, Project


def small_project(
    root: Path,
    *,
    seeds: tuple[int, ...] = (1, 2, 3),
    backgrounds: tuple[str, ...] = ("studio",),
    batch_size: int = 3,
    copy_loras: bool = False,
    name: str = "small",
    postprocess: bool = False,
) -> Project:
    """The demo recipe and campaign cut down to len(seeds) x len(backgrounds) 64x64 variants
    that share one batch key, written under ``root`` with absolute paths. ``copy_loras``
    points the recipe at copies of the LoRAs in ``root/models`` (tests may alter them);
    ``postprocess`` keeps the demo's retouch, headline and channel export."""
    recipe = yaml.safe_load((REPO / "recipes" / "demo-sd15.yaml").read_text())
    for ref in [recipe["checkpoint"], *recipe["loras"]]:
        ref["path"] = str((REPO / "recipes" / ref["path"]).resolve())
    recipe["checkpoint"]["config"] = str(
        (REPO / "recipes" / recipe["checkpoint"]["config"]).resolve()
    )
    if copy_loras:
        (root / "models").mkdir(parents=True, exist_ok=True)
        for lora in recipe["loras"]:
            copy = root / "models" / Path(lora["path"]).name
            shutil.copyfile(lora["path"], copy)
            lora["path"] = str(copy)
    campaign = yaml.safe_load((REPO / "campaigns" / "demo.yaml").read_text())
    campaign["name"] = name
    campaign["brand"] = str(REPO / "campaigns" / campaign["brand"])
    campaign["scoring"]["clip_model"] = str(
        (REPO / "campaigns" / campaign["scoring"]["clip_model"]).resolve()
    )
    axes = campaign["matrix"]["axes"]
    axes["product"] = axes["product"][:1]
    axes["background"] = list(backgrounds)
    axes["aspect"] = ["1:1"]
    axes["seed"] = list(seeds)
    campaign["render"] = {"batch_size": batch_size}
    if not postprocess:
        # Ledger mechanics only: no retouch, text or exports (sharpening would turn a 1/255
        # batch drift into 2/255; tests/test_postprocess_campaign.py reproduces with them).
        campaign.pop("postprocess", None)
        for metric in TEXT_METRICS:  # scored only with text
            campaign["gates"].pop(metric, None)
    project = Project(root, recipe, campaign)
    project.write()
    return project


@dataclass
class FolderState:
    """What an output folder holds, checked against its ledger."""

    temp_files: list[str] = field(default_factory=list)
    broken_pngs: list[str] = field(default_factory=list)
    rows_without_file: list[str] = field(default_factory=list)
    files_without_row: list[str] = field(default_factory=list)
    rows_per_variant: dict[str, int] = field(default_factory=dict)
    row_ids: dict[str, list[int]] = field(default_factory=dict)  # variant -> row ids
    integrity: str = "ok"


def folder_state(out: Path) -> FolderState:
    state = FolderState()
    state.temp_files = sorted(p.relative_to(out).as_posix() for p in out.rglob(".tmp-*"))
    files = {
        p.relative_to(out).as_posix(): p
        for p in out.rglob("*.png")
        if not p.name.startswith(".") and "reproduce" not in p.relative_to(out).parts
    }
    for name, path in files.items():
        data = path.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        except Exception:  # any failure to decode is a broken file
            state.broken_pngs.append(name)
    ledger = out / "ledger.sqlite"
    if not ledger.exists():
        state.files_without_row = sorted(files)
        return state
    with sqlite3.connect(ledger) as db:
        state.integrity = "; ".join(row[0] for row in db.execute("PRAGMA integrity_check"))
        rows = db.execute(
            "SELECT id, variant_id, output_path, output_sha256 FROM renders ORDER BY id"
        ).fetchall()
    latest: dict[str, str] = {}
    for row_id, variant_id, output_path, output_sha256 in rows:
        state.rows_per_variant[variant_id] = state.rows_per_variant.get(variant_id, 0) + 1
        state.row_ids.setdefault(variant_id, []).append(row_id)
        latest[output_path] = output_sha256
    for output_path, output_sha256 in latest.items():
        path = out / output_path
        if not path.is_file() or sha256_bytes(path.read_bytes()) != output_sha256:
            state.rows_without_file.append(output_path)
    state.files_without_row = sorted(set(files) - set(latest))
    return state


def ledger_json(out: Path, query: str, *params) -> list:
    with sqlite3.connect(out / "ledger.sqlite") as db:
        return [
            json.loads(row[0]) if isinstance(row[0], str) else row[0]
            for row in db.execute(query, params)
        ]
