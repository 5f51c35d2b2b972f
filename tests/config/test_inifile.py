"""What the texts say of the options is what the code does: the generated config.ini (``ccdcal run
--write-config``) and the README's option table are read as a user reads them and checked against the code —
the options it knows, their defaults, and the defaults of ``ccdcal masters`` and ``ccdcal process``, which the
config's must equal (one default per choice, whatever the route).

Nothing here lists the options: they come from the texts and from the code, so that an option added,
removed or given another default in one place and not the others fails here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.cli import app
from ccdcal.config.inifile import KINDS, OPTIONS
from ccdcal.config.run import SeedConfig, load_config
from ccdcal.errors import ConfigError
from ccdcal.lights import pipeline  # noqa: F401  (imported before any stand-in: see options_given)
from ccdcal.lights.options import ProcessOptions
from ccdcal.masters.groups import MasterOptions
from tests.conftest import ROOT

README = ROOT / "README.md"

#: Sentences once written of an option that the code no longer bears out.
FALSE_CLAIMS = ("Recorded, but", "currently always allows it")

#: A row of the README's option table: | `[SECTION]` | `name` | `default` | seed or ccdcal | meaning |
#: (an empty default is written "(empty)").
ROW = re.compile(
    r"^\| `\[(?P<section>[A-Z]+)\]` \| `(?P<name>[a-z_]+)` \| (?:`(?P<default>[^`]*)`|(?P<empty>\(empty\))) "
    r"\| (?P<origin>seed|ccdcal) \| (?P<meaning>.+) \|$"
)


@dataclass(frozen=True)
class Told:
    """One option as a text tells it."""

    default: str
    origin: str  # seed (the script pipeline had it) or ccdcal
    meaning: str


def readme_options() -> dict[tuple[str, str], Told]:
    """(section, name) → what the README's option table says, every row of it."""
    text = README.read_text()
    section = text.split("\n## Coming from the script pipeline\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| `[")]
    told: dict[tuple[str, str], Told] = {}
    for line in lines:
        row = ROW.match(line)
        assert row is not None, f"a README option row that does not read as one: {line}"
        key = (row["section"], row["name"])
        assert key not in told, f"[{key[0]}] {key[1]} twice in the README"
        told[key] = Told(row["default"] or "", row["origin"], row["meaning"])
    assert told, "no option table found in the README"
    return told


def generated_options(path: Path) -> dict[tuple[str, str], Told]:
    """(section, name) → what the generated file says: the value written and the comment above it."""
    told: dict[tuple[str, str], Told] = {}
    section, comment = "", list[str]()
    for line in path.read_text().splitlines():
        if line.startswith("["):
            section, comment = line.strip("[]"), []
        elif line.startswith("#"):
            comment.append(line.lstrip("#").strip())
        elif line.strip():
            name, value = (part.strip() for part in line.split("=", 1))
            assert section, f"{name} comes before any section"
            assert (section, name) not in told, f"[{section}] {name} twice in the generated file"
            text = " ".join(comment)
            origin = "ccdcal" if text.startswith("(ccdcal)") else "seed"
            told[(section, name)] = Told(value, origin, text.removeprefix("(ccdcal)").strip())
            comment = []
    return told


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """tmp/raw (the default ``raw_root``, ``../raw``, must exist) and the folder of the configs."""
    (tmp_path / "raw").mkdir()
    (tmp_path / "calib").mkdir()
    return tmp_path / "calib"


@pytest.fixture
def generated(layout: Path) -> Path:
    """The file ``ccdcal run --write-config`` writes."""
    path = layout / "config.ini"
    result = CliRunner().invoke(app, ["run", "--write-config", str(path)])
    assert result.exit_code == 0, result.output
    return path


def loaded(folder: Path, text: str, name: str = "one.ini") -> SeedConfig:
    (folder / name).write_text(text)
    return load_config(folder / name)


def test_generated_file_and_readme_document_the_same_options_alike(generated: Path) -> None:
    written, readme = generated_options(generated), readme_options()
    assert sorted(written) == sorted(readme), "options in one text and not the other"
    for key, told in written.items():
        assert readme[key].default == told.default, key
        assert readme[key].origin == told.origin, key
        assert told.meaning, f"[{key[0]}] {key[1]} has no comment in the generated file"


def test_every_option_the_code_knows_is_documented_and_none_other(generated: Path, layout: Path) -> None:
    written = generated_options(generated)
    # Every field of a loaded config is set by one option of the generated file, and every option of the
    # file sets one (the names of the two dark_scale and temp_tolerance differ by section).
    set_by = {(o.section, o.name): o.field for o in OPTIONS}
    assert sorted(set_by) == sorted(written)
    assert sorted(set_by.values()) == sorted(f.name for f in fields(SeedConfig) if f.name != "path")
    assert sorted(KINDS) == sorted({name for _, name in written})
    # The code reads each documented option alone, and refuses one nobody documented.
    for (section, name), told in readme_options().items():
        loaded(layout, f"[{section}]\n{name} = {told.default}\n")
    with pytest.raises(ConfigError, match="unknown option"):
        loaded(layout, "[MASTERS]\nflat_dark_scale = yes\n")


