"""Fuzz the inputs: hypothesis mutates the demo recipe, campaign, brand kit and training spec
(keys, types, numbers with NaN, infinities and huge values, special paths, hostile
templates, raw YAML) and every case must keep the exit-code contract (README, "exit codes"):
``campaign validate`` exits 2 within 1 s with an ``error: FILE:LINE:`` message, or exits 0
and then ``campaign render`` (``campaign train`` for a training spec) exits 0 or 1. Never a
traceback, a raw Python exception, a hang, or a validate 0 followed by a render 3. The
harness (the tiny project, the mutations, the checks) is tests/fuzz_support.py.

Budget: ``make test`` runs ``FUZZ_EXAMPLES`` (40) cases, derandomized (the same cases every
run), at most ``FUZZ_RENDERS`` (4) of them rendered or trained (a render of the 2-variant
project takes about 9 s; a case past that budget, or one planning more than
``MAX_VARIANTS`` variants, stops after validate and is counted as such). ``make fuzz``
runs 500 cases with 60 renders from a random seed (``FUZZ_SEED`` replays one) and saves
each new failing case in tests/fuzz_corpus/ (``FUZZ_SAVE=1``), which
``test_corpus_case`` replays on every run.

A failing case is recorded, not raised, so one run finds every failure it meets (hypothesis
would stop at the first); cases are not shrunk (one or two mutations of one key each are
small already), but a failing two-mutation case is retried as each mutation alone and kept
as the smaller one when that fails the same way.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from renderer.core.hashing import sha256_path

from .fuzz_support import (
    KESTREL,
    MODELS,
    PINNED_FILES,
    REPO,
    ROLES,
    SPECIAL_PATHS,
    Outcome,
    _pinned,
    _resolve_specials,
    base_documents,
    corpus_files,
    describe,
    load_corpus_case,
    run_case,
    save_case,
    signature,
)

pytestmark = pytest.mark.long

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
RENDERS = int(os.environ.get("FUZZ_RENDERS", "4"))
SAVE = os.environ.get("FUZZ_SAVE") == "1"
SEED = os.environ.get("FUZZ_SEED")  # unset: derandomized (make test); N or random
if SEED == "random":
    SEED = str(random.randrange(2**32))
VERBOSE = os.environ.get("FUZZ_VERBOSE") == "1"  # a line per case
MAX_VARIANTS = 4

BASE = base_documents()
SCHEMAS = {
    role: json.loads((REPO / "schemas" / f"{role}.schema.json").read_text()) for role in ROLES
}
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


# ---------------------------------------------------------------- where to mutate


def existing_paths(data, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a document, containers and leaves, the document itself first."""
    paths = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            paths += existing_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data[:3]):
            paths += existing_paths(value, (*prefix, index))
    return paths


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    options = [
        _resolve(option, root) for option in schema.get("anyOf", []) if option.get("type") != "null"
    ]
    return options[0] if options else schema


def schema_paths(schema: dict, root: dict, prefix: tuple = (), depth: int = 0) -> list[tuple]:
    """Key paths the schema knows (optional sections the demo files leave out included):
    list items as item 0, free-form mappings under a key they allow."""
    schema = _resolve(schema, root)
    if depth > 5:
        return []
    paths = []
    for key, child in schema.get("properties", {}).items():
        paths.append((*prefix, key))
        paths += schema_paths(child, root, (*prefix, key), depth + 1)
    if isinstance(schema.get("additionalProperties"), dict):
        names = schema.get("propertyNames", {}).get("enum", ["default", "1:1"])
        key = names[0]
        paths.append((*prefix, key))
        paths += schema_paths(schema["additionalProperties"], root, (*prefix, key), depth + 1)
    if isinstance(schema.get("items"), dict):
        paths.append((*prefix, 0))
        paths += schema_paths(schema["items"], root, (*prefix, 0), depth + 1)
    return paths


EXISTING = {role: existing_paths(BASE[role]) for role in ROLES}
ADDABLE = {
    role: sorted(
        {path for path in schema_paths(SCHEMAS[role], SCHEMAS[role]) if path not in EXISTING[role]},
        key=str,
    )
    for role in ROLES
}


def schema_at(role: str, path: tuple) -> dict | None:
    """The schema of the value at ``path`` in ``role``'s file (None where it has none)."""
    root = SCHEMAS[role]
    node = _resolve(root, root)
    for key in path:
        if isinstance(key, int):
            node = node.get("items")
        elif key in node.get("properties", {}):
            node = node["properties"][key]
        else:
            node = node.get("additionalProperties")
        if not isinstance(node, dict):
            return None
        node = _resolve(node, root)
    return node


