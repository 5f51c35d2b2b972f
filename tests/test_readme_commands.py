"""Every command line of the README runs as it is written, in the folder `make demo` fills.

The README's shell blocks (```bash, ```sh, ```shell, ```console) are read in order. Their lines that
run ``ccdcal`` (alone, or after ``VAR=value``), ``cd DIR`` and ``mkdir DIR`` are run one after the other
in a folder like ``demo/`` after ``make demo`` — ``ccdcal.db``, ``raw/``, ``masters/``, ``calibrated/``,
``report.html``, made here by the same commands from a smaller night, for speed — changing folder as
``cd`` says, as someone pasting them into a terminal would. Nothing in a line is substituted.

The marker: a block right after a line ``<!-- not run: REASON -->`` is not run, because it needs another
host, holds a placeholder, or starts a server that runs until stopped. No other block or line is left
out. Lines of other tools (``make``, ``pip``, ``.venv/bin/python``) are not ccdcal's and are not run;
a line of any other tool fails the test until it is sorted here.

The exit status a line must have: 0, or N when its comment (with the comment lines continuing it) says
``(exit status N)``.

A plain ``ccdcal ARGS`` line (no shell operator, variable, redirection or wildcard outside quotes) of a
command that starts no worker process (:data:`IN_PROCESS`) runs in this process, with the words the shell
would give it (``shlex``), because a new process per line would take a minute; any other line runs in
bash, the installed ``ccdcal`` first on its PATH. (Worker processes are forked: forked from the test
runner, which holds other tests' threads — Dask's, a pool's — a worker can wait for ever on a lock one of
them held.)
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccdcal.cli import app
from tests.conftest import ROOT

README = ROOT / "README.md"

#: A block that is not run follows this marker, on the line right before the block's fence.
NOT_RUN = re.compile(r"<!-- not run: (?P<reason>[^>]+?) -->")
#: The languages of the shell blocks.
SHELLS = {"bash", "sh", "shell", "console"}
EXPECTED_STATUS = re.compile(r"\(exit status (?P<status>\d+)\)")
#: What makes a line impossible to run here: another host, a placeholder, a server.
UNRUNNABLE = ("HOST", "@host", "@dbhost", "/mnt/", "dask scheduler", "dask worker")
#: First words of the lines that are not ccdcal's and are not run.
OTHER_TOOLS = {"make", "pip", ".venv/bin/python"}
#: What a line needs a shell for (outside quotes).
SHELL_SYNTAX = re.compile(r"[|&;<>$`*?~(){}\[\]]|^\w+=")
#: The commands whose lines run in this process: none of them starts a worker process.
IN_PROCESS = frozenset(
    {"status", "provenance", "impact", "mark-bad", "mark-good", "certify", "decertify", "report", "preview"}
    | {"db", "reproduce", "--help", "-h", "--version"}
)


@dataclass(frozen=True)
class Line:
    """A command line of a README shell block."""

    command: str  # as written, its comment left out
    status: int  # the exit status it must have
    run: bool  # False in a block marked not run
    reason: str  # why not, for those


def shell_blocks(text: str) -> Iterator[tuple[str | None, list[str]]]:
    """The shell blocks of a Markdown text, in order: (why it is not run, or None; its lines)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if not fence.startswith("```"):
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        if fence[3:] in SHELLS:
            marker = NOT_RUN.fullmatch(lines[i - 1].strip()) if i else None
            yield (marker["reason"] if marker else None), lines[i + 1 : end]
        i = end + 1


def readme_lines(text: str | None = None) -> list[Line]:
    """The command lines of the README's shell blocks, in order (comment lines left out)."""
    lines = []
    for reason, body in shell_blocks(README.read_text() if text is None else text):
        for i, raw in enumerate(body):
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            command, _, comment = _split_comment(raw)
            for more in body[i + 1 :]:  # the comment lines that continue this one's
                if not more.lstrip().startswith("#"):
                    break
                comment += " " + more.strip()
            found = EXPECTED_STATUS.search(comment)
            lines.append(
                Line(
                    command=command.strip(),
                    status=int(found["status"]) if found else 0,
                    run=reason is None,
                    reason=reason or "",
                )
            )
    return lines


def _split_comment(line: str) -> tuple[str, str, str]:
    """``line`` cut at its first ``#`` outside quotes that starts a word."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], "#", line[i + 1 :]
    return line, "", ""


def _unquoted(command: str) -> str:
    """``command`` with its quoted parts left out."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", "", command)


