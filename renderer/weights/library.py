"""The model library: model files kept once, by content, in one folder that recipes name
them from (``model: NAME`` or ``sha256: HEX``), and what a model file is — its kind and
family — read from its safetensors header alone (no weights loaded).

Where: ``$CAMPAIGN_MODELS``, else ``$XDG_DATA_HOME/campaign-renderer/models``, else
``~/.local/share/campaign-renderer/models``. Inside::

    index.json                 every file by sha256: name, kind, family, hashes, lineage
    NAME.safetensors           each file under its library name (what A1111 and LoRA tags
                               call it), written by a temp file and a rename
    configs/HASH12/DIR/        a single-file checkpoint's config folder, copied whole
    .lock                      flock held while the index changes

The index is one JSON file, rewritten atomically, rather than SQLite: a library holds tens or
hundreds of entries, is read far more often than written, and is copied or synced between
machines as a folder, where one self-contained text file travels and diffs where a database
with its WAL files does not. Its ``format`` number is checked on every read, so a later
layout can migrate it; writers take the lock, so two ``campaign models add`` never lose an
entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from renderer.core.atomic import FILE_MODE, TEMP_PREFIX, fsync_folder, write_text_atomic
from renderer.core.errors import InputError
from renderer.core.families import SDXL_REFINER_COMPONENTS, SINGLE_FILE_COMPONENTS
from renderer.core.hashing import short_hash
from renderer.core.json_value import JsonObject
from renderer.load.schema import NAME_PATTERN
from renderer.weights.compat import (
    SafetensorsHeader,
    family_from_metadata,
    family_from_names,
)
from renderer.weights.hashes import LORA_SHORT_HASH

INDEX_NAME = "index.json"
INDEX_FORMAT = 1
CONFIGS = "configs"
LOCK_NAME = ".lock"
KINDS = ("checkpoint", "lora", "controlnet", "ip_adapter", "upscaler", "clip")


def library_folder() -> Path:
    """Where the model library lives (see the module's docstring)."""
    if configured := os.environ.get("CAMPAIGN_MODELS"):
        return Path(configured)
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "campaign-renderer" / "models"


# ---------------------------------------------------------------- what a file is


@dataclass(frozen=True)
class Detected:
    """A model file's kind and family (None: it serves every family) and the header keys
    that told them."""

    kind: str
    family: str | None
    evidence: str


def detect_model(header: SafetensorsHeader) -> Detected | str:
    """What the file with this header is, or (a string) why that cannot be told. Upscalers
    are not recognised here: spandrel knows their many layouts (the caller asks it)."""
    names = list(header.shapes)
    if any("lora" in name for name in names):  # diffusers' own test when it loads one
        return _lora(header, names)
    if any(
        name.startswith(("ip_adapter.", "image_proj.", "ip_adapter_proj_model.")) for name in names
    ):
        return _ip_adapter(header, names)
    if controlnet := _controlnet(names):
        return controlnet
    for family, components in SINGLE_FILE_COMPONENTS.items():
        if all(any(name.startswith(p) for name in names) for p in components.values()):
            return Detected(
                "checkpoint", family, f"{family} single-file keys: " + ", ".join(components)
            )
    if all(any(name.startswith(p) for name in names) for p in SDXL_REFINER_COMPONENTS.values()):
        return Detected(
            "checkpoint",
            "sdxl",
            "SDXL refiner single-file keys: " + ", ".join(SDXL_REFINER_COMPONENTS),
        )
    if (
        _has(names, "visual.", "token_embedding.")
        or _has(names, "text_model.")
        or _has(names, "vision_model.")
    ):
        return Detected(
            "clip", None, "CLIP keys (visual./token_embedding., text_model. or vision_model.)"
        )
    prefixes = sorted({name.split(".")[0] for name in names})
    return (
        f"its {len(names)} tensors ({', '.join(prefixes[:8])}{', …' if len(prefixes) > 8 else ''}) "
        "are none of a whole single-file checkpoint (UNet, VAE and text encoders), a LoRA, "
        "a ControlNet, an IP-Adapter, an upscaler spandrel knows or a CLIP model"
    )


def _has(names: Sequence[str], *prefixes: str) -> bool:
    return all(any(name.startswith(prefix) for name in names) for prefix in prefixes)


def _lora(header: SafetensorsHeader, names: list[str]) -> Detected | str:
    base = header.metadata.get("ss_base_model_version", "")
    found = family_from_names(names) or family_from_metadata(base)
    if found in ("flux", "sdxl"):
        return Detected("lora", found, f"{found} LoRA keys or ss_base_model_version {base!r}")
    # An SD UNet LoRA without the second text encoder: SD1.5 has cross-attention in its first
    # down block, SDXL's first down block has none.
    if any(re.search(r"down_blocks[._]0[._]attentions|input_blocks_[12]_1_", n) for n in names):
        return Detected("lora", "sd15", "SD1.5 layers (cross-attention in the first down block)")
    if found == "sd":
        return "an SD LoRA whose layers and metadata do not say SD1.5 or SDXL"
    return f"a LoRA of no family its {len(names)} tensor names or metadata tell"


def _ip_adapter(header: SafetensorsHeader, names: list[str]) -> Detected | str:
    if any(name.startswith("ip_adapter_proj_model.") for name in names):
        return Detected("ip_adapter", "flux", "XLabs Flux IP-Adapter keys (ip_adapter_proj_model.)")
    # SDXL's cross-attention (both text encoders, 2048 wide) is wider than a CLIP image
    # embedding (1024 or 1280); SD1.5's (768) is not.
    widths = [
        shape[1]
        for name, shape in header.shapes.items()
        if name.endswith("to_k_ip.weight") and len(shape) == 2
    ]
    embeds = [
        shape[1]
        for name in ("image_proj.proj.weight", "image_proj.proj_in.weight")
        if len(shape := header.shapes.get(name, [])) == 2
    ]
    if not widths or not embeds:
        return "an IP-Adapter without to_k_ip and image_proj weights to tell its family by"
    family = "sdxl" if widths[0] > embeds[0] else "sd15"
    return Detected(
        "ip_adapter",
        family,
        f"cross-attention width {widths[0]} against image embedding {embeds[0]}",
    )


def _controlnet(names: list[str]) -> Detected | None:
    if any(
        name.startswith(("controlnet_x_embedder.", "controlnet_single_blocks.")) for name in names
    ):
        return Detected("controlnet", "flux", "Flux ControlNet keys (controlnet_x_embedder.)")
    diffusers = any(name.startswith("controlnet_cond_embedding.") for name in names)
    original = any(name.startswith("control_model.input_hint_block.") for name in names)
    if not (diffusers or original):
        return None
    # SDXL's UNet (and so its ControlNet) embeds the size and pooled text: add_embedding.
    sdxl = any(name.startswith(("add_embedding.", "control_model.label_emb.")) for name in names)
    return Detected(
        "controlnet",
        "sdxl" if sdxl else "sd15",
        "ControlNet keys" + (" with SDXL's add_embedding" if sdxl else " without add_embedding"),
    )


# ---------------------------------------------------------------- the index


@dataclass(frozen=True)
class Lineage:
    """Where a promoted LoRA came from: its training in a ledger."""

    training_id: str
    spec_sha256: str
    dataset_sha256: str
    ledger: str
    output_dir: str


@dataclass(frozen=True)
class LibraryEntry:
    name: str
    sha256: str
    kind: str
    family: str | None
    bytes: int
    file: str  # relative to the library folder
    source: str  # the path it was added from
    added_at: str
    addnet_sha256: str | None = None  # LoRAs: A1111's hash of the tensor data
    config: str | None = None  # single-file checkpoints: the config folder, relative
    config_sha256: str | None = None
    lineage: Lineage | None = None

    @property
    def short_hash(self) -> str:
        return short_hash(self.sha256)

    @property
    def addnet_short_hash(self) -> str | None:
        return self.addnet_sha256[:LORA_SHORT_HASH] if self.addnet_sha256 else None

    def as_json(self) -> JsonObject:
        return {
            **asdict(self),
            "short_hash": self.short_hash,
            "addnet_short_hash": self.addnet_short_hash,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> LibraryEntry:
        lineage = data.get("lineage")
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["lineage"] = Lineage(**lineage) if isinstance(lineage, dict) else None
        return cls(**fields)  # type: ignore[arg-type]  # the index's own JSON


@dataclass(frozen=True)
class Addition:
    """A file ready to enter the library: its entry, and the temp copies (file, config) that
    become ``entry.file`` and ``entry.config`` when the index takes it."""

    entry: LibraryEntry
    staged_file: Path
    staged_config: Path | None = None


@dataclass
class ModelLibrary:
    root: Path = field(default_factory=library_folder)

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_NAME

    def entries(self) -> list[LibraryEntry]:
        """Every entry, by name."""
        return sorted(self._read().values(), key=lambda entry: entry.name)

    def with_sha256(self, sha256: str) -> LibraryEntry | None:
        return self._read().get(sha256)

    def named(self, name: str) -> LibraryEntry | None:
        return next((entry for entry in self._read().values() if entry.name == name), None)

    def with_prefix(self, prefix: str) -> list[LibraryEntry]:
        """Entries whose sha256 (so also its short hash) or LoRA addnet hash starts so."""
        return [
            entry
            for entry in self.entries()
            if entry.sha256.startswith(prefix) or (entry.addnet_sha256 or "").startswith(prefix)
        ]

    def path_of(self, entry: LibraryEntry) -> Path:
        return self.root / entry.file

    def contents(self) -> dict[str, Path]:
        """Every file and config folder the library holds, by sha256 (the config folder's
        is its folder hash): where reproduce finds what a spec names by content."""
        found: dict[str, Path] = {}
        for entry in self._read().values():
            found[entry.sha256] = self.path_of(entry)
            if entry.config and entry.config_sha256:
                found[entry.config_sha256] = self.root / entry.config
        return found

    def config_at(self, file: Path) -> Path | None:
        """The config folder stored with the library file at ``file``, if it is one."""
        for entry in self._read().values():
            if entry.config and self.path_of(entry) == file:
                return self.root / entry.config
        return None

    def stage(self, source: Path, entry: LibraryEntry, config: Path | None) -> Addition:
        """Copy ``source`` (and the config folder) into temp names inside the library, so
        ``commit`` only renames."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.root)
        os.close(fd)
        staged = Path(name)
        staged_config = None if config is None else self.root / CONFIGS / f"{staged.name}"
        addition = Addition(entry, staged, staged_config)
        try:
            shutil.copyfile(source, staged)
            os.chmod(staged, FILE_MODE)  # a library file is as shared as any other file
            with open(staged, "rb+") as handle:
                os.fsync(handle.fileno())
            if config is not None and staged_config is not None:
                shutil.copytree(config, staged_config, ignore=shutil.ignore_patterns(".*"))
        except BaseException:
            self.discard([addition])
            raise
        return addition

    def commit(self, additions: Sequence[Addition]) -> None:
        """Rename the staged copies into place and record them, all under the lock; a name
        taken meanwhile by other bytes refuses them all."""
        with self._locked():
            known = self._read()
            for addition in additions:
                entry = addition.entry
                holder = next((e for e in known.values() if e.name == entry.name), None)
                if holder is not None and holder.sha256 != entry.sha256:
                    raise name_taken(entry.name, holder, self.index_path)
            for addition in additions:
                entry = addition.entry
                if entry.sha256 in known:
                    continue
                os.replace(addition.staged_file, self.path_of(entry))
                if addition.staged_config is not None and entry.config is not None:
                    target = self.root / entry.config
                    if target.exists():  # the same folder, stored for another checkpoint
                        shutil.rmtree(addition.staged_config)
                    else:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(addition.staged_config, target)
                known[entry.sha256] = entry
            fsync_folder(self.root)
            self._write(known)

    def record_lineage(self, sha256: str, lineage: Lineage) -> None:
        """Give the entry of ``sha256`` (added before its training was promoted) its lineage."""
        with self._locked():
            known = self._read()
            known[sha256] = replace(known[sha256], lineage=lineage)
            self._write(known)

    def discard(self, additions: Sequence[Addition]) -> None:
        """Remove staged copies ``commit`` did not take."""
        for addition in additions:
            addition.staged_file.unlink(missing_ok=True)
            if addition.staged_config is not None and addition.staged_config.exists():
                shutil.rmtree(addition.staged_config)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_NAME, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # dropped by the kernel if this process dies
            yield

    def _read(self) -> dict[str, LibraryEntry]:
        try:
            text = self.index_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as err:
            raise self._broken(f"it cannot be read ({err})") from None
        try:
            data = json.loads(text)
            if data.get("format") != INDEX_FORMAT:
                raise self._broken(
                    f"format {data.get('format')!r}, this version reads {INDEX_FORMAT}"
                )
            return {
                sha256: replace(LibraryEntry.from_json(entry), sha256=sha256)
                for sha256, entry in data["models"].items()
            }
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise self._broken(f"it is not a model library index ({err})") from None

    def _write(self, entries: dict[str, LibraryEntry]) -> None:
        models = {sha256: asdict(entry) for sha256, entry in sorted(entries.items())}
        text = json.dumps({"format": INDEX_FORMAT, "models": models}, indent=2, sort_keys=True)
        write_text_atomic(self.index_path, text + "\n")

    def _broken(self, problem: str) -> InputError:
        return InputError(
            "the model library's index cannot be used",
            file=self.index_path,
            expected=f"a JSON index of format {INDEX_FORMAT} written by `campaign models add`",
            found=problem,
            fix=f"restore {self.index_path} from a backup, or point $CAMPAIGN_MODELS at "
            "another library",
        )


def name_taken(name: str, holder: LibraryEntry, index: Path) -> InputError:
    return InputError(
        f"the name {name!r} is taken in the model library",
        file=index,
        expected="a name no other file in the library has",
        found=f"{name} is {holder.short_hash} ({holder.kind}), added from {holder.source}",
        fix="give this file another name with --name NAME",
    )


def check_name(name: str) -> str:
    """``name`` when recipes can say it (``model: NAME``), else an InputError."""
    if not re.match(NAME_PATTERN, name):
        raise InputError(
            f"{name!r} cannot be a model library name",
            expected="letters, digits, '_', '.' and '-', starting with a letter or digit",
            found=repr(name),
            fix="give the file a name with --name NAME",
        )
    return name
