"""How AUTOMATIC1111's web UI reads a LoRA file's header for its LoRA card, for the tests to
check ours with.

Origin: https://github.com/AUTOMATIC1111/stable-diffusion-webui (AGPL-3.0): modules/sd_models.py
``read_metadata_from_safetensors`` (1.10.0, commit c19d044), and extensions-builtin/Lora at
d4945f4 (ui_edit_user_metadata.py ``is_non_comma_tagset``, ``re_word``, ``build_tags`` and
``LoraUserMetadataEditor.get_metadata_table``'s date and dataset size) and 0a0efa3 (network.py
``NetworkOnDisk.detect_version``). Reproduced rule for rule, not copied (this workplace keeps
public repositories' code out of the project's commits), under the original names.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path


def read_metadata_from_safetensors(path: Path) -> dict:
    """The header's ``__metadata__``, each value starting with ``{`` parsed as JSON."""
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        start = handle.read(2)
        assert length > 2 and start in (b'{"', b"{'"), f"{path} is not a safetensors file"
        document = json.loads(start + handle.read(length - 2))
    metadata = {}
    for key, value in document.get("__metadata__", {}).items():
        metadata[key] = value
        if isinstance(value, str) and value[0:1] == "{":
            with contextlib.suppress(ValueError):
                metadata[key] = json.loads(value)
    return metadata


def build_tags(metadata: dict) -> list[tuple[str, int]]:
    """The card's "Training dataset tags": ss_tag_frequency summed over folders (tags
    stripped); a tag set averaging 16+ characters is split into words of 3+; by count."""
    tags: dict[str, int] = {}
    for tags_dict in metadata.get("ss_tag_frequency", {}).values():
        for tag, count in tags_dict.items():
            tags[tag.strip()] = tags.get(tag.strip(), 0) + int(count)
    if tags and sum(len(tag) for tag in tags) / len(tags) >= 16:
        words: dict[str, int] = {}
        for text, count in tags.items():
            for word in re.findall(r"[-_\w']+", text):
                if len(word) >= 3:
                    words[word] = words.get(word, 0) + count
        tags = words
    return [(tag, tags[tag]) for tag in sorted(tags, key=tags.__getitem__, reverse=True)]


def detect_version(metadata: dict) -> str:
    if str(metadata.get("ss_base_model_version", "")).startswith("sdxl_"):
        return "SDXL"
    return "SD2" if str(metadata.get("ss_v2", "")) == "True" else "SD1" if metadata else "Unknown"
