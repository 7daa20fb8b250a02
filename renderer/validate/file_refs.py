"""The files a YAML document names, resolved against its folder — or, for a model named by
``model: NAME`` or ``sha256`` alone, found in the model library (``renderer.weights.library``):
each exists and is a regular file or folder, passes its probe (``file_probes``) and matches
its pinned sha256; a named recipe or brand kit is loaded, a problem with it as a whole
reported at the naming key.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from renderer.core.errors import BadFileError, HashMismatchError, InputError, MissingFileError
from renderer.core.hashing import hash_file, short_hash
from renderer.load.schema import FileRef, ModelFileRef
from renderer.load.yamlsource import KeyPath, YamlDocument, special_file_problem
from renderer.validate.file_probes import is_regular_file
from renderer.validate.inputs import ResolvedFile
from renderer.weights.library import ModelLibrary

Loaded = TypeVar("Loaded")


def existing_path(document: YamlDocument, path: Path, key_path: KeyPath) -> Path:
    """``path`` resolved: an existing regular file or folder (a FIFO or device would block or
    never end when read)."""
    try:
        resolved = path.resolve()
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        raise document.error(
            MissingFileError,
            "referenced file not found",
            key_path,
            expected="an existing file or folder",
            found=str(path),
            fix="fix the path (relative to this YAML file's folder) or create "
            "the file (demo models: `campaign demo-models`)",
        ) from None
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Path.resolve)
        raise document.error(
            BadFileError,
            "referenced file cannot be read",
            key_path,
            found=f"{path}: {getattr(err, 'strerror', None) or err}",
            fix="fix the path or the link it goes through",
        ) from None
    if problem := special_file_problem(mode):
        raise document.error(
            BadFileError,
            f"referenced file is {problem}",
            key_path,
            expected="a regular file or a folder",
            found=str(resolved),
            fix="point at the file itself",
        )
    return resolved


def resolve_file(
    document: YamlDocument,
    ref: FileRef | ModelFileRef,
    key_path: KeyPath,
    verify_hashes: bool,
    check: Callable[[Path], str | None],
) -> ResolvedFile:
    """The file ``ref`` names: it exists, ``check`` finds nothing wrong with it, and its
    sha256 matches the pin (unless ``verify_hashes`` is off)."""
    if ref.path is None:
        return library_file(document, ref, key_path, verify_hashes, check)
    path = existing_path(document, document.path.parent / ref.path, (*key_path, "path"))
    if problem := check(path):
        raise document.error(
            BadFileError,
            f"{path.name}: {problem}",
            (*key_path, "path"),
            found=str(path),
            fix="replace it with a complete copy (download "
            "or export it again), then pin it with `campaign pin`",
        )
    if ref.sha256 is not None and not verify_hashes:
        return ResolvedFile(path=path, sha256=ref.sha256)
    found = hash_file(path)
    if ref.sha256 is not None and found != ref.sha256:
        raise pin_mismatch(
            document,
            key_path,
            f"sha256 of {path.name} does not match its pin",
            ref.sha256,
            found,
            fix="restore the pinned file, or if the change is intended, update the pin and "
            "bump the recipe version",
        )
    return ResolvedFile(path=path, sha256=found)


def pin_mismatch(
    document: YamlDocument, key_path: KeyPath, message: str, pinned: str, found: str, fix: str
) -> InputError:
    """A file whose sha256 is not its pin's, both shown with their short hashes."""
    return document.error(
        HashMismatchError,
        message,
        (*key_path, "sha256"),
        expected=f"{pinned} (short {short_hash(pinned)})",
        found=f"{found} (short {short_hash(found)})",
        fix=fix,
    )


def library_file(
    document: YamlDocument,
    ref: FileRef | ModelFileRef,
    key_path: KeyPath,
    verify_hashes: bool,
    check: Callable[[Path], str | None],
) -> ResolvedFile:
    """The model library's file that ``ref`` names by ``model`` or by ``sha256`` alone; a
    ``sha256`` beside ``model`` pins it as a path's would."""
    library = ModelLibrary()
    name = getattr(ref, "model", None)
    entry = library.named(name) if name else library.with_sha256(str(ref.sha256))
    if entry is None:
        raise document.error(
            MissingFileError,
            "not in the model library",
            (*key_path, "model" if name else "sha256"),
            expected=f"a model in {library.root} ($CAMPAIGN_MODELS)",
            found=f"model {name}" if name else f"no file with sha256 {ref.sha256}",
            fix="see what it holds with `campaign models list`, or add the file with "
            "`campaign models add FILE`",
        )
    if ref.sha256 is not None and ref.sha256 != entry.sha256:
        raise pin_mismatch(
            document,
            key_path,
            f"the model library's {entry.name} does not match its pin",
            ref.sha256,
            entry.sha256,
            fix="use the library that holds the pinned file ($CAMPAIGN_MODELS), or if the "
            "change is intended, update the pin and bump the recipe version",
        )
    path = library.path_of(entry)
    problem = check(path) if path.is_file() else "it is listed in the index but missing"
    if problem is None and verify_hashes and (found := hash_file(path)) != entry.sha256:
        problem = f"its sha256 is {short_hash(found)}, the index says {entry.short_hash}"
    if problem:
        raise document.error(
            BadFileError,
            f"the model library's {entry.name}: {problem}",
            (*key_path, "model" if name else "sha256"),
            found=str(path),
            fix=f"add the file again: `campaign models add {entry.source}`",
        )
    return ResolvedFile(path=path, sha256=entry.sha256)


def referenced_document(
    document: YamlDocument,
    key_path: KeyPath,
    path: Path,
    load: Callable[..., Loaded],
    verify_hashes: bool,
) -> Loaded:
    """The recipe or brand kit a document names, loaded with ``load``; a problem with the
    file as a whole (too large, empty of keys, a folder) is reported at the key that names
    it."""
    if not is_regular_file(path):
        raise document.error(
            BadFileError,
            "not a YAML file",
            key_path,
            found=str(path),
            fix="name the YAML file itself",
        )
    try:
        return load(path, verify_hashes=verify_hashes)
    except InputError as err:
        if err.line is not None or err.file != str(path):
            raise
        raise document.error(
            type(err),
            f"{path.name}: {err.message}",
            key_path,
            expected=err.expected,
            found=err.found or str(path),
            fix=err.fix,
        ) from None
