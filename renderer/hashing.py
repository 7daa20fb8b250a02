"""Content hashing contracts.

* ``canonical_json(obj)`` is ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
  ensure_ascii=False)``; ids are the sha256 hex digest of its UTF-8 bytes. Changing this
  changes every id ever issued, so it is a contract (see README, "Ids and hashes").
* A file's hash is the sha256 of its bytes.
* A folder's hash (a diffusers model folder) is the sha256 of the canonical JSON of
  ``{relative/posix/path: file sha256}`` over every file in it, hidden files excluded.
* The A1111/Civitai short hash of a model is the first 10 hex digits of its hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_folder(path: Path) -> str:
    listing = {
        file.relative_to(path).as_posix(): sha256_file(file)
        for file in sorted(path.rglob("*"))
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(path).parts)
    }
    return sha256_json(listing)


def sha256_path(path: Path) -> str:
    """Hash a model file or a model folder by the rules above."""
    return sha256_folder(path) if path.is_dir() else sha256_file(path)


def short_hash(sha256: str) -> str:
    """The A1111/Civitai short form shown as ``Model hash``."""
    return sha256[:10]
