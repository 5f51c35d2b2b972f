"""The report's frame QA: what is read per scope (:mod:`ccdcal.report.frameqa`, on SQLite and PostgreSQL)
and the page's "Frame QA" section, on a catalog whose frame QA rows are written directly
(:mod:`tests.frame_qa_rows`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccdcal.catalog.db import Catalog
from ccdcal.cli import app
from ccdcal.report import ReportScope, gather
from ccdcal.report.frameqa import FrameQaData, MasterQa, QaDecision, QaFrame, select_frame_qa
from ccdcal.report.html import Images, esc, render
from tests.frame_qa_rows import B5_REASON, D3_KEPT, D3_REASON, F3_REASON, T0, add_frame_qa_rows
from tests.report.test_html import EVIL, Tags
from tests.report.test_html import data as evil_data

B5_SHOWN = f"{B5_REASON} (outlier_level rule)"


@pytest.fixture
def catalog(db_url: str) -> Iterator[Catalog]:
    """A catalog with frame QA rows (SQLite, then PostgreSQL)."""
    with Catalog(db_url) as opened:
        add_frame_qa_rows(opened)
        yield opened


def decisions(qa: FrameQaData) -> list[tuple[int, str, str, str, str, str, int | None]]:
    return [(d.frame_id, d.kind, d.rule, d.decision, d.decided_by, d.reason, d.run_id) for d in qa.decisions]


def test_the_catalog_now_shows_the_current_decisions_and_every_masters_frames(catalog: Catalog) -> None:
    qa = gather(catalog, ReportScope()).frame_qa
    assert decisions(qa) == [
        (5, "bias", "outlier_level", "set_aside", "rule", B5_SHOWN, 2),
        (10, "dark", "outlier_noise", "kept", "person", D3_KEPT, 3),
    ]
    assert qa.decisions[0].path == "/raw/b5.fits"
    assert qa.decisions[0].decided_at == T0 + dt.timedelta(hours=1, minutes=1)
    assert [(m.master_id, m.kind, [f.frame_id for f in m.frames]) for m in qa.masters] == [
        (1, "bias", [1, 2, 3, 4, 5]),
        (2, "dark", [8, 9, 10]),
        (3, "flat", [11, 12, 13]),
    ]
    bias = qa.masters[0]
    assert [(f.level, f.rule) for f in bias.frames] == [
        (500.5, None),
        (501.0, None),
        (501.5, None),
        (502.0, None),
        (812.0, "outlier_level"),
    ]
    assert bias.frames[-1].reason == B5_SHOWN
    assert bias.frames[0] == QaFrame(1, "/raw/b1.fits", True, 500.5, 3.0, 4.2, 0.125, 0.0, None)
    assert qa.masters[2].frames[2] == QaFrame(13, "/raw/f3.fits", False)
    assert (qa.masters[2].frames[0].signal, qa.not_measured) == (19511.0, 0)


def test_a_run_shows_the_decisions_it_made_and_since_a_date_those_made_since(catalog: Catalog) -> None:
    with catalog.reading() as session:
        by_run = select_frame_qa(session, [], run_id=2)
        by_person = select_frame_qa(session, [], run_id=3)
        since = select_frame_qa(session, [], since=T0 + dt.timedelta(hours=1, minutes=4))
    # every set-aside decision of run 2, those since overridden, marked bad or about an older content too
    assert [(d.frame_id, d.rule, d.decision, d.reason) for d in by_run.decisions] == [
        (5, "outlier_level", "set_aside", B5_SHOWN),
        (6, "outlier_noise", "set_aside", "noise 12 ADU (outlier_noise rule)"),
        (7, "wrong_type", "set_aside", "stars (wrong_type rule)"),
        (10, "outlier_noise", "set_aside", f"{D3_REASON} (outlier_noise rule)"),
        (13, "wrong_type", "set_aside", f"{F3_REASON} (wrong_type rule)"),
    ]
    assert decisions(by_person) == [(10, "dark", "outlier_noise", "kept", "person", D3_KEPT, 3)]
    assert [(d.frame_id, d.decision) for d in since.decisions] == [
        (10, "set_aside"),
        (10, "kept"),
        (13, "set_aside"),
    ]
    assert by_run.masters == []


def test_masters_built_before_frame_qa_are_counted_not_tabled(catalog: Catalog) -> None:
    from sqlalchemy import delete

    from ccdcal.catalog.models import FrameStat

    with catalog.session() as session:
        session.execute(delete(FrameStat).where(FrameStat.kind != "bias"))
    qa = gather(catalog, ReportScope()).frame_qa
    assert [m.master_id for m in qa.masters] == [1]
    assert qa.not_measured == 2
    page = render(dataclasses.replace(evil_data(), frame_qa=qa), Images())
    assert (
        "<p class='note'>2 masters shown above with inputs never measured (built before frame QA).</p>"
        in page
    )


def section(page: str) -> str:
    (found,) = re.findall(r'<section id="frameqa">.*?</section>', page, re.S)
    return found


def rows_of(html: str) -> list[list[str]]:
    """The text of each table row's cells."""
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S):
        cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        rows.append([re.sub(r"<[^>]+>", "", cell) for cell in cells])
    return rows


