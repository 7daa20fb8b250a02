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
forward or discarded first (``renderer.ledger.delivery_recovery``).
A killed run can leave one more thing behind: an image whose ledger row was not yet
committed. It has no row, so the next run renders that variant again and replaces the
file (see README, "Crash safety").

``flock`` is advisory and local: it works between processes on one machine and on local
file systems; on a network file system, give each machine its own output folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from renderer.core.atomic import TEMP_PREFIX
from renderer.core.errors import RenderFailure
from renderer.core.terminal import Log
from renderer.ledger.delivery_recovery import recover_deliveries
from renderer.ledger.store import Ledger
from renderer.plan.output_folder import LOCK_FILE, REPRODUCE, THUMBNAILS

LOCK_NAME = LOCK_FILE
# Output sub-folders that render runs do not own (written without the folder lock): the
# reproductions, and the review page's thumbnail cache (renderer.report.thumbnails).
THUMBNAIL_FOLDER = THUMBNAILS
UNSWEPT_FOLDERS = (REPRODUCE, THUMBNAIL_FOLDER)


class FolderBusy(RenderFailure):
    """Another process holds the output folder (exit 3: nothing was rendered)."""


@contextmanager
def hold_output_folder(
    out_dir: Path,
    *,
    wait: bool = True,
    holder: str = "",
    log: Log = lambda _: None,
    poll_seconds: float = 0.2,
) -> Iterator[Path]:
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
                    "--no-wait to queue behind it"
                )
            log(
                f"output folder {out_dir} is in use by another campaign render ({owner}); "
                "waiting for it to finish (Ctrl-C to stop)"
            )
            while not _try_lock(handle):
                time.sleep(poll_seconds)
            log("output folder free; resuming from what the other run finished")
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "holder": holder,
                    "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
            )
        )
        handle.flush()
        yield path
    finally:
        try:
            fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            handle.close()


def _try_lock(handle: IO[str]) -> bool:
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


def recover_after_crash(out_dir: Path, ledger: Ledger, log: Log) -> None:
    """Clean up after a run or delivery that was killed (call only while holding the lock).
    Deliveries first: a delivery's temp .zip may lie inside the output folder."""
    recover_deliveries(out_dir, ledger, log)
    swept = sweep_temp_files(out_dir)
    interrupted = ledger.close_interrupted_runs()
    if swept or interrupted:
        log(
            f"recovered from an interrupted run: {len(swept)} temp file(s) deleted, "
            f"{len(interrupted)} run(s) marked interrupted ({', '.join(interrupted) or '-'})"
        )
