"""Atomic file writes: a temp file in the target folder, fsync, then ``os.replace``.

A crash at any moment leaves either the old file or the complete new one, never a
truncated file. Temp files start with ``.tmp-`` so a later run can sweep leftovers. The
file gets the mode any new file of this process gets (0666 less the umask: 0644 under the
usual 022), not the private 0600 of a temp file, so a shared output folder stays shared.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def _process_umask() -> int:
    # os.umask can only be read by setting it; done once, before any thread starts writing.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_process_umask()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def fsync_folder(folder: Path) -> None:
    """Make the entries of ``folder`` (a rename into it) durable, where the platform can."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