def _kind(command: str) -> str:
    """``ccdcal``, ``cd``, ``mkdir`` or another tool's first word."""
    words = _unquoted(command).split()
    while words and re.fullmatch(r"\w+=\S*", words[0]):  # VAR=value ccdcal ...
        words = words[1:]
    return words[0] if words else ""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as `make demo` leaves it: a simulated night in raw/, ingested and processed, its report."""
    from ccdcal.simulate import simulate_night

    root = tmp_path_factory.mktemp("demo")
    simulate_night(root / "raw", seed=1, shape=(48, 64), n_bias=4, n_dark=3, n_flat=3, n_light=2)
    with _in_folder(root):
        for args in (
            ["--db", "ccdcal.db", "ingest", "raw"],
            ["--db", "ccdcal.db", "process", "--masters-dir", "masters", "--output-dir", "calibrated"],
            ["--db", "ccdcal.db", "report", "-o", "report.html"],
        ):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No catalog chosen by the environment: the lines choose theirs as written."""
    monkeypatch.delenv("CCDCAL_DB", raising=False)


class _in_folder:
    """The current folder changed for a while (the in-process lines resolve their paths against it)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.before = folder, Path.cwd()

    def __enter__(self) -> None:
        os.chdir(self.folder)

    def __exit__(self, *_: object) -> None:
        os.chdir(self.before)


def run_line(command: str, folder: Path) -> tuple[int, str]:
    """Run one README line in ``folder``: its exit status and what it printed."""
    words = shlex.split(command)  # its command: the first word after ccdcal that is not an option's
    command_word = next((w for w in words[1:] if not w.startswith("-") or w in IN_PROCESS), "")
    if (
        _kind(command) == "ccdcal"
        and not SHELL_SYNTAX.search(_unquoted(command))
        and command_word in IN_PROCESS
    ):
        with _in_folder(folder):
            result = CliRunner().invoke(app, shlex.split(command)[1:], catch_exceptions=False)
        return result.exit_code, result.output
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        [bash, "-c", command],
        cwd=folder,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout + done.stderr


def _run_all(lines: list[Line], start: Path) -> Iterator[tuple[str, int, str]]:
    """Each line run in turn from ``start``, following ``cd``: (line, exit status, output)."""
    folder = start
    for line in lines:
        if _kind(line.command) == "cd":
            folder = (folder / shlex.split(line.command)[1]).resolve()
            yield line.command, 0 if folder.is_dir() else 1, ""
        else:
            status, output = run_line(line.command, folder)
            yield line.command, status, output


@pytest.mark.slow
@pytest.mark.usefixtures("_environment")
def test_every_readme_command_line_runs_as_written(demo: Path) -> None:
    lines = [line for line in readme_lines() if line.run and _kind(line.command) not in OTHER_TOOLS]
    outputs = {}
    ran = []
    for command, status, output in _run_all(lines, demo):
        ran.append((command, status))
        outputs[command] = output
    expected = [(line.command, line.status) for line in lines]
    wrong = {command: outputs[command] for command, status in ran if (command, status) not in expected}
    assert ran == expected, wrong
    for command, output in outputs.items():  # none ended with a traceback or an internal error
        assert "Traceback" not in output, (command, output)
        assert "internal error" not in output, (command, output)


def test_every_line_is_sorted() -> None:
    """Each line runs ccdcal, changes or makes a folder, or is another tool's (listed); a line of any other
    tool is caught here."""
    kinds = {_kind(line.command) for line in readme_lines() if line.run}
    assert kinds == {"ccdcal", "cd", "mkdir", *OTHER_TOOLS}
    assert len([line for line in readme_lines() if line.run and _kind(line.command) == "ccdcal"]) >= 35


def test_only_blocks_that_cannot_run_here_are_marked_not_run() -> None:
    """A block marked not run holds a line for another host, a placeholder or a server; no other line
    does."""
    reasons = []
    for reason, body in shell_blocks(README.read_text()):
        unrunnable = any(word in line for line in body for word in UNRUNNABLE)
        assert unrunnable == (reason is not None), body
        reasons += [reason] if reason else []
    assert reasons == [
        "needs another host, or a disk the demo does not have",
        "needs a PostgreSQL server on another host",
        "a server that runs until stopped, and the cluster's hosts",
    ]


def test_the_readme_reader_sees_markers_statuses_and_continued_comments() -> None:
    text = (
        "Intro\n\n```bash\nccdcal status            # fine\n"
        "ccdcal process --overscan poly:2   # a first line of comment,\n"
        "                                   # continued (exit status 1)\n"
        "ccdcal ingest 'a # b'\n```\n\n"
        "<!-- not run: needs another host -->\n```bash\nccdcal ingest --scheduler tcp://HOST:8786 /x\n```\n"
        "```python\nprint('not a shell block')\n```\n"
    )
    assert readme_lines(text) == [
        Line("ccdcal status", 0, True, ""),
        Line("ccdcal process --overscan poly:2", 1, True, ""),
        Line("ccdcal ingest 'a # b'", 0, True, ""),
        Line("ccdcal ingest --scheduler tcp://HOST:8786 /x", 0, False, "needs another host"),
    ]
