"""The report's plots: the bias level and the dark current over time, one line per bias group or camera
set-up, each point with its error bar (hollow: a dark current its darks do not resolve), as PNG bytes.

matplotlib is used through :class:`matplotlib.figure.Figure` and the Agg canvas only — never
``pyplot`` — so a report leaves no global figure state behind and works without a display.
"""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

from ccdcal.report.levels import DriftSeries

#: What each kind's plot shows.
DRIFT_TITLES = {
    "bias": ("Bias level", "overscan level, else clipped mean [ADU]"),
    "dark": ("Dark current: slope of the master darks' level against exposure", "dark current [ADU/s]"),
}

_WIDTH_IN, _HEIGHT_IN, _DPI = 8.0, 3.6, 100
#: The narrowest time axis: masters of one night are shown on a two-day axis.
_MIN_SPAN = dt.timedelta(days=2)


def drift_plot(kind: str, series: list[DriftSeries]) -> bytes:
    """A PNG of the ``kind`` series over time (DATE-OBS of the masters, UTC), with a legend below.

    Parameters
    ----------
    kind : str
        ``bias`` or ``dark`` (see :data:`DRIFT_TITLES`).
    series : list of DriftSeries
        The bias groups or camera set-ups, each with at least one point.
    """

    title, ylabel = DRIFT_TITLES[kind]
    legend_rows = (len(series) + 1) // 2
    figure = Figure(figsize=(_WIDTH_IN, _HEIGHT_IN + 0.22 * legend_rows), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for entry in series:
        points = sorted(entry.points, key=lambda p: p.when)
        times = np.array([p.when for p in points], dtype="datetime64[ms]")
        values = np.array([p.value for p in points], dtype=float)
        errors = np.array([p.error or 0.0 for p in points], dtype=float)
        (line,) = axes.plot(times, values, marker="o", markersize=5, linewidth=1.2, label=entry.label)
        for resolved in (True, False):
            chosen = np.array([p.resolved is resolved for p in points])
            if chosen.any():
                axes.errorbar(
                    times[chosen],
                    values[chosen],
                    yerr=errors[chosen],
                    fmt="o",
                    markersize=5,
                    capsize=3,
                    color=line.get_color(),
                    markerfacecolor=line.get_color() if resolved else "white",
                )
    every = [p.when for entry in series for p in entry.points]
    if every and max(every) - min(every) < _MIN_SPAN:  # one night: a window of days, not of minutes
        middle = min(every) + (max(every) - min(every)) / 2
        axes.set_xlim(float(date2num(middle - _MIN_SPAN / 2)), float(date2num(middle + _MIN_SPAN / 2)))
    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.set_title(title, fontsize=11)
    axes.set_xlabel("mean DATE-OBS of the inputs (UTC)", fontsize=9)
    axes.set_ylabel(ylabel, fontsize=9)
    axes.ticklabel_format(axis="y", useOffset=False, style="plain")
    axes.grid(True, alpha=0.3)
    axes.tick_params(labelsize=8)
    if series:
        figure.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()