def boundaries(schema: dict | None) -> list:
    """The values at the edges of what the schema allows: its bounds (just inside an
    exclusive one), every enum value, arrays of the item's bounds at the sizes allowed."""
    if not schema:
        return []
    found = []
    integer = schema.get("type") == "integer"
    for bound in ("minimum", "maximum"):
        if bound in schema:
            found.append(schema[bound])
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"]
        found += [low + 1] if integer else [math.nextafter(low, math.inf), low + 1e-6]
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"]
        found += [high - 1] if integer else [math.nextafter(high, -math.inf), high - 1e-6]
    found += schema.get("enum", [])
    items = schema.get("items")
    if schema.get("type") == "array" and isinstance(items, dict):
        for value in boundaries(items)[:4]:
            for size in {schema.get("minItems", 1), schema.get("maxItems", 1)}:
                found.append([value] * size)
    return found


def value_at(data, path: tuple):
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


# Pinned file references ({path, sha256}): where ``op: pin`` points.
FILE_REFS = {
    role: [
        path
        for path in EXISTING[role]
        if isinstance(value_at(BASE[role], path), dict) and "sha256" in value_at(BASE[role], path)
    ]
    for role in ROLES
}


# ---------------------------------------------------------------- what to put there


SPECIAL_NUMBERS = [
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1e308,
    5e-324,
    -0.0,
    0,
    -1,
    1,
    2,
    3,
    7,
    8,
    63,
    64,
    65,
    255,
    256,
    4096,
    8192,
    8193,
    65536,
    2**31,
    2**32,
    2**53 + 1,
    2**63,
    2**64,
    10**20,
    10**400,
    -(2**63),
    0.5,
    1.5,
    0.999999,
    1e-9,
    1.0000001,
    100.0,
    1e6,
]
numbers = st.one_of(
    st.sampled_from(SPECIAL_NUMBERS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
safe_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
STRINGS = [
    "",
    " ",
    "\t",
    "x" * 5000,
    "\u202egnp.exe",
    "\x1b[2J\x1b]0;owned\x07",
    "a\x00b",
    "\ufeff",
    "..",
    "../..",
    "/",
    "~",
    "CON",
    "nul",
    "a/b",
    "a\\b",
    "%s%n%x",
    "${HOME}",
    "$(touch /tmp/fuzz-owned)",
    "null",
    "true",
    "1:1",
    "0:0",
    "1:0",
    "99999999:1",
    "-1:1",
    "16:9",
    "9:16",
    "#GGGGGG",
    "#fff",
    "#F26B1D",
    "demo-sd15@1",
    "demo-sd15@0",
    "demo-sd15@99999999999999999999",
    "@",
    "x@y@z",
    "default",
    "auto",
    "cpu",
    "cuda:99",
    "latent",
    "model",
    "faces",
    "mask",
    "product",
    "euler",
    "NaN",
    "inf",
    "1e999",
]
strings = st.one_of(st.sampled_from(STRINGS), safe_text)
TEMPLATES = [
    "{{ product.name }}",
    "{{ nope }}",
    "{{ product.nope.deeper }}",
    "{{ 1/0 }}",
    "{{ 9**9**9 }}",
    "{{ 10**10**10 }}",
    "{{ 'x' * 100000000 }}",
    "{{ [1] * 100000000 }}",
    "{% for i in range(100000000) %}x{% endfor %}",
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self.__init__ }}",
    "{{ lipsum(1000000) }}",
    "{{ range(10**10) | list }}",
    "{{ product | tojson }}",
    "{{",
    "{% if %}",
    "{{ product.name | nosuchfilter }}",
    "{% include 'x' %}",
    "{% extends '/etc/passwd' %}",
    "{% import 'x' as y %}",
    "{{ product.name * 10**9 }}",
    "{{ '%s' % product }}",
    "{{ product.name.format }}",
    "{{ range(1, 2, 0) }}",
    "{{ product.name | truncate(-1) }}",
    "{{ product.name | wordwrap(0) }}",
    "{{ product.name | indent(10**9) }}",
    "{{ product.name | center(10**9) }}",
    "{{ {}.__class__ }}",
    "{{ namespace() }}",
    "{{ '\u202e' }}{{ seed }}",
    "{{ aspect }}",
    "{{ brand.name }}",
    "{{ product.sku }}/../../escape",
    "/{{ seed }}",
    "{{ '' }}",
    "{{ 'a' * 300 }}",
    "{{ product.sku }}/{{ seed }}",
    "{{ seed }}\n{{ seed }}",
    "{{ trigger }}, {{ text }}",
    "{{ text }}{{ name }}{{ index }}",
    "{# #}",
    "{% raw %}{{",
    "{{ product.name | replace('', 'xx') * 1000 }}",
    "{{ 'x' | list | join * 2**40 }}",
    # filters given arguments they refuse (each raised its own exception type once)
    "{{ product.name | truncate(1) }}",
    "{{ product.name | truncate(5, leeway=-1) }}",
    "{{ product.name | dictsort }}",
    "{{ product | dictsort(by='x') }}",
    "{{ product.name | map('nosuchfilter') | list }}",
    "{{ product.name | select('nosuch') | list }}",
    "{{ '1e999' | float | int }}",
    "{{ product.name[::0] }}",
    "{{ 1 // 0 }}",
    "{{ 1 % 0 }}",
    "{{ product.name | int(base=99) }}",
    "{{ [1, 'a'] | sort }}",
    "{{ product | tojson(indent='x') }}",
    "{{ lipsum(n=1, min=0) }}",
    "{{ product.name | batch(0) | list }}",
    "{{ (1e308 * 10) | int }}",
]
templates = st.sampled_from(TEMPLATES)
special_paths = st.sampled_from(sorted(SPECIAL_PATHS)).map(lambda name: {"$path": name})
scalars = st.one_of(numbers, strings, st.sampled_from([None, True, False]))
wrong_types = st.one_of(
    st.sampled_from(
        [
            None,
            [],
            {},
            [[[[[]]]]],
            {"a": {"b": {}}},
            [None],
            True,
            "1",
            1.5,
            {"path": "x"},
            [1, 2, 3],
            {"min": math.nan},
        ]
    ),
    st.lists(scalars, max_size=5),
    st.dictionaries(safe_text, scalars, max_size=3),
)
any_value = st.one_of(scalars, wrong_types, templates, special_paths)

