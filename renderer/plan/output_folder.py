"""The output folder's one owner: where every file under OUT goes, and whether it may.

Every command that writes under the output folder asks ``OutputFolder`` for the path and
writes through it (README, "The output folder"). It states the layout once:

* a master:          ``CAMPAIGN/RECIPE@VERSION/OUTPUT-NAME.png``
* a channel export:  ``CAMPAIGN/RECIPE@VERSION/exports/CHANNEL/OUTPUT-NAME.EXT``
* a run's report:    ``CAMPAIGN/reports/RUN.html`` (its X/Y grids in ``RUN-grids/``)
* a training:        ``trainings/NAME@VERSION/`` (its feature cache: ``.cache/training/``)
* reproductions:     ``reproduce/`` (the same relative paths), thumbnails: ``.thumbnails/``

and refuses, before anything is written:

* a path a ledger record holds for another variant (``claim``): a new recipe version has
  its own folder, so its files sit beside the old version's, and any other change that
  gives a variant a new id under an old name is refused at plan time, never written over;
* a reserved name used by the wrong writer: the temp prefix in any segment, the ledger and
  its sidecars, the lock, and the top-level folders above, each kept for its one writer;
* a segment over the file system's name limit or a path over its path limit;
* a path through a symbolic link that leaves the output folder, or onto a link.

Files it writes are atomic and get the process's umask (``renderer.core.atomic``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from renderer.core.atomic import TEMP_PREFIX, write_bytes_atomic
from renderer.core.errors import InputError
from renderer.load.yamlsource import YamlDocument

__all__ = [
    "RESERVED",
    "Holder",
    "OutputFolder",
    "PathRefused",
    "PlannedFile",
    "check_planned",
    "export_path",
    "master_path",
    "path_problem",
    "relative_inside",
    "report_path",
    "reproduction_root",
    "shipped_name",
    "split_master_path",
    "variant_folder",
]

LEDGER_FILE = "ledger.sqlite"
LOCK_FILE = ".campaign.lock"
THUMBNAILS = ".thumbnails"
REPRODUCE = "reproduce"
TRAININGS = "trainings"
CACHE = ".cache"  # the trainings' latents and embeddings
REPORTS = "reports"
EXPORTS = "exports"
# Top-level names and the one writer each is kept for (None: never written through here).
RESERVED: Mapping[str, str | None] = {
    LEDGER_FILE: None,
    f"{LEDGER_FILE}-wal": None,
    f"{LEDGER_FILE}-shm": None,
    f"{LEDGER_FILE}-journal": None,
    LOCK_FILE: None,
    THUMBNAILS: "thumbnail",
    REPRODUCE: "reproduction",
    TRAININGS: "training",
    CACHE: "training",
}
WRITERS = ("master", "export", "report", "thumbnail", "reproduction", "training")
NAME_MAX = 255  # bytes in one path segment (ext4, APFS, NTFS)
PATH_MAX = 4096  # bytes in a whole path (Linux)


class PathRefused(InputError):
    """A write the output folder's owner refuses (exit 2, nothing written)."""


def variant_folder(campaign: str, recipe_ref: str) -> str:
    """Where a variant's files go: its campaign's folder, then its recipe version's."""
    return f"{campaign}/{recipe_ref}"


def master_path(folder: str, output_name: str) -> str:
    return f"{folder}/{output_name}.png" if folder else f"{output_name}.png"


def export_path(folder: str, output_name: str, channel: str, extension: str) -> str:
    inside = f"{EXPORTS}/{channel}/{output_name}{extension}"
    return f"{folder}/{inside}" if folder else inside


def split_master_path(path: str, campaign: str, recipe_ref: str) -> tuple[str, str]:
    """A recorded master's (folder, output name); a ledger from before the version folders
    recorded ``CAMPAIGN/OUTPUT-NAME.png``."""
    name = path.removesuffix(".png")
    for folder in (variant_folder(campaign, recipe_ref), campaign):
        if name.startswith(f"{folder}/"):
            return folder, name.removeprefix(f"{folder}/")
    return "", name


