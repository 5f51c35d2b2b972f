"""The frame QA selects of the catalog layer (``ccdcal.catalog.frameqa``), on SQLite and PostgreSQL: each
frame's current decision, the statistics of its current content and of the versions a master combined,
the frames a master's group set aside, the frames measured per kind."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from ccdcal.catalog.db import Catalog
from ccdcal.catalog.frameqa import (
    current_decisions,
    input_stats,
    measured_counts,
    reason_text,
    set_aside_of,
    stats_of,
)
from ccdcal.catalog.models import Frame, FrameQa
from tests.frame_qa_rows import B5_REASON, D3_KEPT, T0, add_frame_qa_rows, path, sha


def test_the_newest_decision_about_the_current_content_is_the_frames(catalog: Catalog) -> None:
    add_frame_qa_rows(catalog)
    with catalog.reading() as session:
        found = current_decisions(session)
    assert {i: (d.id, d.rule, d.decision, d.decided_by, d.reason) for i, d in found.items()} == {
        5: (1, "outlier_level", "set_aside", "rule", B5_REASON),
        6: (2, "outlier_noise", "set_aside", "rule", "noise 12 ADU"),
        # frame 7: its only decision is about the file's older content
        10: (7, "outlier_noise", "kept", "person", D3_KEPT),
        13: (6, "wrong_type", "kept", "rule", None),
    }
    assert all(d.sha256 == sha(i) for i, d in found.items())


def test_current_decisions_of_some_frames_and_as_they_stood(catalog: Catalog) -> None:
    add_frame_qa_rows(catalog)
    with catalog.reading() as session:
        assert set(current_decisions(session, [10, 13, 1, 10])) == {10, 13}
        assert current_decisions(session, []) == {}
        # before the person's decision (7) and the rules' second look (6), as --as-of reads them
        then = current_decisions(session, as_of=T0 + dt.timedelta(hours=1, minutes=5, seconds=30))
        assert {i: (d.id, d.decision) for i, d in then.items()} == {
            5: (1, "set_aside"),
            6: (2, "set_aside"),
            10: (4, "set_aside"),
            13: (5, "set_aside"),
        }


def test_a_file_that_changes_back_finds_its_decision_again(catalog: Catalog) -> None:
    """A decision belongs to a content: frame 7 read again with the bytes it was judged in has its
    decision again."""
    add_frame_qa_rows(catalog)
    with catalog.session() as session:
        session.execute(update(Frame).where(Frame.id == 7).values(sha256=sha(7, old=True)))
    with catalog.reading() as session:
        assert current_decisions(session, [7])[7].rule == "wrong_type"
        assert session.get(FrameQa, 3) is not None


def test_statistics_of_the_current_content(catalog: Catalog) -> None:
    add_frame_qa_rows(catalog)
    with catalog.reading() as session:
        found = stats_of(session, [1, 5, 7, 13, 14, 99])
        # frame 7 was measured in its older content only; 13 and the light were never measured
        assert sorted(found) == [1, 5]
        assert (found[5].level, found[5].sha256, found[5].hdu) == (812.0, sha(5), 0)
        assert stats_of(session, [5], as_of=T0) == {}
    # another path of the same bytes shares the row
    with catalog.session() as session:
        session.execute(update(Frame).where(Frame.id == 14).values(sha256=sha(5)))
    with catalog.reading() as session:
        shared = stats_of(session, [14])
        assert (shared[14].frame_id, shared[14].level) == (5, 812.0)


def test_the_inputs_of_a_master_with_the_statistics_of_the_versions_combined(catalog: Catalog) -> None:
    add_frame_qa_rows(catalog)
    with catalog.session() as session:  # b2 rewritten since the master combined it
        session.execute(update(Frame).where(Frame.id == 2).values(sha256="e" * 64))
    with catalog.reading() as session:
        found = input_stats(session, [1, 3, 42])
    assert sorted(found) == [1, 3]
    assert [(i.frame_id, i.path, i.changed, i.stats is not None) for i in found[1]] == [
        (1, path(1), False, True),
        (2, path(2), True, True),  # the statistics of the version combined
        (3, path(3), False, True),
        (4, path(4), False, True),
    ]
    assert [i.stats.level if i.stats else None for i in found[3]] == [20011.0, 20012.0, None]
    assert {i.master_id for i in found[3]} == {3}


def test_the_frames_a_master_set_aside(catalog: Catalog) -> None:
    add_frame_qa_rows(catalog)
    with catalog.reading() as session:
        found = set_aside_of(session, [1, 2, 3])
    assert list(found) == [1]
    (b5,) = found[1]
    assert (b5.master_id, b5.frame_id, b5.path, b5.sha256, b5.rule, b5.reason) == (
        1,
        5,
        path(5),
        sha(5),
        "outlier_level",
        B5_REASON,
    )
    assert b5.stats is not None
    assert b5.stats.level == 812.0


def test_the_usable_frames_measured_per_kind(catalog: Catalog) -> None:
    add_frame_qa_rows(catalog)
    with catalog.reading() as session:
        # b6 is marked bad (not usable); b7's current content and f3 are not measured
        assert measured_counts(session) == {"bias": (6, 5), "dark": (3, 3), "flat": (3, 2)}
        assert measured_counts(session, ("light",)) == {"light": (1, 0)}
        assert measured_counts(session, as_of=T0) == {"bias": (6, 0), "dark": (3, 0), "flat": (3, 0)}


def test_reason_text_names_the_rule_once() -> None:
    assert reason_text("outlier_level", "level 812 ADU") == "level 812 ADU (outlier_level rule)"
    assert reason_text("outlier_level", "level 812 ADU (outlier_level rule)") == (
        "level 812 ADU (outlier_level rule)"
    )
    assert reason_text("wrong_type", None) == "(wrong_type rule)"
    both = "level 812 ADU (outlier_level rule); level changes by 40 ADU (light_leak rule)"
    assert reason_text("outlier_level", both) == both
