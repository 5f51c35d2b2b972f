"""The report of a processed night: what it holds, and that a real browser renders every image."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccdcal.catalog.db import Catalog
from ccdcal.lights.options import ProcessOptions
from ccdcal.lights.pipeline import process
from ccdcal.report import build_report
from ccdcal.report.html import esc
from tests.report.conftest import REJECTED_NAME, Night, make_night

#: 7 master previews, a raw and a calibrated preview for each of the 3 lights, the bias and dark plots.
EXPECTED_IMAGES = 7 + 2 * 3 + 2

#: Added to a copy of the report (never to the product): after load, count the images the browser decoded.
IMAGE_CHECK = (
    "<script>window.addEventListener('load', () => {"
    " const images = Array.from(document.images);"
    " const loaded = images.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0);"
    " document.body.setAttribute('data-images', String(images.length));"
    " document.body.setAttribute('data-images-loaded', String(loaded.length));"
    "});</script>"
)


def test_report_of_the_catalog_now(night: Night, tmp_path: Path) -> None:
    filters = list(warnings.filters)
    with Catalog(night.db) as catalog:
        summary = build_report(catalog, tmp_path / "report.html")
    assert warnings.filters == filters  # set once around the preview threads, then restored
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert (summary.masters, summary.lights, summary.problems, summary.pending, summary.runs) == (
        7,
        3,
        2,
        0,
        1,
    )
    assert (summary.images, summary.unavailable, summary.scope) == (EXPECTED_IMAGES, [], "the catalog now")
    assert summary.size == len(page.encode("utf-8"))
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == page.count("<img") == EXPECTED_IMAGES
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(src|href)=\"(?!data:|#)", page)  # self-contained: nothing fetched
    assert "<script" not in page
    assert esc(REJECTED_NAME) in page
    assert REJECTED_NAME not in page
    assert "no dark at 120 s, -10.2 °C ±2 (nearest: 60 s at -10.07 °C)" in page
    for name in ("master_bias_b2x2_g120_sNA_C-10.fits", "Light_003_cal.fits", "Light_120s.fits"):
        assert name in page
    assert summary.size < 600_000


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    pytest.skip("chromium is not installed (apt-get install chromium; `make tools` installs it when it can)")


def browse(tmp_path: Path, page: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on a local page, with its profile and caches in tmp_path."""
    home = tmp_path / "browser-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home), "XDG_CACHE_HOME": str(home)}
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",  # needed as root (CI containers); the page is our own file
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'browser-profile'}",
        *options,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=180, check=False)


def test_chromium_renders_every_image(night: Night, tmp_path: Path) -> None:
    with Catalog(night.db) as catalog:
        build_report(catalog, tmp_path / "report.html")
    report = tmp_path / "report.html"
    checked = tmp_path / "checked.html"
    checked.write_text(report.read_text(encoding="utf-8").replace("</body>", IMAGE_CHECK + "</body>"))

    dumped = browse(tmp_path, checked, "--virtual-time-budget=10000", "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    total = re.search(r'data-images="(\d+)"', dumped.stdout)
    loaded = re.search(r'data-images-loaded="(\d+)"', dumped.stdout)
    assert total is not None, dumped.stdout[:2000]
    assert loaded is not None
    assert (int(total.group(1)), int(loaded.group(1))) == (EXPECTED_IMAGES, EXPECTED_IMAGES)

    shot = tmp_path / "report.png"
    taken = browse(tmp_path, report, "--window-size=1280,2400", f"--screenshot={shot}")
    assert taken.returncode == 0, taken.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.shape == (2400, 1280, 3)
    assert pixels.std() > 10  # not blank
    grey = (pixels[..., 0] == pixels[..., 1]) & (pixels[..., 1] == pixels[..., 2])
    levels = np.unique(pixels[..., 0][grey])
    assert levels.size > 200  # the zscale previews: hundreds of grey levels, not text on a background


def test_report_needs_no_pyplot(night: Night, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from ccdcal.catalog.db import Catalog\n"
        "from ccdcal.report import build_report\n"
        f"with Catalog({str(night.db)!r}) as catalog:\n"
        "    build_report(catalog, 'r.html')\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "False\n", "")


def test_missing_files_and_replaced_outputs(tmp_path: Path) -> None:
    night = make_night(tmp_path / "night", unmatched=False)
    with Catalog(night.db) as catalog:
        again = process(
            catalog,
            ProcessOptions(masters_dir=night.masters, output_dir=night.calibrated, jobs=1, redo=True),
        )
        (night.masters / "master_dark_b2x2_g120_2s_C-10.fits").unlink()
        first = build_report(catalog, tmp_path / "first.html", run_id=night.process_run)
    assert again.run_id == night.process_run + 1
    # The first run's outputs were replaced by the redo: their files hold the new calibrations.
    assert (first.masters, first.lights) == (7, 3)
    missing = str(night.masters / "master_dark_b2x2_g120_2s_C-10.fits")
    assert first.unavailable == [(missing, f"{missing} is missing")]
    assert first.images == 6 + 3 + 2  # 6 masters, 3 raw lights (no calibrated: replaced), 2 plots
    page = (tmp_path / "first.html").read_text(encoding="utf-8")
    assert page.count("the file now holds the output of calibration") == 3
    assert f"no preview: {esc(missing)} is missing" in page


@pytest.mark.postgres
def test_report_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    night = make_night(tmp_path / "night", db=pg_url)
    with Catalog(pg_url) as catalog:
        now = build_report(catalog, tmp_path / "now.html")
        one = build_report(catalog, tmp_path / "one.html", run_id=night.process_run)
        since = build_report(catalog, tmp_path / "since.html", since=dt.datetime(2000, 1, 1))
    assert (now.masters, now.lights, now.problems, now.runs, now.images) == (7, 3, 2, 1, EXPECTED_IMAGES)
    assert (one.masters, one.lights, one.problems, one.runs, one.images) == (7, 3, 1, 1, EXPECTED_IMAGES)
    assert (since.masters, since.lights, since.problems, since.runs) == (7, 3, 2, 2)
    assert now.unavailable == one.unavailable == since.unavailable == []
