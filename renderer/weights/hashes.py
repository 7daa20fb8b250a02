"""The hash A1111 shows for a LoRA: the "addnet" hash and its short form.

A model's short hash (sha256[:10]) is ``renderer.core.hashing.short_hash``; a LoRA's is
the first 12 hex digits of its addnet hash, which only the file can give.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# A1111 shows LoRA hashes as the first 12 hex digits ("shorthash"), models as 10.
LORA_SHORT_HASH = 12
_SAFETENSORS_LENGTH = 8  # a safetensors file starts with its JSON header's length, u64 LE
_CHUNK = 1 << 20


def addnet_hash(path: Path) -> str:
    """The hash A1111 shows for a LoRA file: for ``.safetensors`` the "addnet" hash (the
    sha256 of the bytes after the 8-byte length and the JSON header, so editing metadata
    keeps it; A1111 ``modules/hashes.py`` ``addnet_hash_safetensors``, from sd-scripts'
    ``library/train_util.py``), else the sha256 of the whole file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if path.name.lower().endswith(".safetensors"):
            header = handle.read(_SAFETENSORS_LENGTH)
            if len(header) < _SAFETENSORS_LENGTH:
                raise ValueError(f"{path} is not a safetensors file: it has no header length")
            handle.seek(_SAFETENSORS_LENGTH + int.from_bytes(header, "little"))
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
