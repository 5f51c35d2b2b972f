"""The page: every catalog value escaped, images inline, one <img> per picture."""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from ccdcal.report.data import (
    DriftSeries,
    LightEntry,
    MasterEntry,
    MasterLink,
    Problem,
    ReportData,
    ReportScope,
    RunEntry,
)
from ccdcal.report.html import Images, esc, png_size, render
from ccdcal.report.levels import DriftPoint
from ccdcal.report.plots import drift_plot
from ccdcal.report.previews import render as render_preview

EVIL = '<script>alert("x")</script>&'
WHEN = dt.datetime(2026, 3, 14, 18, 0, 0)


class Tags(HTMLParser):
    """The tags of a page, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def master(**changes: object) -> MasterEntry:
    values: dict[str, object] = {
        "id": 1,
        "kind": "flat",
        "path": f"/m/{EVIL}.fits",
        "version": 2,
        "status": "current",
        "is_bad": True,
        "bad_reason": EVIL,
        "includes_bias": False,
        "keys": {"filter": EVIL},
        "label": f"b1x1 filter {EVIL}",
        "n_inputs": 1,
        "median": 1.0,
        "mean": 0.99,
        "std": 0.01,
        "rejected_fraction": 0.0123,
        "ccd_temp_mean": -10.0,
        "date_obs_mean": WHEN,
        "created_at": WHEN,
        "run_id": 3,
        "method": "sigma_clipped_median",
        "parameters": {"sigma_lower": 3.0, "qa": {"warnings": [EVIL]}},
        "inputs": [(f"/raw/{EVIL}.fits", True)],
        "calibrators": [("bias", f"/m/{EVIL}_bias.fits", None)],
    }
    return MasterEntry(**(values | changes))  # type: ignore[arg-type]


def data() -> ReportData:
    use = MasterLink("flat", 1, f"/m/{EVIL}.fits", 2, "current", True, -0.25, -5400.0, None, False)
    light = LightEntry(
        calibration_id=7,
        frame_id=9,
        raw_path=f"/raw/{EVIL}_light.fits",
        hdu=0,
        output=f"/cal/{EVIL}_cal.fits",
        status="current",
        filter=EVIL,
        exptime=60.0,
        date_obs=WHEN,
        ccd_temp=-10.2,
        created_at=WHEN,
        run_id=3,
        masters=[use],
        notes=[EVIL],
        superseded_reason=f"new flat {EVIL}",
    )
    run = RunEntry(
        3,
        "process",
        "ok",
        WHEN,
        WHEN,
        {"output_dir": EVIL, "bias": None},
        {"ccdcal": "0.1"},
        EVIL,
        EVIL,
        {},
        True,
    )
    return ReportData(
        catalog=EVIL,
        scope=ReportScope(),
        generated_at=WHEN,
        runs=[run],
        masters=[
            master(),
            master(id=2, kind="bias", path="/m/b.fits", is_bad=False, superseded_reason="input X marked bad"),
        ],
        lights=[light],
        drift=[
            DriftSeries(
                "bias", EVIL, [DriftPoint(WHEN, 500.0, 0.01, WHEN.date(), EVIL, (2,), notes=(EVIL,))], [EVIL]
            )
        ],
        problems=[Problem("rejected", f"/raw/{EVIL}", EVIL, 1)],
        pending=[Problem("to calibrate", f"/raw/{EVIL}", EVIL, 1)],
    )


def test_every_catalog_value_is_escaped_and_every_picture_is_an_inline_png() -> None:
    report = data()
    shown = render_preview(np.arange(12, dtype=np.float32).reshape(3, 4), 0)
    images = Images(
        masters={1: shown, 2: "/m/b.fits is missing"},
        raw={7: shown},
        calibrated={7: shown},
        drift={"bias": drift_plot("bias", report.drift)},
    )
    page = render(report, images)
    assert "<script" not in page
    assert '"x"' not in page
    assert esc(EVIL) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;"
    assert page.count(esc(EVIL)) >= 15
    parsed = Tags()
    parsed.feed(page)
    images_found = [attrs for tag, attrs in parsed.tags if tag == "img"]
    assert len(images_found) == images.count() == 4
    for attrs in images_found:
        assert re.fullmatch(r"data:image/png;base64,[A-Za-z0-9+/=]+", attrs["src"] or "")
    sizes = [(a["width"], a["height"]) for a in images_found]
    assert sizes == [("4", "3"), ("800", "382"), ("4", "3"), ("4", "3")]  # master, plot, light before/after
    assert "no preview: /m/b.fits is missing" in "".join(parsed.text)
    assert "ΔT" in page
    assert "-0.25 °C" in page
    assert "-1.50 h" in page  # Δt of -5400 s
    assert "1.230%" in page
    assert "--output-dir" in page
    assert "none" in page  # --bias None
    assert f"<li>superseded because new flat {esc(EVIL)}</li>" in page
    assert "<tr><th>superseded because</th><td>input X marked bad</td></tr>" in page


def test_png_size_reads_the_header() -> None:
    shown = render_preview(np.zeros((3, 5), np.float32), 0)
    assert png_size(shown.png) == (5, 3)
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(b"GIF89a" + bytes(30))