PATH_KEYS = {"path", "config", "brand", "clip_model", "folder", "mask", "image", "recipes_dir"}
TEMPLATE_KEYS = {
    "prompt",
    "negative_prompt",
    "output",
    "headline",
    "legal",
    "caption",
    "prompts",
    "mask",
}


def values_for(path: tuple, current, edges: list | None = None) -> st.SearchStrategy:
    """Mostly what the key's kind invites (numbers for a number, special files for a
    path, templates for a template, the schema's edge values), sometimes anything."""
    name = next((key for key in reversed(path) if isinstance(key, str)), "")
    fitting = [st.sampled_from(edges)] * 2 if edges else []
    if name in PATH_KEYS or (isinstance(current, str) and "/" in current):
        fitting.append(special_paths)
    if name in TEMPLATE_KEYS or (isinstance(current, str) and "{{" in current):
        fitting.append(templates)
    if isinstance(current, bool):
        fitting.append(st.sampled_from([None, 0, 1, "yes", "false", []]))
    elif isinstance(current, int | float) or name in {"steps", "size", "seed", "weight"}:
        fitting.append(numbers)
    if isinstance(current, list):
        fitting.append(st.lists(st.one_of(numbers, strings), max_size=4))
    if isinstance(current, str):
        fitting.append(strings)
    if not fitting:
        return any_value
    return st.one_of(st.one_of(*fitting), st.one_of(*fitting), any_value)


RAW_VALUES = [
    ".NaN",
    ".nan",
    "-.inf",
    ".Inf",
    "1.0e999",
    "-1.0e999",
    "!!float nan",
    "!!float '1e999'",
    "0x7fffffffffffffffffffffff",
    "1_000_000",
    "0o777",
    "0b101",
    "~",
    "!!binary aGVsbG8=",
    "!!python/name:os.system",
    "!!python/object/apply:os.system ['touch /tmp/fuzz-owned']",
    "!!set {a, b}",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "12:30:45",
    "yes",
    "off",
    "=",
    "<<",
    "&a [*a]",
    "!!str",
    "!!int '12'",
    "!!omap [a: 1]",
    "!custom 3",
    "[[[[[[",
    "'unterminated",
    "{a: 1, a: 2}",
    "|\n  block\n  text",
    ">-\n  folded",
    '"\\x00"',
    '"\\ud800"',
]
APPEND_TEXTS = [
    "\nname: duplicated\n",
    "\n\t- tabbed\n",
    "\n---\nsecond: document\n",
    "\n...\n",
    "\nx: &a [*a, *a]\n",
    "\n" + "[" * 10000 + "]" * 10000 + "\n",
    "\n\x00\n",
    "\n\udcff\n",
    "\n" + "k: v\n" * 20000,
    "\n? complex\n: key\n",
    "\nunknown_key: 1\n",
    "\n" + "#" * 100000,
    "\nb: &b ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\nc: &c [*b,*b,*b,*b,*b,"
    "*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
]


