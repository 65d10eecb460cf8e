"""The installed commands end without the interpreter's teardown (``facedata.files.run_and_exit``): their exit
status and their output must be what ``main`` gave."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("body", "code", "out", "err"), [
    ("print('done', end='')", 0, "done", ""),
    ("print('partial', end=''); sys.exit(3)", 3, "partial", ""),
    ("sys.exit('error: bad input')", 1, "", "error: bad input\n"),
    ("sys.exit(None)", 0, "", ""),
])
def test_run_and_exit_keeps_the_status_and_flushes_the_output(body, code, out, err):
    program = f"import sys\nfrom facedata.files import run_and_exit\nrun_and_exit(lambda: exec({body!r}))\n"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (code, out, err)


def test_an_unexpected_error_keeps_its_traceback():
    program = "from facedata.files import run_and_exit\nrun_and_exit(lambda: 1 / 0)\n"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.strip().endswith("ZeroDivisionError: division by zero")


def test_the_installed_command_reports_a_bad_tree_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "facedata", "ingest", str(tmp_path / "missing"), "--store",
                           str(tmp_path / "store")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {tmp_path / 'missing'}: raw tree")
