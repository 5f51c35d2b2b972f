"""The report as one self-contained HTML page: images inline as base64 PNG, styles inline, no script.

Every value that comes from a header, a path, a reason or the catalog goes through :func:`esc`
(``html.escape``): a FILTER card of ``<script>`` shows as text. Sections: masters (preview, statistics,
inputs, rejected fraction), the frame QA (the frames set aside with rule and reason, the statistics of each
master's frames), the bias level and dark current over time (plots and their points), calibrated
lights (raw and calibrated previews, the masters used with ΔT, Δt and scale), problems with their reasons,
and the runs with their parameters and software versions.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccdcal._version import __version__
from ccdcal.report.data import KINDS, LightEntry, MasterEntry, MasterLink, Problem, ReportData, RunEntry
from ccdcal.report.frameqa import FrameQaData, MasterQa
from ccdcal.report.levels import DriftSeries
from ccdcal.report.plots import DRIFT_TITLES
from ccdcal.report.previews import Preview

#: A preview, or why there is none.
Shown = Preview | str


@dataclass
class Images:
    """The pictures of a report: previews by master id and by calibration id, drift plots by kind."""

    masters: dict[int, Shown] = field(default_factory=dict)
    raw: dict[int, Shown] = field(default_factory=dict)
    calibrated: dict[int, Shown] = field(default_factory=dict)
    drift: dict[str, bytes] = field(default_factory=dict)

    def count(self) -> int:
        """How many ``<img>`` elements the page holds."""
        previews = [*self.masters.values(), *self.raw.values(), *self.calibrated.values()]
        return sum(isinstance(p, Preview) for p in previews) + len(self.drift)


def esc(value: Any) -> str:
    """Text for HTML (quotes escaped too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def _num(value: float | None, spec: str = ".6g", unit: str = "") -> str:
    return "NA" if value is None else f"{value:{spec}}{unit}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _time(value: dt.datetime | None) -> str:
    return "NA" if value is None else value.isoformat(sep=" ", timespec="seconds")


def _name(path: str | None) -> str:
    return Path(path).name if path else "NA"


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, from its IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _img(png: bytes, width: int, height: int, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" alt="{esc(alt)}">'


def _figure(shown: Shown | None, alt: str, caption: str) -> str:
    if isinstance(shown, Preview):
        about = (
            f"zscale {shown.limits[0]:.6g} … {shown.limits[1]:.6g} · {shown.shape[1]}×{shown.shape[0]} px"
            + (f" shown {shown.width}×{shown.height}" if shown.width != shown.shape[1] else "")
            + (f" · {shown.note}" if shown.note else "")
        )
        picture = _img(shown.png, shown.width, shown.height, alt)
    else:
        about = ""
        picture = f'<div class="nopreview">no preview: {esc(shown or "not available")}</div>'
    return (
        f"<figure>{picture}<figcaption><b>{esc(caption)}</b>"
        f"{'<br>' + esc(about) if about else ''}</figcaption></figure>"
    )


def _rows(pairs: Iterable[tuple[str, str]]) -> str:
    """Key/value table rows; values are already HTML."""
    return "".join(f"<tr><th>{esc(key)}</th><td>{value}</td></tr>" for key, value in pairs)


def _badges(status: str, is_bad: bool) -> str:
    badges = f'<span class="badge {esc(status)}">{esc(status)}</span>'
    return badges + (' <span class="badge bad">marked bad</span>' if is_bad else "")


def render(data: ReportData, images: Images) -> str:
    """The whole page."""
    problems = len(data.problems)
    nav = " · ".join(
        f'<a href="#{anchor}">{esc(title)}</a>'
        for anchor, title in (
            ("masters", f"Masters ({len(data.masters)})"),
            ("frameqa", f"Frame QA ({_set_aside_count(data.frame_qa)} set aside)"),
            ("drift", "Bias level and dark current"),
            ("lights", f"Calibrated lights ({len(data.lights)})"),
            ("problems", f"Problems ({problems})"),
            ("runs", f"Runs ({len(data.runs)})"),
        )
    )
    body = "".join(
        [
            _masters(data.masters, images),
            _frame_qa(data),
            _drift(data, images),
            _lights(data.lights, images),
            _problems(data),
            _runs(data.runs),
        ]
    )
    title = f"ccdcal report — {data.scope.describe()}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{esc(title)}</h1>"
        f"<p>Catalog <code>{esc(data.catalog)}</code> · generated {esc(_time(data.generated_at))} UTC "
        f"by ccdcal {esc(__version__)}</p><nav>{nav}</nav></header>\n"
        f"<main>{body}</main>\n</body>\n</html>\n"
    )


# -- masters ----------------------------------------------------------------------------------------------


def _masters(masters: list[MasterEntry], images: Images) -> str:
    parts = [f'<section id="masters"><h2>Masters ({len(masters)})</h2>']
    if not masters:
        parts.append("<p>No master in this scope.</p>")
    for kind in KINDS:
        of_kind = [m for m in masters if m.kind == kind]
        if of_kind:
            parts.append(f"<h3>{esc(kind.capitalize())} ({len(of_kind)})</h3><div class='grid'>")
            parts += [_master(m, images.masters.get(m.id)) for m in of_kind]
            parts.append("</div>")
    parts.append("</section>\n")
    return "".join(parts)


def _master(m: MasterEntry, shown: Shown | None) -> str:
    params = m.parameters
    clipping = ", ".join(
        f"{key} {params[key]}"
        for key in ("sigma_lower", "sigma_upper", "maxiters", "cenfunc", "stdfunc")
        if key in params
    )
    rows = [
        ("group", esc(m.label) + (" · with bias" if m.includes_bias else "")),
        ("inputs", esc(m.n_inputs)),
        ("median", esc(_num(m.median))),
        ("mean", esc(_num(m.mean))),
        ("std", esc(_num(m.std, ".4g"))),
        ("rejected", esc(_num(m.rejected_fraction, ".3%"))),
        ("CCD temp (mean)", esc(_num(m.ccd_temp_mean, ".2f", " °C"))),
        ("DATE-OBS (mean)", esc(_time(m.date_obs_mean))),
        ("method", esc(m.method) + (f"<br><small>{esc(clipping)}</small>" if clipping else "")),
        ("built", f"{esc(_time(m.created_at))} (run {esc(_num(m.run_id, 'd'))})"),
    ]
    rows += [
        (
            f"{role} subtracted",
            f'<span title="{esc(path)}">{esc(_name(path))}</span>'
            + (f" × {esc(_num(scale))}" if scale is not None else ""),
        )
        for role, path, scale in m.calibrators
    ]
    if m.superseded_reason:
        rows.append(("superseded because", esc(m.superseded_reason)))
    if m.is_bad:
        rows.append(("bad because", esc(m.bad_reason or "")))
    warnings = "".join(f"<li>{esc(w)}</li>" for w in m.warnings)
    inputs = "".join(
        f'<li title="{esc(path)}">{esc(_name(path))}'
        + (' <span class="warn">changed since</span>' if changed else "")
        + "</li>"
        for path, changed in m.inputs
    )
    context = "" if m.in_scope else '<p class="note">shown because a light in this report used it</p>'
    return (
        f'<article class="card" id="master-{m.id}"><h4 title="{esc(m.path)}">{esc(_name(m.path))}</h4>'
        f"<p>{_badges(m.status, m.is_bad)} version {esc(m.version)} · id {m.id}</p>{context}"
        f"{_figure(shown, f'master {m.kind} {_name(m.path)}', 'master ' + m.kind)}"
        f'<table class="kv">{_rows(rows)}</table>'
        + (f'<ul class="warnings">{warnings}</ul>' if warnings else "")
        + f"<details><summary>{len(m.inputs)} input frames</summary><ul class='files'>{inputs}</ul>"
        f"</details></article>"
    )


# -- frame QA ---------------------------------------------------------------------------------------------


def _set_aside_count(qa: FrameQaData) -> int:
    return sum(d.decision == "set_aside" for d in qa.decisions)


def _frame_name(frame_id: int, path: str) -> str:
    return f'<span title="{esc(path)}">frame:{frame_id} {esc(_name(path))}</span>'


def _frame_qa(data: ReportData) -> str:
    qa = data.frame_qa
    now = data.scope.run_id is None and data.scope.since is None
    parts = [f'<section id="frameqa"><h2>Frame QA ({_set_aside_count(qa)} set aside)</h2>']
    parts.append(
        "<p>Calibration frames the frame-QA rules set aside before they were combined into a master, each "
        "with its rule and reason, and those a person kept against a rule (<code>ccdcal mark-good</code>), "
        + ("as decided now (the newest decision about each usable frame's current content)." if now else "")
        + ("" if now else "as decided in this scope.")
        + "</p>"
    )
    if qa.decisions:
        rows = "".join(
            f"<tr><td>{_frame_name(d.frame_id, d.path)}</td><td>{esc(d.kind)}</td><td>{esc(d.rule)}</td>"
            f"<td>{esc(d.reason)}</td><td>{esc(d.decision.replace('_', ' '))}</td>"
            f"<td>{esc(d.decided_by)}</td><td>{esc(_time(d.decided_at))}</td>"
            f"<td>{esc(_num(d.run_id, 'd'))}</td></tr>"
            for d in qa.decisions
        )
        parts.append(
            "<table class='grid-table qa'><tr><th>frame</th><th>kind</th><th>rule</th><th>reason</th>"
            f"<th>decision</th><th>decided by</th><th>when (UTC)</th><th>run</th></tr>{rows}</table>"
        )
    else:
        parts.append("<p>No frame set aside.</p>")
    if qa.masters:
        parts.append(
            "<h3>The frames of each master</h3><p>The statistics of each input as combined (median level, "
            "noise, noise of its difference from the group's median frame, level change across the "
            "detector, saturated share, and a flat's signal after the bias), then the frames its group "
            "set aside.</p>"
        )
        parts += [_master_frames(m) for m in qa.masters]
    if qa.not_measured:
        parts.append(
            f"<p class='note'>{_count(qa.not_measured, 'master')} shown above with inputs never measured "
            "(built before frame QA).</p>"
        )
    parts.append("</section>\n")
    return "".join(parts)


def _master_frames(master: MasterQa) -> str:
    flat = master.kind == "flat"
    headings = ["frame", "level", "noise", "diff noise", "gradient", "saturated", *(["signal"] * flat), ""]
    rows = []
    for f in master.frames:
        note = "changed since" if f.changed else ""
        if f.rule is not None:
            note = f"set aside: {f.reason}"
        cells = [
            _frame_name(f.frame_id, f.path),
            esc(_num(f.level)),
            esc(_num(f.noise, ".4g")),
            esc(_num(f.diff_noise, ".4g")),
            esc(_num(f.gradient, ".4g")),
            esc(_num(f.saturated_fraction, ".3%")),
            *([esc(_num(f.signal))] * flat),
            esc(note),
        ]
        style = " class='aside'" if f.rule is not None else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    head = "".join(f"<th>{esc(h)}</th>" for h in headings)
    return (
        f'<h4><a href="#master-{master.master_id}" title="{esc(master.path)}">{esc(_name(master.path))}</a>'
        f" · {esc(master.kind)} {esc(master.label)}</h4>"
        f"<table class='grid-table qa'><tr>{head}</tr>{''.join(rows)}</table>"
    )


# -- drift ------------------------------------------------------------------------------------------------


def measured(value: float, error: float | None) -> str:
    """A value with its uncertainty, to the uncertainty's second significant digit: ``499.9928 ± 0.0069``,
    ``0.07805 ± 0.00081``; without one (or with one of 0) the value to 6 digits."""
    if error is None or not 0 < error < math.inf:
        return f"{value:.6g}"
    decimals = 1 - math.floor(math.log10(error))
    if decimals < 0:  # an uncertainty of 100 or more: whole numbers
        return f"{value:.0f} ± {error:.0f}"
    if decimals > 12:
        return f"{value:.6g} ± {error:.2g}"
    return f"{value:.{decimals}f} ± {error:.2g}"


#: Each plot's unit, and what one of its series is.
_DRIFT_UNITS = {"bias": ("ADU", "bias group"), "dark": ("ADU/s", "camera set-up")}


def _drift(data: ReportData, images: Images) -> str:
    parts = ['<section id="drift"><h2>Bias level and dark current over time</h2>']
    parts.append(
        "<p>For each bias group and camera set-up of the masters shown above, one point per day (UTC) on "
        "which masters were built, placed at the mean DATE-OBS of their inputs. The <b>bias level</b> is "
        "the overscan level where the bias was overscan-subtracted, else the master's sigma-clipped mean. "
        "The <b>dark current</b> is the slope of the bias-subtracted master darks' sigma-clipped mean "
        "against exposure (weighted least squares, with an offset that takes up what the bias left), "
        "from each exposure's newest master built by that day; a hollow point is a dark current its darks "
        "do not resolve. Error bars are standard uncertainties.</p>"
    )
    if not data.drift:
        parts.append("<p>No bias or dark master with a DATE-OBS in this scope.</p>")
    for kind in ("bias", "dark"):
        series = [s for s in data.drift if s.kind == kind]
        if series:
            parts.append(_drift_kind(kind, series, images.drift.get(kind)))
    parts.append("</section>\n")
    return "".join(parts)


def _drift_kind(kind: str, series: list[DriftSeries], png: bytes | None) -> str:
    title = DRIFT_TITLES[kind][0]
    unit, noun = _DRIFT_UNITS[kind]
    plotted = [s for s in series if s.points]
    points = sum(len(s.points) for s in plotted)
    caption = f"{title}: {_count(len(plotted), noun)}, {_count(points, 'point')}"
    if points == 1:
        caption += (
            ". A single point: nothing to compare it with yet (a trend needs masters built on other days)"
        )
    elif len(plotted) > 1 and any(len(s.points) == 1 for s in plotted):
        caption += ". A single point for " + "; ".join(s.label for s in plotted if len(s.points) == 1)
    parts = [f"<h3>{esc(title)}</h3>"]
    if png is not None:
        picture = _img(png, *png_size(png), title)
        parts.append(f"<figure class='plot'>{picture}<figcaption>{esc(caption)}</figcaption></figure>")
    else:
        parts.append(f"<p>{esc(caption)}</p>")
    parts += [f"<p class='note'>{esc(s.label)}: {esc(note)}</p>" for s in series for note in s.notes]
    rows = []
    for entry in plotted:
        for point in entry.points:
            value = f"{measured(point.value, point.error)} {unit}"
            if not point.resolved:
                value += " (not resolved)"
            notes = "".join(f"<li>{esc(note)}</li>" for note in point.notes)
            rows.append(
                f"<tr><td>{esc(entry.label)}</td><td>{esc(point.built.isoformat())}</td>"
                f"<td>{esc(_time(point.when))}</td><td>{esc(value)}</td><td>{esc(point.source)}</td>"
                f"<td>{f'<ul>{notes}</ul>' if notes else ''}</td></tr>"
            )
    if rows:
        parts.append(
            f"<table class='grid-table levels'><tr><th>{esc(noun)}</th><th>built</th>"
            f"<th>mean DATE-OBS (UTC)</th><th>{'bias level' if kind == 'bias' else 'dark current'}</th>"
            "<th>from</th><th>notes</th></tr>" + "".join(rows) + "</table>"
        )
    return "".join(parts)


# -- lights -----------------------------------------------------------------------------------------------


def _lights(lights: list[LightEntry], images: Images) -> str:
    parts = [f'<section id="lights"><h2>Calibrated lights ({len(lights)})</h2>']
    if not lights:
        parts.append("<p>No calibrated light in this scope.</p>")
    parts += [
        _light(x, images.raw.get(x.calibration_id), images.calibrated.get(x.calibration_id)) for x in lights
    ]
    parts.append("</section>\n")
    return "".join(parts)


def _use_row(use: MasterLink) -> str:
    """One master used by a light: role, file, version and status, ΔT, Δt, scale, pinned."""
    cells = [
        esc(use.role),
        f'<a href="#master-{use.master_id}" title="{esc(use.path)}">{esc(_name(use.path))}</a>',
        f"v{esc(use.version)} {_badges(use.status, use.is_bad)}",
        esc(_num(use.delta_temp, "+.2f", " °C")),
        esc("NA" if use.delta_time is None else f"{use.delta_time / 3600:+.2f} h"),
        esc("—" if use.scale is None else f"{use.scale:.6g}"),
        "yes" if use.pinned else "no",
    ]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _light(light: LightEntry, raw: Shown | None, calibrated: Shown | None) -> str:
    meta = " · ".join(
        [
            f"filter {esc(light.filter if light.filter is not None else 'NA')}",
            f"{esc(_num(light.exptime, 'g'))} s",
            f"DATE-OBS {esc(_time(light.date_obs))}",
            f"CCD-TEMP {esc(_num(light.ccd_temp, '.1f', ' °C'))}",
            f"calibration {light.calibration_id} (run {esc(_num(light.run_id, 'd'))}, "
            f"{esc(_time(light.created_at))})",
        ]
    )
    if light.replaced_by is not None:
        calibrated = f"the file now holds the output of calibration {light.replaced_by}"
    used = "".join(_use_row(u) for u in light.masters)
    why = [f"superseded because {light.superseded_reason}"] if light.superseded_reason else []
    notes = "".join(f"<li>{esc(n)}</li>" for n in [*why, *light.notes])
    return (
        f'<article class="card wide" id="light-{light.calibration_id}">'
        f'<h4 title="{esc(light.raw_path)}">{esc(_name(light.raw_path))} → '
        f'<span title="{esc(light.output or "")}">{esc(_name(light.output))}</span></h4>'
        f"<p>{_badges(light.status, False)} {meta}</p>"
        f"<div class='pair'>{_figure(raw, 'raw ' + _name(light.raw_path), 'raw')}"
        f"{_figure(calibrated, 'calibrated ' + _name(light.output), 'calibrated')}</div>"
        "<table class='grid-table'><tr><th>step</th><th>master</th><th>version</th><th>ΔT</th>"
        f"<th>Δt</th><th>scale</th><th>pinned</th></tr>{used}</table>"
        + (f'<ul class="warnings">{notes}</ul>' if notes else "")
        + "</article>"
    )


# -- problems and runs ------------------------------------------------------------------------------------


def _problem_table(problems: list[Problem]) -> str:
    rows = "".join(
        f"<tr><td>{esc(p.category)}</td><td class='path'>{esc(p.subject)}</td><td>{esc(p.reason)}</td>"
        f"<td>{esc(_num(p.run_id, 'd'))}</td></tr>"
        for p in problems
    )
    return (
        "<table class='grid-table'><tr><th>what</th><th>file or group</th><th>reason</th><th>run</th></tr>"
        f"{rows}</table>"
    )


def _problems(data: ReportData) -> str:
    parts = [f'<section id="problems"><h2>Problems ({len(data.problems)})</h2>']
    if data.scope.run_id is None and data.scope.since is None:
        source = f"the options of run {data.plan_run}" if data.plan_run is not None else "default options"
        parts.append(
            "<p>As the catalog is now: frames rejected, missing, unclassified or marked bad, and what "
            f"<code>ccdcal process</code> could not do with {esc(source)}.</p>"
        )
    else:
        parts.append("<p>As recorded by the runs in this scope.</p>")
    parts.append(_problem_table(data.problems) if data.problems else "<p>None.</p>")
    if data.pending:
        parts.append(f"<h3>Waiting to be calibrated ({len(data.pending)})</h3>")
        parts.append(_problem_table(data.pending))
    parts.append("</section>\n")
    return "".join(parts)


def _value(value: Any) -> str:
    if value is None:
        return "none"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _runs(runs: list[RunEntry]) -> str:
    parts = [f'<section id="runs"><h2>Runs ({len(runs)})</h2>']
    if not runs:
        parts.append("<p>No run in this scope.</p>")
    for run in runs:
        versions = ", ".join(f"{name} {version or 'NA'}" for name, version in run.versions.items())
        rows = [
            ("status", esc(run.status)),
            ("started", esc(_time(run.started_at)) + " UTC"),
            ("finished", esc(_time(run.finished_at)) + " UTC"),
            ("software", esc(versions)),
            ("host / user", f"{esc(run.host or 'NA')} / {esc(run.user or 'NA')}"),
        ]
        rows += [(f"--{key.replace('_', '-')}", esc(_value(value))) for key, value in run.arguments.items()]
        context = "" if run.in_scope else " <small>(made what is shown)</small>"
        parts.append(
            f'<article class="card wide" id="run-{run.id}"><h4>run {run.id}: {esc(run.command)}{context}</h4>'
            f'<table class="kv">{_rows(rows)}</table></article>'
        )
    parts.append("</section>\n")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#f4f5f7;padding:1em 2em}header a{color:#9cc4ff}
header code{color:#ffd27f}h1{margin:0 0 .3em;font-size:1.5em}main{padding:0 2em 2em}
h2{border-bottom:2px solid #1d2330;padding-top:1em}h4{margin:.2em 0;word-break:break-all}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:1em}
.card{background:#fff;border-radius:6px;box-shadow:0 1px 3px #0002;padding:.8em;margin-bottom:1em}
.card p{margin:.3em 0;font-size:.9em}figure{margin:.4em 0}
figure img{width:100%;max-width:420px;height:auto;image-rendering:pixelated;background:#000}
.plot img{max-width:800px;image-rendering:auto;background:#fff}
figcaption{font-size:.78em;color:#555}.pair{display:flex;gap:1em;flex-wrap:wrap}.pair figure{flex:1 1 300px}
table{border-collapse:collapse;font-size:.85em}.kv th{text-align:left;padding-right:1em;vertical-align:top}
.kv th,.kv td{padding:.1em .3em;border-bottom:1px solid #eee}
.grid-table th,.grid-table td{border:1px solid #ddd;padding:.2em .5em;text-align:left}
.grid-table th{background:#eef0f4}.path{word-break:break-all}
.badge{border-radius:3px;padding:0 .4em;font-size:.8em;background:#dde}.badge.current{background:#cfe9d2}
.badge.superseded{background:#f1e2c6}.badge.bad{background:#f5c2c2}
.warnings{color:#8a4b00;font-size:.85em}.warn{color:#b00}.note{color:#555;font-style:italic}
.nopreview{background:#eee;color:#555;padding:2em 1em;font-size:.85em}
details{font-size:.85em}.files{columns:2;margin:.3em 0}.levels ul{margin:0;padding-left:1.1em}
.qa td{font-variant-numeric:tabular-nums}.qa tr.aside td{background:#fbe9d8}
"""