# Keys naming a file or folder, and keys whose schema has edges: the mutations that found
# most failures get their own share of the cases.
PATH_SLOTS = {
    role: [path for path in EXISTING[role][1:] + ADDABLE[role] if path and path[-1] in PATH_KEYS]
    for role in ROLES
}
EDGE_SLOTS = {
    role: [path for path in EXISTING[role][1:] + ADDABLE[role] if boundaries(schema_at(role, path))]
    for role in ROLES
}


def _font() -> dict | None:
    return {"path": str(DEJAVU), "sha256": sha256_path(DEJAVU)} if DEJAVU.is_file() else None


MANIFEST = json.loads((MODELS / "MANIFEST.json").read_text())


def model(name: str) -> dict:
    """A pinned reference to a demo model (its sha256 from the models' manifest)."""
    return {"path": str(MODELS / name), "sha256": MANIFEST[name]["sha256"]}


# Optional sections the demo files leave out, in a form that validates: set whole, then
# maybe one key inside fuzzed. Image paths are relative to the campaign's folder.
SNIPPETS = {
    "recipe": {
        ("refine", "hires"): {"factor": 2, "upscaler": "latent", "denoise": 0.5, "steps": 2},
        ("refine", "upscale"): {
            "model": model("upscaler-x2.safetensors"),
            "tile": 32,
            "overlap": 4,
        },
        ("refine", "detail"): [{"detect": "faces", "strength": 0.4, "steps": 2}],
        ("img2img",): {"image": "../brand/reference-1.png", "strength": 0.5},
        ("controlnets",): [
            {
                "image": "../brand/reference-1.png",
                "preprocessor": "canny",
                "model": model("controlnet-sd15"),
            }
        ],
        ("ip_adapter",): {"model": model("ip-adapter-sd15"), "scale": 0.5},
    },
    "campaign": {
        ("overrides",): [{"when": {"aspect": "9:16"}, "set": {"steps": 2}}],
        ("matrix", "exclude"): [{"aspect": "9:16"}],
        ("matrix", "seed_axis"): "seed",
        ("report",): {"grid": {"x": "aspect", "y": "seed"}},
        ("render",): {"batch_size": "auto", "vae_tiling": True, "channels_last": True},
    },
    "brand": {("fonts", "headline"): _font()} if _font() else {},
    "training": {
        ("dataset", "folder"): {
            "path": "../brand/training",
            "sha256": sha256_path(KESTREL / "training"),
        },
        ("samples", "size"): [64, 64],
        ("train", "gradient_accumulation"): 2,
        ("lora", "train_text_encoder"): True,
    },
}


