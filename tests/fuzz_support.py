"""The fuzz harness behind tests/test_fuzz_inputs.py: a tiny copy of the demo project, the
mutations the fuzzer applies to it, and the check of one mutated case through the real
``campaign`` console script.

A case is plain data (a list of mutations), so a failing one is kept as a small YAML file in
tests/fuzz_corpus/ and replayed exactly. Each mutation names the file it edits (``recipe``,
``campaign``, ``brand``, ``training``) and one of:

    op: set        path: [key, ...]  value: V      replace (or create) the value at path
    op: delete     path: [key, ...]                remove the key (or list item)
    op: pin        path: [key, ...]  special: S    the file reference at path (path, sha256)
                                                   pointed at ``PINNED_FILES[S]``, pinned
    op: raw        path: [key, ...]  text: T       the value at path written as raw YAML text
                                                   (``.NaN``, ``!!binary ...``, ``2001-12-14``)
    op: append     text: T                         text appended to the file
    op: truncate   keep: F                         the file cut to a fraction F of its bytes

A value may be ``{$path: NAME}``: a special file made in the case's folder (``SPECIAL_PATHS``:
a FIFO, a symlink loop, a folder, a 300-character name, /dev/zero, ...). The names of
``SPECIAL_PATHS`` and ``PINNED_FILES`` are part of the corpus's format: add, never rename.

The check (``run_case``): ``campaign validate`` on the edited file (and on the campaign
when a recipe or brand kit was edited, as it reads them), then, when that exits 0,
``campaign render`` of the campaign (or ``campaign train`` of an edited training spec).
It fails on: a validate exit other than 0 or 2; an exit 2 that took over 1 s of CPU or whose
message has no ``error: FILE:LINE:``; a traceback or a raw Python exception
(``error: SomeError: ...``, the CLI's message for a bug) in any output; a command still
running at its timeout (a hang); and a render or train exiting other than 0 or 1 after
validate said 0.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from renderer.core.hashing import sha256_path

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models" / "demo"
KESTREL = REPO / "campaigns" / "brands" / "kestrel"
CAMPAIGN_BIN = Path(sys.executable).parent / "campaign"
CORPUS = REPO / "tests" / "fuzz_corpus"

ROLES = ("recipe", "campaign", "brand", "training")
# Where each file of the project lies under the case's folder.
LAYOUT = {
    "recipe": "recipes/demo-sd15.yaml",
    "campaign": "campaigns/fuzz.yaml",
    "brand": "brand/brand.yaml",
    "training": "recipes/fuzz-style.train.yaml",
}

# An exit 2 must come within this much CPU time (the whole `campaign validate` process: its
# start, without torch, is about 0.05 s of it). CPU time, not wall time: it counts the work
# a refusal does (walking `/` took seconds of it) and not how loaded the machine is, so the
# check holds with the suite running a process per core.
EXIT2_SECONDS = 1.0
# A validate still running after this is a hang (a FIFO read blocks forever).
VALIDATE_TIMEOUT = float(os.environ.get("FUZZ_VALIDATE_TIMEOUT", "10"))
# A render or training of the 1-2 variant project takes about 8 s (torch's imports and
# the single-file load are most of it); one still running after this is a hang.
RENDER_TIMEOUT = float(os.environ.get("FUZZ_RENDER_TIMEOUT", "120"))
# What one fuzzed command may take of the shared machine: a file of /dev/zero read into
# memory or a 8192x8192 render fails in the child instead of swapping out everyone else.
VALIDATE_MEMORY = 4 << 30
RENDER_MEMORY = 10 << 30
WRITE_LIMIT = 1 << 30

# What the CLI prints for an exception it did not expect (renderer/cli/main.py, main): a bug.
RAW_EXCEPTION = re.compile(
    r"^error: [A-Za-z_][\w.]*(Error|Exception|Warning|Interrupt|Exit)"
    r"\b[^:]*: |CAMPAIGN_DEBUG",
    re.MULTILINE,
)
# A render or training that finished an image or a step: a timeout then is slowness.
PROGRESS = re.compile(r"render \[[^\]]*\] [1-9]\d*/|^step [1-9]\d*/", re.MULTILINE)
LOCATED = re.compile(r"^error: .+?:\d+: ", re.MULTILINE)


# ---------------------------------------------------------------- the base project


def base_documents() -> dict[str, dict]:
    """The demo recipe, campaign, brand kit and training spec, cut down to what renders in
    seconds: the campaign is 1 product x 1 background x 2 aspects (1:1, 9:16) x 1 seed at a
    64 px short side with the demo's retouch, headline and exports; the training spec trains
    2 steps on 2 images and samples 1 image of 1 step. Model paths are absolute (the demo
    models); the brand kit's and the dataset's files are copied beside them (relative)."""
    recipe = yaml.safe_load((REPO / "recipes" / "demo-sd15.yaml").read_text())
    for ref in [recipe["checkpoint"], *recipe["loras"]]:
        ref["path"] = str((REPO / "recipes" / ref["path"]).resolve())
    recipe["checkpoint"]["config"] = str(
        (REPO / "recipes" / recipe["checkpoint"]["config"]).resolve()
    )
    recipe["steps"] = 4

    campaign = yaml.safe_load((REPO / "campaigns" / "demo.yaml").read_text())
    campaign["name"] = "fuzz"
    campaign["brand"] = "../brand/brand.yaml"
    campaign["scoring"]["clip_model"] = str(MODELS / "clip")
    campaign["scoring"]["batch_size"] = 2
    axes = campaign["matrix"]["axes"]
    axes.update(
        product=axes["product"][:1], background=["studio"], aspect=["1:1", "9:16"], seed=[1]
    )
    exports = campaign["postprocess"]["exports"]
    exports.pop("16:9")
    campaign["render"] = {"batch_size": 1}

    brand = yaml.safe_load((KESTREL / "brand.yaml").read_text())

    training = yaml.safe_load((REPO / "recipes" / "kestrel-style.train.yaml").read_text())
    training["name"] = "fuzz-style"
    training["base"] = f"{recipe['name']}@{recipe['version']}"
    images = training["dataset"]["images"]
    training["dataset"]["images"] = [
        {**images[0], "path": "../brand/reference-1.png"},
        {**images[5], "path": "../brand/training/dusk-small.png"},
    ]
    training["lora"]["rank"] = 2
    training["train"].update(steps=2, warmup_steps=0, batch_size=1, save_every=0)
    training["samples"].update(seeds=[1], steps=1)
    return {"recipe": recipe, "campaign": campaign, "brand": brand, "training": training}


_BASE: dict[str, dict] | None = None


def base() -> dict[str, dict]:
    global _BASE
    if _BASE is None:
        _BASE = base_documents()
    return copy.deepcopy(_BASE)


def write_project(root: Path, documents: dict[str, dict]) -> dict[str, Path]:
    """The project under ``root``; the path of each role's file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "brand").mkdir(exist_ok=True)
    for source in [*KESTREL.glob("*.png"), *KESTREL.glob("*.txt")]:
        shutil.copy(source, root / "brand" / source.name)
    shutil.copytree(KESTREL / "training", root / "brand" / "training", dirs_exist_ok=True)
    paths = {}
    for role in ROLES:
        path = root / LAYOUT[role]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(documents[role]))
        paths[role] = path
    return paths


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


