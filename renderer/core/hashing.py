"""Content hashing contracts.

* ``canonical_json(obj)`` is ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
  ensure_ascii=False)``; ids are the sha256 hex digest of its UTF-8 bytes. Changing this
  changes every id ever issued, so it is a contract (see README, "Ids and hashes").
* A file's hash is the sha256 of its bytes.
* A folder's hash (a diffusers model folder) is the sha256 of the canonical JSON of
  ``{relative/posix/path: file sha256}`` over every file in it, hidden files excluded.
* The A1111/Civitai short hash of a model is the first 10 hex digits of its hash.

``HashCache`` also remembers facts derived from a file's content alone (an upscaler's
architecture and scale), keyed by its sha256 and the kind of fact.

``hash_file`` hashes through one ``HashCache`` shared by the whole process (validation,
pins, ``show``'s file states, reproduction's file search).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, BinaryIO

from renderer.core.json_value import JsonObject, JsonValue

_CHUNK = 1 << 20


# One encoder for every call: json.dumps() with options builds a new encoder each time.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(obj: JsonValue) -> str:
    return _CANONICAL.encode(obj)


def sha256_json(obj: JsonValue) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def sha256_stream(handle: BinaryIO) -> str:
    """The sha256 of what is left to read in ``handle`` (a file, a zip entry), in chunks."""
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _folder_files(path: Path) -> list[tuple[str, Path]]:
    """(relative posix path, file) for every non-hidden file under path, sorted."""
    return [
        (file.relative_to(path).as_posix(), file)
        for file in sorted(path.rglob("*"))
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(path).parts)
    ]


def sha256_folder(path: Path) -> str:
    return sha256_json({relative: sha256_file(file) for relative, file in _folder_files(path)})


def sha256_path(path: Path) -> str:
    """Hash a model file or a model folder by the rules above."""
    return sha256_folder(path) if path.is_dir() else sha256_file(path)


def short_hash(sha256: str) -> str:
    """The A1111/Civitai short form shown as ``Model hash``."""
    return sha256[:10]


class HashCache:
    """sha256 of files remembered by (path, size, mtime_ns, inode), so a multi-GB checkpoint
    is hashed once; any change to those four re-hashes it.

    Stored in SQLite at ``$CAMPAIGN_CACHE_DIR/hashes.sqlite`` (default
    ``$XDG_CACHE_HOME/campaign-renderer`` or ``~/.cache/campaign-renderer``). A cache that
    cannot be opened or written is skipped, never fatal: hashing just costs its full time.
    One cache may be used from several threads (``hash_file`` shares one): its
    connection is opened for any thread and used by one at a time; the hashing itself runs
    outside that lock.
    """

    def __init__(self, path: Path | None = None):
        self.path = path or default_cache_dir() / "hashes.sqlite"
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(
                    self.path, timeout=10, isolation_level=None, check_same_thread=False
                )
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS file_hashes (path TEXT PRIMARY KEY, size INTEGER,"
                    " mtime_ns INTEGER, inode INTEGER, sha256 TEXT NOT NULL)"
                )
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS file_facts (sha256 TEXT, kind TEXT, facts TEXT "
                    "NOT NULL, PRIMARY KEY (sha256, kind))"
                )
            except sqlite3.Error:
                return None
        return self._db

    def sha256_file(self, path: Path) -> str:
        path = path.resolve()
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        with self._lock:
            db = self._connect()
            row = (
                db.execute(
                    "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND "
                    "mtime_ns = ? AND inode = ?",
                    key,
                ).fetchone()
                if db
                else None
            )
        if row:
            known: str = row[0]
            return known
        digest = sha256_file(path)
        with self._lock, contextlib.suppress(sqlite3.Error):  # read-only or busy: time only
            if db is not None:
                db.execute(
                    "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?)", (*key, digest)
                )
        return digest

    def facts(self, sha256: str, kind: str) -> dict[str, Any] | None:
        """What ``remember`` stored of the file with this content, for this kind of fact."""
        with self._lock:
            db = self._connect()
            row = (
                db
                and db.execute(
                    "SELECT facts FROM file_facts WHERE sha256 = ? AND kind = ?", (sha256, kind)
                ).fetchone()
            )
        return json.loads(row[0]) if row else None

    def remember(self, sha256: str, kind: str, facts: JsonObject) -> None:
        """Store facts derived from a file's content alone (so its sha256 keys them), which
        cost a heavy import or a long read to derive again."""
        with self._lock, contextlib.suppress(sqlite3.Error):  # read-only or busy: time only
            if (db := self._connect()) is not None:
                db.execute(
                    "INSERT OR REPLACE INTO file_facts VALUES (?, ?, ?)",
                    (sha256, kind, canonical_json(facts)),
                )

    def sha256_path(self, path: Path) -> str:
        """``sha256_path`` with every file's hash taken from the cache when unchanged."""
        if not path.is_dir():
            return self.sha256_file(path)
        return sha256_json(
            {relative: self.sha256_file(file) for relative, file in _folder_files(path)}
        )


def default_cache_dir() -> Path:
    if configured := os.environ.get("CAMPAIGN_CACHE_DIR"):
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "campaign-renderer"


@functools.cache
def _shared_cache() -> HashCache:
    return HashCache()


def shared_cache() -> HashCache:
    """The process's one hash cache (``hash_file`` hashes through it)."""
    return _shared_cache()


def hash_file(path: Path) -> str:
    """sha256 of a file or model folder through the shared hash cache."""
    return _shared_cache().sha256_path(path)
