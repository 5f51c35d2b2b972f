"""The help of every command: plain text that fits 80 columns, no Python type, ending with examples that
parse; and the shell completion the README documents."""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from ccdcal.cli import app

#: What the help of a command must never show: a Python type (Typer's ``<bool>``, ``<list[Path]>``,
#: ``<int range>``), a parameter's Python name in the usage line (``{paths}...``), a cut word.
PYTHON_TYPES = re.compile(r"<\w[\w ,\[\]|]*>|list\[|Path\]|\b(?:NoneType|int range|float range)\b")
GLOBAL_OPTIONS = {"--db", "-v", "--verbose", "-q", "--quiet"}


def commands() -> Iterator[tuple[str, Any]]:
    """Every command and group, as its words after ``ccdcal`` (``""`` for ccdcal itself) and its object."""

    def walk(words: str, command: Any) -> Iterator[tuple[str, Any]]:
        yield words, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(f"{words} {name}".strip(), sub)

    yield from walk("", typer.main.get_command(app))


COMMANDS = [words for words, _ in commands()]


@functools.cache
def help_text(words: str, columns: int = 80) -> str:
    """``ccdcal WORDS --help`` as a terminal of ``columns`` shows it (a new process: the width is the one
    Click finds, as for a user, not the test runner's)."""
    done = subprocess.run(
        [sys.executable, "-m", "ccdcal", *words.split(), "--help"],
        env={**os.environ, "COLUMNS": str(columns)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    return done.stdout


def examples(text: str) -> list[str]:
    """The lines of the help's Examples section, the last one."""
    section = text.partition("\nExamples:\n")[2]
    assert section, "no Examples section"
    assert "\n\n" not in section, "not the last section"
    assert not re.search(r"^\S", section, re.MULTILINE), "not the last section"
    return [line.strip() for line in section.splitlines()]


def test_every_command_is_checked() -> None:
    assert COMMANDS == [
        "",
        "ingest",
        "status",
        "masters",
        "process",
        "simulate",
        "report",
        "preview",
        "run",
        "provenance",
        "audit",
        "reproduce",
        "impact",
        "mark-bad",
        "mark-good",
        "certify",
        "decertify",
        "db",
        "db upgrade",
        "db current",
    ]


@pytest.mark.parametrize("words", COMMANDS)
def test_help_fits_80_columns_with_no_python_type_and_no_cut_word(words: str) -> None:
    text = help_text(words)
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: ccdcal {words} [OPTIONS]".replace("  ", " "))
    assert "{" not in usage  # a required argument as Typer writes it: {paths}...
    assert PYTHON_TYPES.findall(text) == []
    assert "…" not in text
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert too_long == []
    listed = text.partition("\nCommands:\n")[2].partition("\n\n")[0]
    assert not [line for line in listed.splitlines() if line.endswith("...")]  # no help cut short


@pytest.mark.parametrize("words", COMMANDS)
def test_help_ends_with_two_or_three_examples_that_parse(words: str) -> None:
    shown = examples(help_text(words))
    assert 2 <= len(shown) <= 3, shown
    root = typer.main.get_command(app)
    for example in shown:
        args = _command_words(example)
        assert args[0] == "ccdcal", example
        used = _parsed(root, args[1:])
        assert used[0] == words or (words in ("", "db") and used[0].startswith(words)), (example, used)
        options = {word.split("=")[0] for word in args[1:] if word.startswith("-")}
        assert options <= used[1] | GLOBAL_OPTIONS, example


def _command_words(example: str) -> list[str]:
    """An example's words as the shell gives them to ccdcal: its comment and a redirection left out."""
    lexer = shlex.shlex(example, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if set(word) <= set("();<>|&"):
            break
        words.append(word)
    return words


def _parsed(root: Any, args: list[str]) -> tuple[str, set[str]]:
    """Parse ``ccdcal ARGS`` as the command line does, running nothing: the command's words and its
    options (a bad option or value raises the parser's error)."""
    ctx = root.make_context("ccdcal", list(args))
    command, words = root, []
    while hasattr(command, "commands"):
        name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        words.append(name)
        ctx = command.make_context(name, rest, parent=ctx)
    options = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    return " ".join(words), options


def test_a_command_help_as_it_reads_in_80_columns() -> None:
    assert help_text("impact") == (
        "Usage: ccdcal impact [OPTIONS] FILE|ID\n"
        "\n"
        "  List every master and calibrated file made from a raw frame or a master.\n"
        "\n"
        "  At any depth: the masters combined from it, the masters calibrated with\n"
        "  those, and every light calibrated with any of them.\n"
        "\n"
        "Arguments:\n"
        "  FILE|ID  A calibrated file, master or raw frame (its path), or\n"
        "           calibration:N, master:N, frame:N.\n"
        "\n"
        "Options:\n"
        "  --json      Print as JSON.\n"
        "  -h, --help  Show this message and exit.\n"
        "\n"
        "Examples:\n"
        "  ccdcal impact raw/BIAS/Bias_002.fits\n"
        "  ccdcal impact master:1 --json\n"
    )


def test_long_option_names_wrap_instead_of_being_cut() -> None:
    text = help_text("process")
    assert "  --exptime-tolerance FRACTION    Relative exposure difference of an unscaled\n" in text
    assert "  --write-uncalibrated            Write the lights no step applies to (no\n" in text
    assert "Usage: ccdcal ingest [OPTIONS] PATH...\n" in help_text("ingest")
    assert "Usage: ccdcal run [OPTIONS] [CONFIG]\n" in help_text("run")


def test_wider_terminals_get_up_to_100_columns() -> None:
    widest = max(len(line) for line in help_text("process", columns=200).splitlines())
    assert 80 < widest <= 100


def test_the_list_of_commands_shows_each_first_sentence_whole() -> None:
    text = help_text("")
    assert "  report      Write an HTML quality report\n" in text
    assert "  ingest      Catalogue raw FITS frames, incrementally\n" in text


# -- shell completion, as the README documents it -------------------------------------------------------


@pytest.fixture
def bash_with_ccdcal(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """bash, and an environment whose HOME is a temporary folder and whose PATH starts with ccdcal's."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    scripts = Path(sys.executable).parent
    if not (scripts / "ccdcal").exists():
        pytest.skip(f"the ccdcal command is not installed in {scripts}")
    home = tmp_path / "home"
    home.mkdir()
    path = f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"
    return bash, {**os.environ, "HOME": str(home), "PATH": path}


def test_install_completion_completes_commands_and_options(
    bash_with_ccdcal: tuple[str, dict[str, str]],
) -> None:
    bash, env = bash_with_ccdcal
    home = Path(env["HOME"])
    # `; true`: bash stays the parent of ccdcal, which detects the shell it is installing for
    installed = subprocess.run(
        [bash, "-c", "ccdcal --install-completion; true"], env=env, capture_output=True, text=True, cwd=home
    )
    assert (installed.returncode, installed.stdout) == (
        0,
        f"bash completion installed in {home}/.bash_completions/ccdcal.sh\n"
        "Completion will take effect once you restart the terminal\n",
    )
    complete = (
        'source ~/.bashrc; COMP_WORDS=({words}); COMP_CWORD={n}; _ccdcal_completion ccdcal; printf "%s\\n" '
        '"${{COMPREPLY[@]}}"'
    )
    for words, expected in (
        ("ccdcal pro", "process\nprovenance\n"),
        ("ccdcal process --dry", "--dry-run\n"),
        ("ccdcal db u", "upgrade\n"),
    ):
        script = complete.format(words=words, n=len(words.split()) - 1)
        done = subprocess.run([bash, "-c", script], env=env, capture_output=True, text=True, cwd=home)
        assert (done.returncode, done.stdout, done.stderr) == (0, expected, "")


def test_show_completion_prints_the_script(bash_with_ccdcal: tuple[str, dict[str, str]]) -> None:
    bash, env = bash_with_ccdcal
    script = (
        'eval "$(ccdcal --show-completion)"; COMP_WORDS=(ccdcal mark-); COMP_CWORD=1; '
        '_ccdcal_completion ccdcal; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run([bash, "-c", script], env=env, capture_output=True, text=True, cwd=env["HOME"])
    assert (done.returncode, done.stdout, done.stderr) == (0, "mark-bad\nmark-good\n", "")
    assert list(Path(env["HOME"]).iterdir()) == []  # nothing installed