# ---------------------------------------------------------------- special paths


def _fifo(folder: Path) -> Path:
    path = folder / "fifo.png"
    os.mkfifo(path)
    return path


def _loop(folder: Path) -> Path:
    (folder / "loop-a.png").symlink_to(folder / "loop-b.png")
    (folder / "loop-b.png").symlink_to(folder / "loop-a.png")
    return folder / "loop-a.png"


def _dangling(folder: Path) -> Path:
    (folder / "dangling.safetensors").symlink_to(folder / "nowhere.safetensors")
    return folder / "dangling.safetensors"


def _symlink_to_logo(folder: Path) -> Path:
    (folder / "link-logo.png").symlink_to(KESTREL / "logo.png")
    return folder / "link-logo.png"


def _folder(folder: Path) -> Path:
    (folder / "a-folder.png").mkdir()
    return folder / "a-folder.png"


def _empty(folder: Path) -> Path:
    (folder / "empty.png").write_bytes(b"")
    return folder / "empty.png"


def _text(folder: Path) -> Path:
    (folder / "text.safetensors").write_text("not weights\n" * 10)
    return folder / "text.safetensors"


def _sparse(folder: Path) -> Path:
    """A 64 MiB file of zeros (sparse: costs no disk) named like weights."""
    path = folder / "sparse.safetensors"
    with open(path, "wb") as handle:
        handle.truncate(64 << 20)
    return path


