"""Every file under tests/bad/ is wrong in one way; `campaign validate` must say where.

Each file's first line is `# expect: line=N key=KEY.PATH message=TEXT` (key=- when the
error has no key path, as for YAML syntax errors). The check: exit code 2, no traceback,
and an error naming `file:N`, the key path and the message.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import REPO, run_cli

BAD = REPO / "tests" / "bad"
EXPECT = re.compile(r"^# expect: line=(\d+) key=(\S+) message=(.+)$")
CASES = sorted(path for path in BAD.rglob("*.yaml") if path.read_text().startswith("# expect:"))


def test_corpus_is_large_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_bad_file_is_refused_with_its_location(path: Path, demo_models):
    line, key_path, message = EXPECT.match(path.read_text().splitlines()[0]).groups()
    result = run_cli("validate", path.relative_to(REPO))
    assert result.code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    location = f"{path.relative_to(REPO)}:{line}: "
    if key_path != "-":
        location += f"at {key_path}: "
    assert location in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