def report_path(campaign: str, run_id: str) -> str:
    return f"{campaign}/{REPORTS}/{run_id}.html"


def shipped_name(source_path: str, campaign: str, recipe_ref: str, channel: str) -> str:
    """A master's or export's path inside a delivery: ``CHANNEL/OUTPUT-NAME.EXT`` (the
    layout's folders dropped; a ledger from before the version folders has no recipe's)."""
    inside = source_path.removeprefix(f"{campaign}/").removeprefix(f"{recipe_ref}/")
    return f"{channel}/{inside.removeprefix(f'{EXPORTS}/{channel}/')}"


def relative_inside(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` with links resolved ('.' for the root itself), or None
    when it lies outside: what decides whether a write goes through the owner."""
    real_root, real = Path(os.path.realpath(root)), Path(os.path.realpath(path))
    if real != real_root and real_root not in real.parents:
        return None
    return real.relative_to(real_root).as_posix()


def reproduction_root(out_dir: Path, into: Path | None) -> Path:
    """Where reproductions go (re-renders, re-trainings): ``into``, refused inside the output
    folder (whose files its records hold) except in ``OUT/reproduce/``, the default, which
    holds no record."""
    default = out_dir / REPRODUCE
    if into is None:
        return default
    inside = relative_inside(out_dir, into)
    if inside is not None and inside.split("/")[0] != REPRODUCE:
        raise PathRefused(
            f"--into {into} lies inside the output folder {out_dir}, whose files "
            "the ledger's records hold; a reproduction never writes over them",
            file=into,
            found=str(into),
            fix=f"pass a folder outside {out_dir}, or leave --into out: "
            f"reproductions then go to {default}/",
        )
    return into


@dataclass(frozen=True)
class Holder:
    """The ledger record that holds a path: a render's master or one of its exports."""

    variant_id: str
    render_id: int
    run_id: str
    recipe: str  # NAME@VERSION

    def describe(self) -> str:
        return (
            f"variant {self.variant_id[:12]} (render {self.render_id} of run "
            f"{self.run_id}, recipe {self.recipe})"
        )


def path_problem(relative: str, writer: str) -> str | None:
    """What is wrong with writing ``relative`` (a POSIX path below the output folder) as
    ``writer``, from the name alone; None when nothing is."""
    parts = relative.split("/")
    if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return "it is not a plain relative path (an empty, '.' or '..' segment)"
    if temp := [part for part in parts if part.startswith(TEMP_PREFIX)]:
        return (
            f"the segment {temp[0]!r} starts with {TEMP_PREFIX!r}, the prefix of temp "
            "files that every render deletes as crash debris"
        )
    if parts[0] in RESERVED and RESERVED[parts[0]] != writer:
        owner = RESERVED[parts[0]]
        kept = f"kept for {owner}s" if owner else "kept for the ledger and its lock"
        return f"{parts[0]!r} at the top of the output folder is {kept}"
    if len(relative.encode("utf-8")) >= PATH_MAX:
        return (
            f"it is {len(relative.encode('utf-8'))} bytes; paths on this system take {PATH_MAX - 1}"
        )
    if long := [part for part in parts if len(part.encode("utf-8")) > NAME_MAX]:
        return f"a segment is {len(long[0].encode('utf-8'))} bytes; file systems take {NAME_MAX}"
    return None


class OutputFolder:
    """The output folder, with the ledger's record of which variant holds each path."""

    def __init__(self, root: Path, held: Mapping[str, Holder] | None = None):
        self.root = root
        self._real_root = Path(os.path.realpath(root))
        self._held = {path.lower(): holder for path, holder in (held or {}).items()}

    def holder(self, relative: str) -> Holder | None:
        """The record holding ``relative`` (compared without case: a case-insensitive disk
        holds one file for both spellings)."""
        return self._held.get(relative.lower())

    def check(self, relative: str, writer: str) -> Path:
        """The absolute path for ``relative``, refused (``PathRefused``) when its name is
        reserved or too long, or it leads through a link out of the output folder."""
        if writer not in WRITERS:
            raise ValueError(f"unknown writer {writer!r}")
        if problem := path_problem(relative, writer):
            raise PathRefused(
                f"cannot write {relative!r} in the output folder: {problem}",
                file=self.root,
                found=relative,
                fix="change the output template or campaign name, or pick another path",
            )
        path = self.root / relative
        if len(os.fsencode(self._real_root / relative)) >= PATH_MAX:
            raise PathRefused(
                f"the path is {len(os.fsencode(self._real_root / relative))} bytes; this "
                f"system takes {PATH_MAX - 1}",
                file=self.root,
                found=relative,
                fix="shorten the output template, or render into a folder with a shorter path",
            )
        if escape := self._link_out(path):
            raise PathRefused(
                f"cannot write {relative!r}: {escape}",
                file=self.root,
                found=relative,
                fix="remove the link; the output folder's files stay inside it",
            )
        return path

    def claim(self, relative: str, variant_id: str | None) -> None:
        """Refuse ``relative`` for ``variant_id`` when a record of another variant holds it
        (for ``None``, a file of no variant such as a report: when any record holds it)."""
        holder = self.holder(relative)
        if holder is not None and holder.variant_id != variant_id:
            writer = f"variant {variant_id[:12]}" if variant_id else "this"
            raise PathRefused(
                f"{relative} is held by {holder.describe()}; {writer} would write over it",
                file=self.root,
                found=relative,
                fix="bump the recipe's version (each version has its own folder, so both "
                "stay), or change the output template so the new variant gets its own name",
            )

    def write(self, relative: str, data: bytes, writer: str) -> Path:
        """Write ``data`` atomically at ``relative`` once ``check`` allows it."""
        path = self.check(relative, writer)
        write_bytes_atomic(path, data)
        return path

    def _link_out(self, path: Path) -> str | None:
        """Why writing ``path`` would follow a link out of the folder (or onto a link)."""
        if path.is_symlink():
            return f"{path.name} is a symbolic link"
        current = self.root
        for part in path.relative_to(self.root).parts[:-1]:
            current = current / part
            if current.is_symlink():
                target = Path(os.path.realpath(current))
                if target != self._real_root and self._real_root not in target.parents:
                    return (
                        f"{current.relative_to(self.root)} is a symbolic link to "
                        f"{target}, outside the output folder"
                    )
        return None


@dataclass(frozen=True)
class PlannedFile:
    """A file a plan will write: its path below the output folder, and whose it is."""

    relative: str
    variant_id: str
    writer: str  # master | export
    who: str  # the variant as a person reads it (its axes)


def check_planned(
    files: Iterable[PlannedFile], document: YamlDocument, folder: OutputFolder | None = None
) -> None:
    """Every file of a plan, before anything renders: no reserved or over-long name, no two
    files on one path (a master on another variant's export, two spellings of one name on a
    case-insensitive disk), and, given the folder, no path a record of another variant holds
    nor one through a link out of it. Refusals point at the campaign's ``output`` key."""
    seen: dict[str, PlannedFile] = {}
    for file in files:
        if problem := path_problem(file.relative, file.writer):
            raise document.error(
                PathRefused,
                f"the {file.writer} of {file.who} cannot be written: {problem}",
                ("output",),
                found=file.relative,
                fix="change the output template or the campaign's name",
            )
        other = seen.setdefault(file.relative.lower(), file)
        if other is not file:
            raise document.error(
                PathRefused,
                "two planned files share one path",
                ("output",),
                found=f"the {other.writer} of {other.who} ({other.relative}) and the "
                f"{file.writer} of {file.who} ({file.relative})",
                fix="change the output template so that no output name starts with "
                f"'{EXPORTS}/CHANNEL/' and every variant has its own name",
            )
        if folder is None:
            continue
        try:
            folder.check(file.relative, file.writer)
            folder.claim(file.relative, file.variant_id)
        except PathRefused as err:
            raise document.error(
                PathRefused,
                f"the {file.writer} of {file.who}: {err.message}",
                ("output",),
                found=err.found,
                fix=err.fix,
            ) from None
