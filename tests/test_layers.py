"""The code's shape: the data path reads one way, and the README's API example runs.

load → validate → plan → render → post-process → ledger → report, then the commands that
drive them: no module imports one from a later layer (function-level imports count), and
the post-process library imports nothing from the renderer.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

# The README's module tour lists them in this order.
LAYERS = (
    ("foundation", {"version", "errors", "hashing", "atomic", "yamlsource", "templating",
                    "families", "progress", "ldm_layout", "terminal", "output_folder"}),
    ("validate", {"schema", "schema_errors", "inputs", "training_buckets", "training_spec",
                  "matrix", "compat", "validate"}),
    ("plan", {"variant", "plan", "estimate"}),
    ("render", {"environment", "controls", "render"}),
    ("post-process", {"metadata", "produce"}),
    ("ledger", {"migrations", "records", "ledger", "decisions", "delivery_recovery",
                "locking"}),
    ("report", {"comparison", "run_report", "thumbnails"}),
    ("train", {"training_job", "training_models", "training_data", "lora_files", "training",
               "training_report", "training_run"}),
    ("commands", {"executors", "ray_executor", "adopt", "execute", "locate", "compare",
                  "reproduction", "training_reproduce", "lookup", "pin", "provenance", "review",
                  "deliver", "cli", "demo_models", "__init__"}),
)
LAYER_OF = {module: index for index, (_, modules) in enumerate(LAYERS) for module in modules}


def imported_modules(path: Path, package: str) -> set[str]:
    """The modules of ``package`` that ``path`` imports anywhere (module or function level)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # `from . import x`: a module, or a name of the package
                found.update(alias.name if alias.name in LAYER_OF else "__init__"
                             for alias in node.names)
            elif node.module and node.module.split(".")[0] == package:
                parts = node.module.split(".")
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith(f"{package}."))
    return found


def test_every_renderer_module_has_a_layer():
    modules = {path.stem for path in (REPO / "renderer").glob("*.py")}
    assert modules == set(LAYER_OF), (modules ^ set(LAYER_OF))


def test_no_module_imports_a_later_stage():
    backwards = []
    for path in sorted((REPO / "renderer").glob("*.py")):
        for module in imported_modules(path, "renderer"):
            if LAYER_OF[module] > LAYER_OF[path.stem]:
                backwards.append(f"{path.stem} ({LAYERS[LAYER_OF[path.stem]][0]}) imports "
                                 f"{module} ({LAYERS[LAYER_OF[module]][0]})")
    assert backwards == []


def test_the_postprocess_library_does_not_import_the_renderer():
    for path in sorted((REPO / "postprocess").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = [node.module for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module] + \
            [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names]
        assert not [name for name in names if name.split(".")[0] == "renderer"], path.name


def test_the_readme_api_example_runs(tmp_path, demo_models):
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(example)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OUT": str(tmp_path / "out")}
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "36 variants" in done.stdout and "identical" in done.stdout
    assert (tmp_path / "out" / "ledger.sqlite").is_file()
