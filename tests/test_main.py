"""``ccdcal.__main__``: the command's exit status, its output and the ``atexit`` functions survive the fast
exit (:func:`ccdcal.__main__.leave`), and a thread still running is waited for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = """
import atexit, sys, threading, time
from ccdcal.__main__ import leave
atexit.register(lambda: sys.stdout.write(" atexit ran"))
{body}
"""


def run(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-c", PROGRAM.format(body=body)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(("code", "status"), [("None", 0), ("0", 0), ("2", 2), ("130", 130)])
def test_the_exit_status_and_the_output_are_kept(tmp_path: Path, code: str, status: int) -> None:
    done = run(tmp_path, f"sys.stdout.write('printed'); leave({code})")
    assert (done.returncode, done.stdout, done.stderr) == (status, "printed atexit ran", "")


def test_a_message_is_printed_with_status_1(tmp_path: Path) -> None:
    done = run(tmp_path, "leave('Error: something')")
    assert (done.returncode, done.stderr) == (1, "Error: something\n")


def test_a_thread_still_running_is_waited_for(tmp_path: Path) -> None:
    body = (
        "t = threading.Thread(target=lambda: (time.sleep(0.3), sys.stdout.write('thread done')))\n"
        "t.start()\nleave(4)"
    )
    done = run(tmp_path, body)
    assert (done.returncode, done.stdout) == (4, "thread done atexit ran")
