"""The bias level and dark current plots: a PNG of fixed width, drawn without pyplot (no global figure
state)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccdcal.report.html import png_size
from ccdcal.report.levels import DriftPoint, DriftSeries
from ccdcal.report.plots import drift_plot

#: The checkout these tests belong to, first on a child interpreter's path (not another installed copy).
ROOT = Path(__file__).resolve().parents[2]


def series(n: int) -> list[DriftSeries]:
    nights = [dt.datetime(2026, 3, d, 20) for d in (1, 8, 15)]
    return [
        DriftSeries(
            "dark",
            f"b2x2 g1{i}0 C-10",
            [
                DriftPoint(t, 0.08 + 0.001 * i, 0.002, t.date(), "2 exposures", (i,), resolved=i != 1)
                for t in nights
            ],
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(("n", "height"), [(1, 382), (2, 382), (5, 426)])
def test_drift_plot_size_grows_with_the_legend(n: int, height: int) -> None:
    assert png_size(drift_plot("dark", series(n))) == (800, height)


def test_one_night_and_no_pyplot(tmp_path: Path) -> None:
    code = (
        "import datetime as dt, sys\n"
        "from ccdcal.report.levels import DriftPoint, DriftSeries\n"
        "from ccdcal.report.plots import drift_plot\n"
        "when = dt.datetime(2026, 3, 14, 18)\n"
        "point = DriftPoint(when, 500.0, None, when.date(), 'median', (1,))\n"
        "png = drift_plot('bias', [DriftSeries('bias', 'b1x1', [point])])\n"
        "assert png.startswith(bytes([137]) + b'PNG')\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "False\n", "")
