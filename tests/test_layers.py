"""The code's shape: the data path reads one way, and the README's API example runs.

Each renderer module's stage is the subpackage it lives in, and ``renderer.STAGES`` orders
them (the README's tour lists them in that order): no module imports one from a later stage
(function-level and type-checking imports count), and the post-process library imports
nothing from the renderer.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from renderer import STAGES

from .conftest import REPO


def stage_of(path: Path) -> str:
    """A renderer module's stage: the subpackage it lives in."""
    return path.relative_to(REPO / "renderer").parts[0]


def imported_stages(path: Path) -> set[str]:
    """The stages whose modules ``path`` imports anywhere (module or function level, type
    checking too): ``renderer.STAGE…`` absolutely, or relatively from its own package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                found.add(stage_of(path))
            elif node.level == 2 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 0 and node.module and node.module.startswith("renderer."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.split(".")[1]
                for alias in node.names
                if alias.name.startswith("renderer.")
            )
    return found


def test_every_renderer_module_lives_in_a_stage():
    packages = {
        path.name for path in (REPO / "renderer").iterdir() if (path / "__init__.py").is_file()
    }
    assert packages == set(STAGES), packages ^ set(STAGES)
    assert [path.name for path in (REPO / "renderer").glob("*.py")] == ["__init__.py"]


def test_no_module_imports_a_later_stage():
    backwards = []
    for path in sorted((REPO / "renderer").glob("*/*.py")):
        stage = stage_of(path)
        backwards += [
            f"{path.relative_to(REPO)} ({stage}) imports from {later}"
            for later in sorted(imported_stages(path))
            if STAGES.index(later) > STAGES.index(stage)
        ]
    assert backwards == []


def test_the_layer_check_sees_a_backward_import(tmp_path):
    module = REPO / "renderer" / "core" / "errors.py"
    backward = tmp_path / "renderer" / "core" / "errors.py"
    backward.parent.mkdir(parents=True)
    backward.write_text(
        module.read_text() + "\n\ndef late():\n"
        "    from renderer.run.execute import render_campaign\n"
    )
    assert "run" in imported_stages(backward)


def module_imports(path: Path) -> list[tuple[ast.ImportFrom | ast.Import, bool]]:
    """Each import statement of ``path`` that names a renderer or post-process module, with
    whether it sits inside a function (a lazy import)."""
    tree = ast.parse(path.read_text())
    lazy = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(function)
    }
    found = []
    for node in ast.walk(tree):
        names = (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        if any(name.split(".")[0] in ("renderer", "postprocess") for name in names):
            found.append((node, id(node) in lazy))
    return found


def test_a_lazy_import_says_why():
    """An import inside a function hides a dependency from the file's header, so it is kept
    only where start-up needs it, with a comment on it or on the line above saying why."""
    silent = []
    for path in sorted([*(REPO / "renderer").glob("*/*.py"), *(REPO / "postprocess").glob("*.py")]):
        lines = path.read_text().splitlines()
        for node, lazy in module_imports(path):
            said = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
            # an import right below a commented one shares its reason
            shared = lines[node.lineno - 2].strip().startswith(("from ", "import "))
            if lazy and not said and not shared:
                silent.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert silent == []


def test_no_import_circle_between_renderer_modules():
    graph: dict[str, set[str]] = {}
    for path in sorted((REPO / "renderer").glob("*/*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        graph[name] = {
            node.module
            for node, _ in module_imports(path)
            if isinstance(node, ast.ImportFrom) and node.module
        }
    done: set[str] = set()

    def circle_from(module: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        if module in path:
            return (*path[path.index(module) :], module)
        if module in done or module not in graph:
            return None
        for imported in sorted(graph[module]):
            if found := circle_from(imported, (*path, module)):
                return found
        done.add(module)
        return None

    circles = [found for module in sorted(graph) if (found := circle_from(module, ()))]
    assert circles == [], " -> ".join(circles[0])


def test_no_module_is_over_600_lines():
    """A module does one job its name says; past about 600 lines it is doing several."""
    long = {
        str(path.relative_to(REPO)): length
        for path in sorted(
            [*(REPO / "renderer").rglob("*.py"), *(REPO / "postprocess").glob("*.py")]
        )
        if (length := len(path.read_text().splitlines())) > 600
    }
    assert long == {}


def test_the_readme_tour_lists_the_stages_in_order():
    readme = (REPO / "README.md").read_text()
    tour = readme[readme.index("## A tour of the files") : readme.index("## Python API")]
    listed = re.findall(r"^  (\w+)/ +", tour, re.M)
    assert listed == list(STAGES), listed


def test_the_postprocess_library_does_not_import_the_renderer():
    for path in sorted((REPO / "postprocess").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = [
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        ] + [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        ]
        assert not [name for name in names if name.split(".")[0] == "renderer"], path.name


def test_the_readme_api_example_runs(tmp_path, demo_models):
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(example)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OUT": str(tmp_path / "out")}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "36 variants" in done.stdout and "identical" in done.stdout
    assert (tmp_path / "out" / "ledger.sqlite").is_file()
