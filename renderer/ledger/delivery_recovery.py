"""Deliveries a kill interrupted: rolled forward or discarded, never left half-done.

``campaign deliver`` commits each delivery's row before every step it takes: ``writing``
(naming the temp folder or .zip it is about to write beside the target), ``pending`` (the
temp is complete and verified), ``complete`` (renamed into place). So every temp a delivery
writes is named by a row, and each state says what to do with it after a crash.
``recover_deliveries`` does that, holding the output folder's lock (``renderer.ledger.locking``):
``campaign deliver`` runs it first, and so does ``campaign render``'s crash recovery.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, cast

from renderer.core.atomic import TEMP_PREFIX, fsync_folder
from renderer.core.hashing import sha256_bytes, sha256_file, sha256_stream
from renderer.core.terminal import Log
from renderer.ledger.records import DeliveryRow
from renderer.ledger.store import Ledger

DELIVERY_TEMP_PREFIX = f"{TEMP_PREFIX}delivery-"
MANIFEST_NAMES = ("manifest.json", "manifest.csv")
# Temp names of deliveries before m009 (tempfile's random 8 characters): never in a row.
_UNNAMED_TEMP = re.compile(rf"{re.escape(DELIVERY_TEMP_PREFIX)}[a-z0-9_]{{8}}(\.zip)?")


def folder_tag(out_dir: Path) -> str:
    """Ten hex digits naming an output folder in the temp names of its deliveries, so that
    a sweep beside a target never touches another output folder's delivery in progress."""
    return sha256_bytes(os.fsencode(os.path.realpath(out_dir)))[:10]


def delivery_temp_path(out_dir: Path, target: Path, delivery_id: str) -> Path:
    """Where a delivery is written before it is renamed to ``target`` (absolute): beside
    it, ``.tmp-delivery-TAG-ID`` (``.zip`` for a zip)."""
    suffix = ".zip" if target.suffix.lower() == ".zip" else ""
    return target.parent / f"{DELIVERY_TEMP_PREFIX}{folder_tag(out_dir)}-{delivery_id}{suffix}"


def delivery_problem(path: Path, record: DeliveryRow) -> str | None:
    """Why ``path`` (a delivery folder or .zip) does not hold ``record`` exactly: its
    manifest.json with the recorded sha256, manifest.csv, every recorded file with its
    sha256 and nothing else. None when it does."""
    expected = {item.path: item.sha256 for item in record.files}
    names = set(expected) | set(MANIFEST_NAMES)
    try:
        if path.is_dir() and not path.is_symlink():
            found = {
                item.relative_to(path).as_posix(): item
                for item in path.rglob("*")
                if not item.is_dir() or item.is_symlink()
            }
            if set(found) != names:
                return f"{path} holds other files than were recorded"
            if any(item.is_symlink() for item in found.values()):
                return f"{path} holds a symbolic link"
            hashes = {name: sha256_file(found[name]) for name in [*expected, "manifest.json"]}
        elif path.is_file() and not path.is_symlink():
            with zipfile.ZipFile(path) as archive:
                if set(archive.namelist()) != names or len(archive.namelist()) != len(names):
                    return f"{path} holds other entries than were recorded"
                hashes = {}
                for name in [*expected, "manifest.json"]:
                    with archive.open(name) as entry:
                        # A zip entry is a binary stream; sha256_stream is typed for files.
                        hashes[name] = sha256_stream(cast(BinaryIO, entry))
        else:
            return f"{path} is missing"
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        return f"{path} cannot be read: {err}"
    if hashes.pop("manifest.json") != record.manifest_sha256:
        return f"{path}/manifest.json is not the recorded one"
    if altered := sorted(name for name, sha in hashes.items() if expected[name] != sha):
        return f"{path}/{altered[0]} is not the recorded file"
    return None


def remove_path(path: Path) -> None:
    """Delete a delivery's temp folder or file, whichever it is (gone already: nothing to
    do); never anything not named like one."""
    if not path.name.startswith(DELIVERY_TEMP_PREFIX):
        raise ValueError(f"{path} is not a delivery's temp")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def move_into_place(temp: Path, target: Path) -> None:
    """Rename a complete delivery to its target, never over anything: a folder by
    ``rename`` (which fails on a non-empty folder; an empty one is refused first), a .zip
    by a hard link (which fails if the target exists) and then unlinking the temp."""
    if temp.is_dir():
        if target.exists() or target.is_symlink():
            raise FileExistsError(f"{target} exists")
        os.rename(temp, target)
    else:
        os.link(temp, target)
        temp.unlink()
    fsync_folder(target.parent)


def recover_deliveries(
    out_dir: Path, ledger: Ledger, log: Log, beside: Iterable[Path] = ()
) -> list[DeliveryRow]:
    """Roll each delivery a kill interrupted forward, or discard it (call only while
    holding the lock); returns the ones completed now.

    * ``writing``: its temp may be partial, and nothing was renamed yet: the temp is
      deleted and the row discarded.
    * ``pending``: its temp was complete and verified. If the target holds exactly what
      the row records (the rename happened), the row is complete (and the temp, a .zip's
      second link, deleted); else if the temp still verifies and the target is free, it is
      renamed into place and the row is complete; else the temp is deleted and the row
      discarded (a target someone else made is left alone).

    Then ``.tmp-delivery-*`` beside every target the ledger names (and ``beside``) that no
    unfinished row names is deleted: this folder's own (its tag) and nameless ones from
    before m009; another output folder's temps are left alone."""
    completed, discarded = [], []
    for unfinished in ledger.unfinished_deliveries():
        record, temp = unfinished.record, Path(unfinished.temp_path)
        target = Path(record.target)
        done = False
        if unfinished.state == "pending":
            if delivery_problem(target, record) is None:
                remove_path(temp)
                done = True
            elif (
                not (target.exists() or target.is_symlink())
                and delivery_problem(temp, record) is None
            ):
                try:
                    move_into_place(temp, target)
                    done = True
                except OSError:
                    done = delivery_problem(target, record) is None
        if done:
            ledger.set_delivery_state(record.id, "complete")
            completed.append(record.id)
        else:
            remove_path(temp)
            ledger.set_delivery_state(record.id, "discarded")
            discarded.append(record.id)
    tag = f"{DELIVERY_TEMP_PREFIX}{folder_tag(out_dir)}-"
    swept = []
    folders = {Path(target).parent for target in ledger.delivery_targets()} | set(beside)
    for folder in sorted(folders):
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(tag) or _UNNAMED_TEMP.fullmatch(entry.name):
                remove_path(entry)
                swept.append(entry)
    if completed or discarded or swept:
        log(
            f"recovered from an interrupted delivery: {len(completed)} completed "
            f"({', '.join(completed) or '-'}), {len(discarded)} discarded "
            f"({', '.join(discarded) or '-'}), {len(swept)} temp file(s) deleted"
        )
    return [
        record for delivery_id in completed for record in ledger.deliveries(delivery_id=delivery_id)
    ]