@st.composite
def mutations_of(draw, role: str) -> list[dict]:
    """One mutation of ``role``'s file (two when a snippet is set and then fuzzed)."""
    kind = draw(
        st.sampled_from(
            ["set"] * 6
            + ["delete"] * 2
            + ["add"] * 2
            + ["raw"] * 2
            + ["pin"] * 2
            + ["path"] * 2
            + ["edge"] * 2
            + ["snippet"] * 2
            + ["append", "truncate", "unknown", "document"]
        )
    )
    if kind == "document":  # the whole file one value: a list, a number, a string
        return [{"file": role, "op": "set", "path": [], "value": draw(any_value)}]
    if kind == "snippet" and SNIPPETS[role]:
        path = draw(st.sampled_from(sorted(SNIPPETS[role], key=str)))
        first = {"file": role, "op": "set", "path": list(path), "value": SNIPPETS[role][path]}
        inner = existing_paths(SNIPPETS[role][path], path)[1:]
        if not inner or draw(st.booleans()):
            return [first]
        leaf = draw(st.sampled_from(inner))
        value = draw(
            values_for(
                leaf,
                value_at(SNIPPETS[role][path], leaf[len(path) :]),
                boundaries(schema_at(role, leaf)),
            )
        )
        return [first, {"file": role, "op": "set", "path": list(leaf), "value": value}]
    if kind == "path" and PATH_SLOTS[role]:
        path = draw(st.sampled_from(PATH_SLOTS[role]))
        return [{"file": role, "op": "set", "path": list(path), "value": draw(special_paths)}]
    if kind == "edge" and EDGE_SLOTS[role]:
        path = draw(st.sampled_from(EDGE_SLOTS[role]))
        edge = draw(st.sampled_from(boundaries(schema_at(role, path))))
        return [{"file": role, "op": "set", "path": list(path), "value": edge}]
    if kind == "pin" and FILE_REFS[role]:
        path = draw(st.sampled_from(FILE_REFS[role]))
        return [
            {
                "file": role,
                "op": "pin",
                "path": list(path),
                "special": draw(st.sampled_from(sorted(PINNED_FILES))),
            }
        ]
    if kind == "delete":
        path = draw(st.sampled_from(EXISTING[role][1:]))
        return [{"file": role, "op": "delete", "path": list(path)}]
    if kind == "add" and ADDABLE[role]:
        path = draw(st.sampled_from(ADDABLE[role]))
        return [
            {
                "file": role,
                "op": "set",
                "path": list(path),
                "value": draw(values_for(path, None, boundaries(schema_at(role, path)))),
            }
        ]
    if kind == "raw":
        path = draw(st.sampled_from(EXISTING[role][1:]))
        return [
            {
                "file": role,
                "op": "raw",
                "path": list(path),
                "text": draw(st.sampled_from(RAW_VALUES)),
            }
        ]
    if kind == "append":
        return [{"file": role, "op": "append", "text": draw(st.sampled_from(APPEND_TEXTS))}]
    if kind == "truncate":
        keep = draw(st.sampled_from([0.0, 0.1, 0.33, 0.5, 0.9, 0.99]))
        return [{"file": role, "op": "truncate", "keep": keep}]
    if kind == "unknown":
        containers = [p for p in EXISTING[role] if isinstance(value_at(BASE[role], p), dict)]
        path = draw(st.sampled_from(containers))
        name = draw(st.sampled_from(["colour", "stepz", "Name", "", " ", "\u202e", "<<", "1"]))
        return [{"file": role, "op": "set", "path": [*path, name], "value": draw(any_value)}]
    path = draw(st.sampled_from(EXISTING[role][1:]))
    return [
        {
            "file": role,
            "op": "set",
            "path": list(path),
            "value": draw(
                values_for(path, value_at(BASE[role], path), boundaries(schema_at(role, path)))
            ),
        }
    ]


@st.composite
def cases(draw) -> list[dict]:
    role = draw(
        st.sampled_from(["campaign"] * 7 + ["recipe"] * 5 + ["brand"] * 4 + ["training"] * 4)
    )
    mutations = draw(mutations_of(role))
    if len(mutations) == 1 and draw(st.integers(0, 4)) == 4:  # sometimes a second edit
        other = draw(st.sampled_from(ROLES)) if role != "training" else "training"
        mutations += draw(mutations_of(other))
    return mutations


# ---------------------------------------------------------------- the tests


