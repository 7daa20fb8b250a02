"""One render per output folder at a time, and clean-up after a crashed one.

``hold_output_folder(out_dir)`` takes an exclusive ``flock`` on ``OUT/.campaign.lock`` for
the whole run. A second ``campaign render`` on the same folder waits for it (saying who
holds it) or, with ``wait=False``, refuses at once with ``FolderBusy``. The kernel drops the
lock when its process dies, ``kill -9`` included, so a crash never leaves a stale lock and
no pid files need guessing about.

Holding the lock also means that nothing else is writing into the folder, so it is the
moment to recover from a crash (``recover_after_crash``): temp files (``.tmp-*``) that a
killed writer left are deleted, and runs still marked ``running`` become ``interrupted``.
``campaign deliver`` holds the lock too, and a delivery a kill interrupted is rolled
forward or discarded (``recover_deliveries``): each delivery row is committed before its
temp folder or .zip beside the target is written (state ``writing``), again once that temp
is complete and verified (``pending``), and marked ``complete`` after the rename into
place. So every temp a delivery writes is named by a row, and each state says what to do.
A killed run can leave one more thing behind: an image whose ledger row was not yet
committed. It has no row, so the next run renders that variant again and replaces the
file (see README, "Crash safety").

``flock`` is advisory and local: it works between processes on one machine and on local
file systems; on a network file system, give each machine its own output folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .atomic import TEMP_PREFIX, fsync_folder
from .errors import RenderFailure
from .hashing import sha256_bytes, sha256_file
from .output_folder import LOCK_FILE, REPRODUCE, THUMBNAILS
from .records import DeliveryRow

LOCK_NAME = LOCK_FILE
# Output sub-folders that render runs do not own (written without the folder lock): the
# reproductions, and the review page's thumbnail cache (renderer.thumbnails).
THUMBNAIL_FOLDER = THUMBNAILS
UNSWEPT_FOLDERS = (REPRODUCE, THUMBNAIL_FOLDER)


class FolderBusy(RenderFailure):
    """Another process holds the output folder (exit 3: nothing was rendered)."""


@contextmanager
def hold_output_folder(out_dir: Path, *, wait: bool = True, holder: str = "",
                       log: Callable[[str], None] = lambda _: None,
                       poll_seconds: float = 0.2) -> Iterator[Path]:
    """Hold the output folder's lock for the duration of the block."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_NAME
    handle = open(path, "a+")  # noqa: SIM115 - held open for the whole block
    try:
        if not _try_lock(handle):
            owner = describe_owner(path)
            if not wait:
                raise FolderBusy(
                    f"output folder {out_dir} is in use by another campaign render ({owner}); "
                    "nothing was rendered. Wait for it to finish, use another --out, or drop "
                    "--no-wait to queue behind it")
            log(f"output folder {out_dir} is in use by another campaign render ({owner}); "
                "waiting for it to finish (Ctrl-C to stop)")
            while not _try_lock(handle):
                time.sleep(poll_seconds)
            log("output folder free; resuming from what the other run finished")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "holder": holder,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
        handle.flush()
        yield path
    finally:
        try:
            fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            handle.close()


def _try_lock(handle: Any) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def describe_owner(path: Path) -> str:
    """Who holds the lock, from what the holder wrote into it (best effort)."""
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "owner unknown"
    if not owner:
        return "owner unknown"
    return f"pid {owner.get('pid')}, {owner.get('holder') or 'campaign'} since {owner.get('since')}"


def sweep_temp_files(out_dir: Path) -> list[Path]:
    """Delete ``.tmp-*`` files a killed writer left (call only while holding the lock)."""
    swept = []
    for path in out_dir.rglob(f"{TEMP_PREFIX}*"):
        relative = path.relative_to(out_dir).parts
        if relative[0] in UNSWEPT_FOLDERS or not path.is_file():
            continue
        path.unlink(missing_ok=True)
        swept.append(path)
    return swept


def recover_after_crash(out_dir: Path, ledger: Any, log: Callable[[str], None]) -> None:
    """Clean up after a run or delivery that was killed (call only while holding the lock).
    Deliveries first: a delivery's temp .zip may lie inside the output folder."""
    recover_deliveries(out_dir, ledger, log)
    swept = sweep_temp_files(out_dir)
    interrupted = ledger.close_interrupted_runs()
    if swept or interrupted:
        log(f"recovered from an interrupted run: {len(swept)} temp file(s) deleted, "
            f"{len(interrupted)} run(s) marked interrupted ({', '.join(interrupted) or '-'})")


# ------------------------------------------------------------ deliveries

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
            found = {item.relative_to(path).as_posix(): item for item in path.rglob("*")
                     if not item.is_dir() or item.is_symlink()}
            if set(found) != names:
                return f"{path} holds other files than were recorded"
            if any(item.is_symlink() for item in found.values()):
                return f"{path} holds a symbolic link"
            hashes = {name: sha256_file(found[name]) for name in [*expected, "manifest.json"]}
        elif path.is_file() and not path.is_symlink():
            with zipfile.ZipFile(path) as archive:
                if set(archive.namelist()) != names or \
                        len(archive.namelist()) != len(names):
                    return f"{path} holds other entries than were recorded"
                hashes = {}
                for name in [*expected, "manifest.json"]:
                    with archive.open(name) as entry:
                        hashes[name] = _sha256_stream(entry)
        else:
            return f"{path} is missing"
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        return f"{path} cannot be read: {err}"
    if hashes.pop("manifest.json") != record.manifest_sha256:
        return f"{path}/manifest.json is not the recorded one"
    if altered := sorted(name for name, sha in hashes.items() if expected[name] != sha):
        return f"{path}/{altered[0]} is not the recorded file"
    return None


def _sha256_stream(handle: Any) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


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


def recover_deliveries(out_dir: Path, ledger: Any, log: Callable[[str], None],
                       beside: Iterable[Path] = ()) -> list[DeliveryRow]:
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
            elif not (target.exists() or target.is_symlink()) and \
                    delivery_problem(temp, record) is None:
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
        log(f"recovered from an interrupted delivery: {len(completed)} completed "
            f"({', '.join(completed) or '-'}), {len(discarded)} discarded "
            f"({', '.join(discarded) or '-'}), {len(swept)} temp file(s) deleted")
    return [record for delivery_id in completed
            for record in ledger.deliveries(delivery_id=delivery_id)]