def test_the_page_has_a_frame_qa_section(catalog: Catalog) -> None:
    page = render(gather(catalog, ReportScope()), Images())
    assert '<a href="#frameqa">Frame QA (1 set aside)</a>' in page
    assert (
        page.index('<section id="masters">')
        < page.index('<section id="frameqa">')
        < page.index('<section id="drift">')
    )
    shown = section(page)
    assert "<h2>Frame QA (1 set aside)</h2>" in shown
    assert "as decided now" in shown
    tables = re.findall(r"<table.*?</table>", shown, re.S)
    assert len(tables) == 4
    assert rows_of(tables[0]) == [
        ["frame", "kind", "rule", "reason", "decision", "decided by", "when (UTC)", "run"],
        [
            "frame:5 b5.fits",
            "bias",
            "outlier_level",
            esc(B5_SHOWN),
            "set aside",
            "rule",
            "2026-12-01 21:01:00",
            "2",
        ],
        [
            "frame:10 d3.fits",
            "dark",
            "outlier_noise",
            esc(D3_KEPT),
            "kept",
            "person",
            "2026-12-01 21:07:00",
            "3",
        ],
    ]
    assert rows_of(tables[1]) == [
        ["frame", "level", "noise", "diff noise", "gradient", "saturated", ""],
        ["frame:1 b1.fits", "500.5", "3", "4.2", "0.125", "0.000%", ""],
        ["frame:2 b2.fits", "501", "3", "4.2", "0.125", "0.000%", ""],
        ["frame:3 b3.fits", "501.5", "3", "4.2", "0.125", "0.000%", ""],
        ["frame:4 b4.fits", "502", "3", "4.2", "0.125", "0.000%", ""],
        ["frame:5 b5.fits", "812", "3", "4.2", "0.125", "0.000%", f"set aside: {esc(B5_SHOWN)}"],
    ]
    assert "<tr class='aside'>" in tables[1]
    assert rows_of(tables[3])[0][-2:] == ["signal", ""]
    assert rows_of(tables[3])[1:] == [
        ["frame:11 f1.fits", "20011", "140", "4.2", "0.125", "0.010%", "19511", ""],
        ["frame:12 f2.fits", "20012", "140", "4.2", "0.125", "0.010%", "19512", ""],
        ["frame:13 f3.fits", "NA", "NA", "NA", "NA", "NA", "NA", ""],
    ]
    assert '<a href="#master-1" title="/m/master_bias.fits">master_bias.fits</a> · bias' in shown
    assert 'title="/raw/b5.fits"' in shown


def test_a_report_without_frame_qa_says_so() -> None:
    page = render(dataclasses.replace(evil_data(), frame_qa=FrameQaData()), Images())
    shown = section(page)
    assert "<p>No frame set aside.</p>" in shown
    assert "<table" not in shown
    assert "as decided now" in shown
    scoped = render(dataclasses.replace(evil_data(), scope=ReportScope(run_id=3)), Images())
    assert "as decided in this scope." in section(scoped)


def test_every_frame_qa_value_is_escaped() -> None:
    decision = QaDecision(1, f"/raw/{EVIL}.fits", EVIL, EVIL, "set_aside", EVIL, EVIL, T0, 2)
    frame = QaFrame(1, f"/raw/{EVIL}.fits", True, 1.0, rule=EVIL, reason=EVIL)
    master = MasterQa(7, "bias", f"/m/{EVIL}.fits", EVIL, [frame])
    qa = FrameQaData([decision], [master])
    page = render(dataclasses.replace(evil_data(), frame_qa=qa), Images())
    shown = section(page)
    assert "<script" not in shown
    assert shown.count(esc(EVIL)) == 9  # paths in titles, kind, rule, reasons, decided by, label
    parsed = Tags()
    parsed.feed(shown)
    assert f"set aside: {EVIL}" in parsed.text


def test_ccdcal_report_writes_the_section(catalog: Catalog, tmp_path: Path) -> None:
    output = tmp_path / "report.html"
    result = CliRunner().invoke(
        app, ["--db", str(catalog.url.render_as_string(False)), "report", "-o", str(output)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Report {output} (the catalog now): 3 masters, ")
    assert "<h2>Frame QA (1 set aside)</h2>" in output.read_text()