class Fuzzing:
    """One fuzz run's state: cases run, renders left, failures by signature."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.count = 0
        self.renders_left = RENDERS
        self.stats: Counter[str] = Counter()
        self.failures: dict[str, Outcome] = {}
        self.saved: list[Path] = []
        self.seen: set[str] = set()

    def run(self, mutations: list[dict]) -> Outcome:
        self.count += 1
        root = self.folder / f"case-{self.count}"
        outcome = run_case(mutations, root, render=self.renders_left > 0, max_variants=MAX_VARIANTS)
        if outcome.rendered:
            self.renders_left -= 1
        return outcome

    def check(self, mutations: list[dict]) -> None:
        key = json.dumps(mutations, sort_keys=True, default=repr)
        if key in self.seen:  # hypothesis retries near a case it liked: run each once
            self.stats["duplicate of an earlier case (not run again)"] += 1
            return
        self.seen.add(key)
        outcome = self.run(mutations)
        if outcome.failure is not None and len(mutations) > 1:
            for mutation in mutations:  # the smaller case, when it fails the same way
                if outcome.stage != "validate" and self.renders_left <= 0:
                    break
                alone = self.run([mutation])
                if alone.kind == outcome.kind:
                    outcome = alone
                    break
        self.stats[self.label(outcome)] += 1
        if VERBOSE:
            codes = ",".join(str(c.code) for c in outcome.commands)
            print(
                f"case {self.count}: [{codes}] {self.label(outcome)}: "
                + "; ".join(describe(m) for m in outcome.mutations),
                flush=True,
            )
        if outcome.failure is not None:
            key = signature(outcome)
            if key not in self.failures:
                self.failures[key] = outcome
                if SAVE and (path := save_case(outcome, "make fuzz")):
                    self.saved.append(path)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir()

    @staticmethod
    def label(outcome: Outcome) -> str:
        if outcome.failure is not None:
            return f"FAILED {outcome.kind}"
        codes = [c.code for c in outcome.commands]
        if codes[-1] == 2 and not outcome.rendered:
            return "validate 2 (refused with its location)"
        if outcome.note is not None and not outcome.rendered:
            return "validate 0, not rendered (over MAX_VARIANTS variants)"
        if outcome.note is not None:
            return f"validate 0, {outcome.stage} timed out making progress (slow, not hung)"
        if not outcome.rendered:
            return "validate 0, not rendered (render budget spent)"
        return f"validate 0, {outcome.stage} {codes[-1]}"

    def summary(self) -> str:
        retries = self.count - sum(
            count for label, count in self.stats.items() if not label.startswith("duplicate")
        )
        origin = "derandomized" if SEED is None else f"FUZZ_SEED={SEED}"
        lines = [
            f"fuzz ({origin}): {self.count} cases run ({retries} of them single "
            "mutations of a failing two-mutation case), "
            f"{RENDERS - self.renders_left} rendered or trained; "
            f"{len(self.failures)} distinct failures"
        ]
        lines += [f"  {count:4d}  {label}" for label, count in sorted(self.stats.items())]
        lines += [f"  saved: {path.relative_to(REPO)}" for path in self.saved]
        return "\n".join(lines)


def test_fuzz_inputs(tmp_path, demo_models):
    fuzzing = Fuzzing(tmp_path / "cases")
    fuzzing.folder.mkdir()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=SEED is None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(mutations=cases())
    def explore(mutations):
        fuzzing.check(mutations)

    if SEED is not None:
        explore = seed(int(SEED))(explore)
    explore()
    print("\n" + fuzzing.summary())
    reports = "\n\n".join(outcome.report() for outcome in fuzzing.failures.values())
    assert not fuzzing.failures, f"{fuzzing.summary()}\n\n{reports}"


CORPUS_CASES = corpus_files()


def test_corpus_is_kept():
    """Found cases are regression files: they stay, one per finding."""
    assert len(CORPUS_CASES) >= 1
    signatures = [load_corpus_case(path)["signature"] for path in CORPUS_CASES]
    assert len(set(signatures)) == len(signatures)


@pytest.mark.parametrize("path", CORPUS_CASES, ids=lambda path: path.stem)
def test_corpus_case(path: Path, tmp_path, demo_models):
    """A case the fuzzer once failed on keeps the contract now."""
    case = load_corpus_case(path)
    outcome = run_case(case["mutations"], tmp_path / "case")
    assert outcome.failure is None, f"{path.relative_to(REPO)}\n{outcome.report()}"


def test_the_base_project_validates_and_renders(tmp_path, demo_models):
    """The unmutated project keeps the contract (a fuzzed case differs from it in one
    place), and each special path the fuzzer uses can be made."""
    outcome = run_case(
        [{"file": "campaign", "op": "set", "path": ["name"], "value": "fuzz"}], tmp_path / "case"
    )
    assert outcome.failure is None and outcome.commands[-1].code in (0, 1), outcome.report()
    assert outcome.stage == "render" and outcome.rendered
    made: dict[str, Path] = {}
    for name in SPECIAL_PATHS:
        _resolve_specials({"$path": name}, tmp_path / "special", made)
    for name in PINNED_FILES:
        _pinned(name, tmp_path / "special", made)
    assert len(made) == len(SPECIAL_PATHS) + len(PINNED_FILES)
    assert re.search(r"\(2 variants", outcome.commands[0].stdout), outcome.commands[0].stdout


def test_mutations_are_described():
    assert (
        describe({"file": "recipe", "op": "set", "path": ["steps"], "value": math.nan})
        == "recipe.steps = nan"
    )