def test_documented_defaults_are_the_codes(generated: Path, layout: Path) -> None:
    """A config without any option is the generated file; each option written alone with the default the
    README gives changes nothing (so that default is the code's)."""
    empty = loaded(layout, "[GENERAL]\n[MASTERS]\n[CALIBRATION]\n", "empty.ini")
    assert {**vars(load_config(generated)), "path": None} == {**vars(empty), "path": None}
    for (section, name), told in readme_options().items():
        alone = loaded(layout, f"[{section}]\n{name} = {told.default}\n")
        assert {**vars(alone), "path": None} == {**vars(empty), "path": None}, (section, name)


def test_the_configs_defaults_are_the_commands_defaults(
    layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ccdcal run` with a config of defaults builds masters and calibrates lights with the options that
    `ccdcal masters` and `ccdcal process` take without any: their library defaults, folders apart."""
    config = loaded(layout, "[GENERAL]\n[MASTERS]\n[CALIBRATION]\n", "empty.ini")
    cli_masters = options_given(monkeypatch, tmp_path, "masters", "ccdcal.masters.build.build_masters")
    cli_process = options_given(monkeypatch, tmp_path, "process", "ccdcal.lights.pipeline.process")
    assert cli_masters == MasterOptions()
    assert cli_process == ProcessOptions()
    for ours, theirs, folders in (
        (config.master_options(), MasterOptions(), ("masters_dir",)),
        (config.process_options(), ProcessOptions(), ("masters_dir", "output_dir")),
        (config.process_options().master_options(), MasterOptions(), ("masters_dir",)),
    ):
        for item in fields(ours):
            if item.name not in folders:
                assert getattr(ours, item.name) == getattr(theirs, item.name), item.name


def options_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str, target: str) -> Any:
    """The options object a command passes to the library when given no option (the library function
    ``target`` replaced for the call only: a module imported meanwhile would keep the stand-in)."""
    given: list[Any] = []

    def stop(_catalog: Any, options: Any, *_args: Any, **_kwargs: Any) -> None:
        given.append(options)
        raise typer.Exit(0)

    if not (tmp_path / "c.db").exists():  # the commands refuse a catalog that does not exist
        Catalog(tmp_path / "c.db", create=True).close()
    with monkeypatch.context() as patch:
        patch.setattr(target, stop)
        result = CliRunner().invoke(app, ["--db", str(tmp_path / "c.db"), command], env={"CCDCAL_DB": ""})
    assert (result.exit_code, given and type(given[0]).__name__) == (
        0,
        {"masters": "MasterOptions", "process": "ProcessOptions"}[command],
    ), result.output
    return given[0]


def command_options() -> dict[str, set[str]]:
    """Command name (``db upgrade`` for a subcommand) → its options (``--help`` aside); ``""`` → the global
    ones (``ccdcal --db ...``)."""
    found: dict[str, set[str]] = {}

    def walk(group: Any, prefix: str) -> None:  # a click group (typer's own click)
        for name, command in group.commands.items():
            options = {opt for p in command.params for opt in [*p.opts, *p.secondary_opts]}
            found[f"{prefix}{name}"] = {opt for opt in options if opt.startswith("--")}
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")

    root = typer.main.get_command(app)
    walk(root, "")
    found[""] = {opt for p in root.params for opt in p.opts if opt.startswith("--")}
    assert found
    return found


def test_texts_name_only_options_that_exist_and_no_claim_known_false(generated: Path) -> None:
    known = set().union(*command_options().values())
    for key, told in [*generated_options(generated).items(), *readme_options().items()]:
        for claim in FALSE_CLAIMS:
            assert claim not in told.meaning, key
        for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", told.meaning):
            assert option in known, f"[{key[0]}] {key[1]} names {option}, which no command has"
    for claim in FALSE_CLAIMS:
        assert claim not in generated.read_text()
        assert claim not in README.read_text()
    # the seed's flats option and the commands' one are twins, and both texts say so
    for told in (generated_options(generated), readme_options()):
        assert "--flat-dark-scale" in told[("MASTERS", "dark_scale")].meaning
    having = {command for command, options in command_options().items() if "--flat-dark-scale" in options}
    assert {"masters", "process"} <= having


def test_readme_usage_names_only_options_of_its_commands() -> None:
    """Each ``ccdcal COMMAND ... --option`` line of the README's Usage block names options of that command."""
    root = typer.main.get_command(app)
    global_values = {opt for p in root.params if not getattr(p, "is_flag", False) for opt in p.opts}
    commands = command_options()
    del commands[""]
    text = README.read_text().split("\n## Usage\n", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    checked = 0
    for line in text.splitlines():
        code = line.split("  #", 1)[0]
        for part in code.split("|"):
            words = part.split()
            if "ccdcal" not in words:
                continue
            words = words[words.index("ccdcal") + 1 :]
            while words and words[0].startswith("-"):  # global options, with their values
                words = words[2:] if words[0] in global_values else words[1:]
            if not words:
                continue
            name = " ".join(words[:2]) if " ".join(words[:2]) in commands else words[0]
            assert name in commands, f"README usage names a command ccdcal has not: {line}"
            for option in (w.split("=", 1)[0] for w in words if w.startswith("--")):
                assert option in commands[name], f"ccdcal {name} has no {option}: {line}"
                checked += 1
    assert checked > 20  # the block was found and read