def _odd_name(folder: Path) -> Path:
    """A copy of the logo under a name with a newline, an escape and U+202E."""
    path = folder / "lo\ngo\x1b[31m\u202egnp.png"
    shutil.copy(KESTREL / "logo.png", path)
    return path


def _unreadable(folder: Path) -> Path:
    path = folder / "unreadable.png"
    shutil.copy(KESTREL / "logo.png", path)
    path.chmod(0)
    return path


SPECIAL_PATHS = {
    "missing": lambda folder: folder / "missing.png",
    "fifo": _fifo,
    "symlink_loop": _loop,
    "dangling_symlink": _dangling,
    "symlink_to_logo": _symlink_to_logo,
    "folder": _folder,
    "empty_file": _empty,
    "text_file": _text,
    "sparse_64mib": _sparse,
    "long_name": lambda folder: folder / ("n" * 300 + ".png"),
    "long_path": lambda folder: folder.joinpath(*["d" * 200] * 25, "x.png"),
    "odd_name": _odd_name,
    "unreadable": _unreadable,
    "dev_zero": lambda folder: Path("/dev/zero"),
    "dev_null": lambda folder: Path("/dev/null"),
    "dev_urandom": lambda folder: Path("/dev/urandom"),
    "proc_file": lambda folder: Path("/proc/self/status"),
    "root": lambda folder: Path("/"),
    "escape": lambda folder: Path("../../../../../../../../etc/passwd"),
    "relative_dot": lambda folder: Path("."),
}


def _image(name: str, make) -> Any:
    def build(folder: Path) -> Path:
        from PIL import Image

        path = folder / name
        image = make(Image)
        frames = image if isinstance(image, list) else [image]
        options = {"save_all": True, "append_images": frames[1:]} if len(frames) > 1 else {}
        frames[0].save(path, **options)
        return path

    return build


