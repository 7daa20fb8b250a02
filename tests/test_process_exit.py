"""The ``campaign`` console script ends without the interpreter's teardown (README,
"Command line"), and loses nothing for it: ``main``'s status is the exit code, everything printed
reaches the reader, the threads are joined and every atexit handler registered while
``main`` ran has run. Each case runs ``renderer.cli.main.run`` in a fresh interpreter with a
stand-in ``main`` that does what a command does at the end of a run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import CAMPAIGN_BIN, REPO


def run_entry_point(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """``renderer.cli.main.run()`` with ``main`` replaced by a function of ``body``."""
    script = textwrap.dedent("""
        import atexit, sys, threading, time
        from pathlib import Path
        from renderer.cli import main as cli

        MARKS = Path(sys.argv[1])

        def main(argv=None):
        {body}

        cli.main = main
        cli.run()
        """).replace("{body}", textwrap.indent(textwrap.dedent(body), "    "))
    environment = {
        name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"
    }  # buffered, as a user's shell has it
    return subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "marks")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**environment, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.parametrize("status", [0, 1, 3])
def test_the_exit_status_is_mains_and_all_output_is_flushed(tmp_path, status):
    done = run_entry_point(
        tmp_path,
        f"""
        sys.stdout.write("x" * 200_000)  # more than a pipe holds: flushed at the very end
        sys.stderr.write("last words")
        return {status}
        """,
    )
    assert done.returncode == status
    assert done.stdout == "x" * 200_000
    assert done.stderr == "last words"


def test_threads_are_joined_and_atexit_handlers_run_before_the_process_ends(tmp_path):
    done = run_entry_point(
        tmp_path,
        """
        def late():
            time.sleep(0.5)
            with MARKS.open("a") as marks:
                marks.write("thread\\n")

        atexit.register(lambda: MARKS.open("a").write("atexit\\n"))
        threading.Thread(target=late).start()
        return 0
        """,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "marks").read_text().splitlines() == ["thread", "atexit"]


def test_an_exception_out_of_main_exits_as_python_does(tmp_path):
    done = run_entry_point(tmp_path, "raise SystemExit(5)")
    assert done.returncode == 5
    done = run_entry_point(tmp_path, "raise LookupError('not a command error')")
    assert done.returncode == 1 and "LookupError: not a command error" in done.stderr


def test_the_installed_script_is_this_entry_point():
    assert "from renderer.cli.main import run" in CAMPAIGN_BIN.read_text()
