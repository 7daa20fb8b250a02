"""A delivery's bytes and where they go: each file as shipped (signed with a signer), the
manifest (JSON and CSV), and the new folder or .zip they are written to, read back and
fsynced before ``campaign deliver`` moves it into place.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from renderer.commands.deliver_plan import DeliveryPlan
from renderer.commands.provenance import C2paSigner, sign_image
from renderer.core.atomic import fsync_folder, write_bytes_atomic
from renderer.core.errors import InputError
from renderer.core.hashing import sha256_bytes, sha256_file
from renderer.core.sqlite_db import utc_now
from renderer.core.terminal import Log
from renderer.ledger.delivery_recovery import MANIFEST_NAMES
from renderer.validate.matrix import axis_label

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry times: no clock in the archive
# Tests only (tests/test_deliver.py): seconds to stop at each step, named on stderr, so
# that a SIGKILL lands between any two steps of a delivery.
STEP_PAUSE_ENV = "CAMPAIGN_DELIVER_STEP_PAUSE"


def pause_at(name: str) -> None:
    """A point between two steps of a delivery. With $CAMPAIGN_DELIVER_STEP_PAUSE (tests
    only) it is named on stderr and the delivery waits there, so a kill can land on it."""
    if pause := os.environ.get(STEP_PAUSE_ENV):
        sys.stderr.write(f"deliver step: {name}\n")
        sys.stderr.flush()
        time.sleep(float(pause))


def shipped_contents(
    plan: DeliveryPlan, out_dir: Path, signer: C2paSigner | None, log: Log
) -> dict[str, bytes]:
    """Each file's bytes as shipped (signed when there is a signer), checked again."""
    contents = {}
    for shipped in plan.files:
        data = (out_dir / shipped.source_path).read_bytes()
        if sha256_bytes(data) != shipped.sha256:  # changed since it was planned
            raise InputError(
                f"{shipped.source_path} changed while it was being delivered",
                fix="run campaign deliver again",
            )
        contents[shipped.name] = (
            sign_image(data, signer, title=Path(shipped.name).name) if signer is not None else data
        )
    if signer is not None:
        log(f"signed {len(contents)} file(s) with a C2PA manifest ({signer.cert_chain.name})")
    return contents


def manifest_of(
    plan: DeliveryPlan, delivery_id: str, require: str, signed: bool, contents: dict[str, bytes]
) -> dict[str, Any]:
    files = []
    for shipped in plan.files:
        row, approval = shipped.row, shipped.approval
        data = contents[shipped.name]
        files.append(
            {
                "variant_id": row.variant_id,
                "axes": {axis: axis_label(value) for axis, value in row.axes.items()},
                "channel": shipped.channel,
                "file": shipped.name,
                "sha256": sha256_bytes(data),
                "content_sha256": shipped.sha256,
                "bytes": len(data),
                "size": [shipped.width, shipped.height],
                "format": shipped.format,
                "gate_status": row.status,
                "approved_by": approval.approved_by,
                "gating_id": approval.gating_id,
                "approved_at": approval.approved_at,
            }
        )
    return {
        "delivery_id": delivery_id,
        "run_id": plan.run_id,
        "campaign": plan.campaign,
        "require": require,
        "signed": signed,
        "created_at": utc_now(),
        "files": files,
    }


def manifest_files(manifest: dict[str, Any]) -> dict[str, bytes]:
    """The manifest's files in the delivery: JSON, and CSV for a spreadsheet."""
    return {
        "manifest.json": (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode(),
        "manifest.csv": _manifest_csv(manifest).encode(),
    }


def _manifest_csv(manifest: dict[str, Any]) -> str:
    """One row per file; axes as one ``axis.NAME`` column each (a spreadsheet's shape)."""
    axes = list(dict.fromkeys(axis for item in manifest["files"] for axis in item["axes"]))
    columns = [
        "variant_id",
        *(f"axis.{axis}" for axis in axes),
        "channel",
        "file",
        "sha256",
        "content_sha256",
        "bytes",
        "width",
        "height",
        "format",
        "gate_status",
        "approved_by",
        "gating_id",
        "approved_at",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for item in manifest["files"]:
        writer.writerow(
            [
                item["variant_id"],
                *(item["axes"].get(axis, "") for axis in axes),
                item["channel"],
                item["file"],
                item["sha256"],
                item["content_sha256"],
                item["bytes"],
                item["size"][0],
                item["size"][1],
                item["format"],
                item["gate_status"],
                item["approved_by"],
                item["gating_id"],
                item["approved_at"],
            ]
        )
    return buffer.getvalue()


def write_folder(temp: Path, contents: dict[str, bytes], names: dict[str, bytes]) -> None:
    """The delivery as a new folder ``temp``: every folder 0777 and file 0666 less the
    umask (as any new file of the process), each file read back, everything fsynced."""
    os.mkdir(temp)  # the mode argument's default (0777) less the umask
    files = {**contents, **names}
    for name, data in files.items():
        write_bytes_atomic(temp / name, data)
        pause_at("file")
    for name, data in files.items():  # read back what was written
        if sha256_file(temp / name) != sha256_bytes(data):
            raise InputError(
                f"{name} reads back with other bytes than were written",
                file=temp / name,
                fix="check the disk, then deliver again",
            )
    for folder in sorted({(temp / name).parent for name in files}, reverse=True):
        fsync_folder(folder)  # each channel folder's entry in its parent, then the temp's


def write_zip(temp: Path, contents: dict[str, bytes], names: dict[str, bytes]) -> None:
    """The delivery as a new file ``temp`` (0666 less the umask), read back and fsynced."""
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as handle:
        with zipfile.ZipFile(handle, "w") as archive:
            for name, data in {**contents, **names}.items():
                # Images are compressed already; the manifests deflate well.
                entry = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                entry.compress_type = (
                    zipfile.ZIP_DEFLATED if name in MANIFEST_NAMES else zipfile.ZIP_STORED
                )
                archive.writestr(entry, data)
                pause_at("file")
        handle.flush()
        os.fsync(handle.fileno())
    with zipfile.ZipFile(temp) as archive:  # read back what was written
        for name, data in {**contents, **names}.items():
            if sha256_bytes(archive.read(name)) != sha256_bytes(data):
                raise InputError(
                    f"{name} reads back from the archive with other bytes",
                    file=temp,
                    fix="check the disk, then deliver again",
                )


def read_manifest(target: Path) -> dict[str, Any]:
    """The manifest of a delivery written to ``target`` (a folder or a .zip)."""
    manifest: dict[str, Any]
    if target.is_dir():
        manifest = json.loads((target / "manifest.json").read_bytes())
    else:
        with zipfile.ZipFile(target) as archive:
            manifest = json.loads(archive.read("manifest.json"))
    return manifest