def _bomb_header(folder: Path) -> Path:
    """A PNG whose header says 100000 x 100000 and whose data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    path = folder / "bomb.png"
    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def _renamed(name: str, source: Path):
    def build(folder: Path) -> Path:
        shutil.copy(source, folder / name)
        return folder / name

    return build


# Files a pinned reference ({path, sha256}) is pointed at by ``op: pin``, pinned to their
# true sha256 (so only what the file is can be wrong): images of odd shapes and modes, and
# the demo models in each other's places.
PINNED_FILES = {
    "image_1x1": _image("one.png", lambda Image: Image.new("RGB", (1, 1), "red")),
    "image_1x4000": _image("thin.png", lambda Image: Image.new("RGB", (1, 4000), "red")),
    "image_4000x3": _image("wide.png", lambda Image: Image.new("RGB", (4000, 3), "red")),
    "image_16bit": _image("deep.png", lambda Image: Image.new("I;16", (64, 64), 40000)),
    "image_rgba_clear": _image("clear.png", lambda Image: Image.new("RGBA", (64, 64))),
    "image_palette": _image("palette.png", lambda Image: Image.new("P", (64, 64), 3)),
    "image_1bit": _image("bits.png", lambda Image: Image.new("1", (64, 64), 1)),
    "image_cmyk_jpeg": _image("cmyk.jpg", lambda Image: Image.new("CMYK", (64, 64), "red")),
    "image_animated_gif": _image(
        "anim.gif",
        lambda Image: [Image.new("RGB", (64, 64), colour) for colour in ("red", "blue", "green")],
    ),
    "image_float": _image("float.tif", lambda Image: Image.new("F", (64, 64), 1e30)),
    "image_bomb_header": _bomb_header,
    "image_png_named_jpg": _renamed("png.jpg", KESTREL / "logo.png"),
    "image_no_suffix": _renamed("logo", KESTREL / "logo.png"),
    "image_odd_name": _odd_name,
    "image_symlink": _symlink_to_logo,
    "model_sd15_folder": lambda folder: MODELS / "sd15",
    "model_sd15_file": lambda folder: MODELS / "sd15.safetensors",
    "model_sdxl_file": lambda folder: MODELS / "sdxl.safetensors",
    "model_inpaint_folder": lambda folder: MODELS / "sd15-inpaint",
    "model_controlnet_folder": lambda folder: MODELS / "controlnet-sd15",
    "model_clip_folder": lambda folder: MODELS / "clip",
    "model_flux_folder": lambda folder: MODELS / "flux",
    "lora_sdxl": lambda folder: MODELS / "lora-sdxl.safetensors",
    "lora_flux": lambda folder: MODELS / "lora-flux.safetensors",
    "upscaler_x4": lambda folder: MODELS / "upscaler-x4.safetensors",
    "sparse_64mib": _sparse,
    "empty_file": _empty,
    "text_file": _text,
    "fifo": _fifo,
    "dev_zero": lambda folder: Path("/dev/zero"),
    "folder": _folder,
}


def _pinned(name: str, folder: Path, made: dict[str, Path]) -> tuple[str, str]:
    """The path of pinned file ``name`` and its sha256 (zeros for what cannot be read
    through: a FIFO, a device)."""
    key = f"pinned:{name}"
    if key not in made:
        folder = folder / "pinned"  # apart from SPECIAL_PATHS' files, some of the same name
        folder.mkdir(parents=True, exist_ok=True)
        made[key] = PINNED_FILES[name](folder)
    path = made[key]
    mode = path.stat().st_mode
    regular = stat.S_ISREG(mode) or stat.S_ISDIR(mode)
    return str(path), sha256_path(path) if regular else "0" * 64


def _resolve_specials(value: Any, folder: Path, made: dict[str, Path]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$path"}:
            name = value["$path"]
            if name not in made:
                folder.mkdir(parents=True, exist_ok=True)
                made[name] = SPECIAL_PATHS[name](folder)
            return str(made[name])
        return {key: _resolve_specials(item, folder, made) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_specials(item, folder, made) for item in value]
    return value


# ---------------------------------------------------------------- mutations


RAW_MARK = "__FUZZ_RAW_VALUE__"


def _parent(data: Any, path: list) -> tuple[Any, Any] | None:
    """The container holding path's last key, and that key, creating mappings on the way
    (None when the path runs through something that is not a mapping or list)."""
    node = data
    for key in path[:-1]:
        if isinstance(node, dict):
            if not isinstance(node.get(key), dict | list):
                node[key] = {}
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node):
            node = node[key]
        else:
            return None
    return node, path[-1]


def _assign(data: Any, path: list, value: Any) -> Any:
    if not path:
        return value
    found = _parent(data, path)
    if found is None:
        return data
    node, key = found
    if isinstance(node, dict):
        node[key] = value
    elif isinstance(node, list) and isinstance(key, int):
        if -len(node) <= key < len(node):
            node[key] = value
        else:
            node.append(value)
    return data


def _delete(data: Any, path: list) -> Any:
    if not path:
        return {}
    found = _parent(data, path)
    if found is None:
        return data
    node, key = found
    if isinstance(node, dict):
        node.pop(key, None)
    elif isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node):
        del node[key]
    return data


def apply_case(root: Path, mutations: list[dict]) -> dict[str, Path]:
    """Write the base project under ``root`` with ``mutations`` applied."""
    documents = base()
    special = root / "special"
    made: dict[str, Path] = {}
    raw: dict[str, list[str]] = {role: [] for role in ROLES}
    edits: dict[str, list[dict]] = {role: [] for role in ROLES}
    for mutation in mutations:
        role, op = mutation["file"], mutation["op"]
        path = list(mutation.get("path", []))
        if op == "set":
            value = _resolve_specials(copy.deepcopy(mutation["value"]), special, made)
            documents[role] = _assign(documents[role], path, value)
        elif op == "delete":
            documents[role] = _delete(documents[role], path)
        elif op == "pin":
            file, sha256 = _pinned(mutation["special"], special, made)
            documents[role] = _assign(documents[role], [*path, "path"], file)
            documents[role] = _assign(documents[role], [*path, "sha256"], sha256)
        elif op == "raw":
            documents[role] = _assign(documents[role], path, f"{RAW_MARK}{len(raw[role])}")
            raw[role].append(mutation["text"])
        else:
            edits[role].append(mutation)
    paths = write_project(root, documents)
    for role, path in paths.items():
        if not raw[role] and not edits[role]:
            continue
        data = path.read_bytes()
        for index, text in enumerate(raw[role]):
            data = data.replace(
                f"{RAW_MARK}{index}".encode(), text.encode("utf-8", "surrogateescape")
            )
        for mutation in edits[role]:
            if mutation["op"] == "append":
                data += mutation["text"].encode("utf-8", "surrogateescape")
            elif mutation["op"] == "truncate":
                data = data[: int(len(data) * float(mutation["keep"]))]
        path.write_bytes(data)
    return paths


def describe(mutation: dict) -> str:
    where = "".join(
        f"[{key}]" if isinstance(key, int) else f".{key}" for key in mutation.get("path", [])
    )
    what = {
        "set": lambda: f"= {mutation['value']!r}",
        "delete": lambda: "deleted",
        "raw": lambda: f"= raw {mutation['text']!r}",
        "pin": lambda: f"= pinned file {mutation['special']}",
        "append": lambda: f"+= {mutation['text']!r}",
        "truncate": lambda: f"cut to {mutation['keep']:.0%}",
    }[mutation["op"]]()
    text = f"{mutation['file']}{where} {what}"
    return text if len(text) <= 200 else text[:197] + "..."


# ---------------------------------------------------------------- running a case


@dataclass
class Command:
    args: list[str]
    code: int | None  # None: still running at the timeout (killed)
    seconds: float
    cpu_seconds: float  # user + system time of the process (and any it waited for)
    stdout: str
    stderr: str

    def show(self, root: Path) -> str:
        args = " ".join(arg.replace(str(root), "$CASE") for arg in self.args)
        code = "TIMEOUT" if self.code is None else self.code
        tail = (self.stderr.strip() or self.stdout.strip()).replace(str(root), "$CASE")
        tail = tail if len(tail) <= 1500 else "..." + tail[-1500:]
        timing = f"{self.seconds:.2f} s ({self.cpu_seconds:.2f} s of CPU)"
        return f"$ campaign {args}\n  exit {code} in {timing}\n  " + tail.replace("\n", "\n  ")


@dataclass
class Outcome:
    mutations: list[dict]
    root: Path
    commands: list[Command] = field(default_factory=list)
    failure: str | None = None  # what broke the contract (None: it held)
    kind: str | None = None  # a short name for the failure, for grouping
    stage: str = "validate"  # the last stage run: validate | render | train
    rendered: bool = False
    note: str | None = None  # why it stopped short of a finished render, if it did

    @property
    def validate_code(self) -> int | None:
        return self.commands[0].code if self.commands else None

    def report(self) -> str:
        lines = [f"FAIL [{self.kind}] {self.failure}"]
        lines += [f"  mutation: {describe(m)}" for m in self.mutations]
        lines += ["  " + c.show(self.root).replace("\n", "\n  ") for c in self.commands]
        return "\n".join(lines)


def campaign(args: list[str], *, cwd: Path, timeout: float, memory: int) -> Command:
    """``campaign ARGS`` as its own process group (a timeout kills all of it), under
    ``prlimit`` (util-linux, as ``unshare`` for the suite): at most ``memory`` bytes of address
    space and ``WRITE_LIMIT`` bytes a file."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("CAMPAIGN_DEBUG", None)
    limits = ["prlimit", f"--as={memory}", f"--fsize={WRITE_LIMIT}", "--"]
    started = time.monotonic()
    # This process runs one command at a time, so its children's usage grows by this one's.
    used_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(
        [*limits, str(CAMPAIGN_BIN), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
        code = process.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        code = None
    seconds = time.monotonic() - started
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (used.ru_utime - used_before.ru_utime) + (used.ru_stime - used_before.ru_stime)
    return Command(
        args,
        code,
        seconds,
        cpu_seconds,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
    )


def _broken_output(command: Command) -> str | None:
    text = command.stdout + command.stderr
    if "Traceback (most recent call last)" in text:
        return "traceback"
    if match := RAW_EXCEPTION.search(command.stderr):
        return f"raw exception: {match.group(0).strip()}"
    return None


def _check_validate(outcome: Outcome, file: Path, root: Path) -> bool:
    """Validate ``file``; True when it exited 0 (and nothing is wrong so far)."""
    args = ["validate", str(file)]
    command = campaign(args, cwd=root, timeout=VALIDATE_TIMEOUT, memory=VALIDATE_MEMORY)
    outcome.commands.append(command)
    if command.code is None:
        return _fail(
            outcome,
            "validate-hang",
            f"validate still running after {VALIDATE_TIMEOUT:.0f} s (a hang)",
        )
    if broken := _broken_output(command):
        return _fail(
            outcome,
            f"validate-{broken.split(':')[0].replace(' ', '-')}",
            f"validate printed a {broken} (exit {command.code})",
        )
    if command.code not in (0, 2):
        return _fail(
            outcome,
            f"validate-exit-{command.code}",
            f"validate exited {command.code} (the contract: 0 or 2)",
        )
    if command.code == 2:
        if command.cpu_seconds > EXIT2_SECONDS:
            return _fail(
                outcome,
                "validate-slow-2",
                f"validate took {command.cpu_seconds:.2f} s of CPU to exit 2 "
                f"(at most {EXIT2_SECONDS:.0f} s)",
            )
        if not LOCATED.search(command.stderr):
            return _fail(
                outcome,
                "validate-2-unlocated",
                "validate exited 2 without an `error: FILE:LINE:` message",
            )
        return False
    return True


def _fail(outcome: Outcome, kind: str, message: str) -> bool:
    outcome.kind, outcome.failure = kind, message
    return False


def run_case(
    mutations: list[dict], root: Path, *, render: bool = True, max_variants: int = 4
) -> Outcome:
    """Apply ``mutations`` to a fresh project under ``root`` and check the contract.
    ``render=False`` stops after validate (``Outcome.stage`` says where it stopped), as does
    a campaign that validates with more than ``max_variants`` variants (``Outcome.note``)."""
    paths = apply_case(root, mutations)
    outcome = Outcome(mutations, root)
    edited = {m["file"] for m in mutations}
    if "training" in edited:
        files = [paths["training"]]
        if edited - {"training"}:
            files.append(paths["campaign"])
    else:
        files = [paths[role] for role in ("recipe", "brand") if role in edited]
        files.append(paths["campaign"])
    for file in files:
        if not _check_validate(outcome, file, root):
            return outcome
    if not render:
        return outcome
    planned = re.search(r"\((\d+) variants", outcome.commands[-1].stdout)
    if "training" not in edited and planned and int(planned.group(1)) > max_variants:
        outcome.note = f"{planned.group(1)} variants: too many to render in the budget"
        return outcome
    out = root / "out"
    if "training" in edited:
        outcome.stage = "train"
        args = ["train", str(paths["training"]), "--out", str(out)]
    else:
        outcome.stage = "render"
        args = ["render", str(paths["campaign"]), "--out", str(out)]
    command = campaign(args, cwd=root, timeout=RENDER_TIMEOUT, memory=RENDER_MEMORY)
    outcome.commands.append(command)
    outcome.rendered = True
    stage = outcome.stage
    if command.code is None and PROGRESS.search(command.stderr):
        outcome.note = (
            f"{stage} still running after {RENDER_TIMEOUT:.0f} s, making progress "
            "(a valid but slow request)"
        )
    elif command.code is None:
        _fail(
            outcome,
            f"{stage}-hang",
            f"validate exited 0, then {stage} was still "
            f"running after {RENDER_TIMEOUT:.0f} s with no image or step done",
        )
    elif broken := _broken_output(command):
        _fail(
            outcome,
            f"{stage}-{broken.split(':')[0].replace(' ', '-')}",
            f"validate exited 0, then {stage} printed a {broken} (exit {command.code})",
        )
    elif command.code not in (0, 1):
        _fail(
            outcome,
            f"validate-0-{stage}-{command.code}",
            f"validate exited 0, then {stage} exited {command.code} (expected 0 or 1)",
        )
    return outcome


# ---------------------------------------------------------------- the corpus


def signature(outcome: Outcome) -> str:
    """What makes two failures the same finding: the failure, and each mutation's file,
    key path (list positions as *) and kind of value."""
    parts = [outcome.kind or "ok"]
    for mutation in outcome.mutations:
        path = ".".join(
            "*" if isinstance(key, int) else str(key) for key in mutation.get("path", [])
        )
        parts.append(f"{mutation['file']}:{path}:{mutation['op']}:{value_class(mutation)}")
    return "|".join(parts)


def value_class(mutation: dict) -> str:
    if mutation["op"] in ("raw", "append"):
        return mutation["text"][:20]
    if mutation["op"] == "pin":
        return mutation["special"]
    if mutation["op"] != "set":
        return mutation["op"]
    value = mutation["value"]
    if isinstance(value, dict) and set(value) == {"$path"}:
        return value["$path"]
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf"
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return value[:40]  # a template: each one is its own finding
    return type(value).__name__


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.yaml"))


def load_corpus_case(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def save_case(outcome: Outcome, found_by: str) -> Path | None:
    """Keep a failing case in tests/fuzz_corpus/ (once per signature)."""
    sig = signature(outcome)
    for existing in corpus_files():
        if load_corpus_case(existing).get("signature") == sig:
            return None
    CORPUS.mkdir(exist_ok=True)
    digest = hashlib.sha256(
        json.dumps(outcome.mutations, sort_keys=True, default=repr).encode()
    ).hexdigest()[:8]
    first = outcome.mutations[0]
    key = "-".join(str(k) for k in first.get("path", [])[-2:]) or first["op"]
    name = re.sub(r"[^a-z0-9]+", "-", f"{outcome.kind}-{first['file']}-{key}".lower())
    path = CORPUS / f"{name.strip('-')[:80]}-{digest}.yaml"
    last = outcome.commands[-1]
    record = {
        "found_by": found_by,
        "signature": sig,
        "failure": outcome.failure,
        "observed": {
            "command": " ".join(last.args).replace(str(outcome.root), "$CASE"),
            "exit": last.code,
            "seconds": round(last.seconds, 2),
            "output": (last.stderr.strip() or last.stdout.strip()).replace(
                str(outcome.root), "$CASE"
            )[-600:],
        },
        "mutations": outcome.mutations,
    }
    path.write_text(
        "# A case the fuzzer found (tests/test_fuzz_inputs.py); replayed by "
        "test_corpus_case.\n" + dump(record)
    )
    return path
