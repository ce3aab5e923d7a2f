"""``tinypower report``: one self-contained HTML file for one or more sessions.

Why: a result is shared as a picture more often than as a folder. The report shows each power
trace with its windows shaded and a zoomed plot per window, the per-window energies, latency
against energy across the runs (with their Pareto front), and energy per unit of work across
scales among a curated table of published MLPerf results (:mod:`tinypower.report.published`).
It takes the folders of every kind of session: ``tinypower measure`` Tiny sessions, power
director sessions (the analyzer's readings per phase with LoadGen's window, ranging against
testing) and ``tinypower training-energy`` sessions (energy against the number of nodes).
Plots are PNGs embedded as base64 and the styles are inline: the file has no scripts and no
external references, so it opens anywhere, offline, and can be attached to an email. Numbers
that were not measured on hardware carry their ``measured_as`` label wherever they appear.
"""

from __future__ import annotations

import base64
import html
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from energy_monitor.trace import Trace, Window
from tinypower.report.plot import (
    Point,
    PowerPhase,
    pareto_front,
    pareto_png,
    power_phases_png,
    scale_out_png,
    scales_png,
    trace_png,
    window_zooms_png,
)
from tinypower.report.published import PUBLISHED
from tinypower.results.exports import TINY_BENCH_FOLDERS, StoredSession, load_session
from tinypower.results.power_logs import PowerLogError, loadgen_window, read_mlperf_log, read_spl
from tinypower.results.record import (
    POWER_SESSION_FILE,
    TRAINING_FILE,
    RecordError,
    ResultRecord,
    check_passed,
    file_hashes,
    read_power_session,
    record_from_power_session,
    record_from_training,
)

# Every report has these sections, in this order; tests look for them in the rendered page.
SECTION_IDS = ("summary", "traces", "power", "windows", "pareto", "scales", "scaleout",
               "published", "sessions")
NOT_OK = '<span class="bad">not ok</span>'
# The files of each kind of session whose sha256 the sessions table shows.
SHOWN_FILES = ("trace.npz", "results.json", "transcript.log", "run_1/spl.txt",
               "run_1/mlperf_log_detail.txt", "training.json", "training_log.txt")


class ReportError(ValueError):
    """The report cannot be made from what was given; the message says what to give instead."""


@dataclass
class _Run:
    """One session as the report shows it."""

    number: int  # 1-based position on the command line: tells same-named runs apart
    session: StoredSession
    record: ResultRecord
    trace: Trace | None = None
    windows: list[Window] = field(default_factory=list)
    phases: list[PowerPhase] = field(default_factory=list)  # a power director session's
    power_results: dict = field(default_factory=dict)  # its results.json
    training: dict = field(default_factory=dict)  # a training session's training.json

    @property
    def label(self) -> str:
        tag = "" if self.record.measured_as == "hardware" else f" ({self.record.measured_as})"
        return (f"#{self.number} {self.record.system} {self.record.benchmark} "
                f"{self.record.scenario}{tag}")


def _load(number: int, folder: Path) -> _Run:
    if not (folder / "session.json").is_file():
        if (folder / POWER_SESSION_FILE).is_file():
            return _load_power(number, folder)
        if (folder / TRAINING_FILE).is_file():
            return _load_training(number, folder)
    session = load_session(folder)
    run = _Run(number, session, session.result())
    if run.record.scenario == "energy":
        run.trace = session.trace()  # an energy session without its trace is an error
        run.windows = session.trace_windows(run.trace)
    return run


def _load_power(number: int, folder: Path) -> _Run:
    """A director session: its record, and each phase's ``spl.txt`` readings and LoadGen window
    (seconds from the phase's first reading)."""
    try:
        server, results = read_power_session(folder)
        record = record_from_power_session(folder)
    except RecordError as exc:
        raise ReportError(str(exc)) from None
    phases = []
    for name, sub in (("ranging", "ranging"), ("testing", "run_1")):
        if not (folder / sub).is_dir():
            continue
        try:
            samples = read_spl(folder / sub / "spl.txt")
            detail = folder / sub / "mlperf_log_detail.txt"
            begin, end = loadgen_window(read_mlperf_log(detail), detail)
        except PowerLogError as exc:
            raise ReportError(f"{folder}: the {name} phase cannot be plotted ({exc})") from None
        if not samples:
            raise ReportError(f"{folder / sub / 'spl.txt'} holds no readings to plot")
        t0 = samples[0].time
        phases.append(PowerPhase(
            name, [(x.time - t0).total_seconds() for x in samples], [x.watts for x in samples],
            ((begin - t0).total_seconds(), (end - t0).total_seconds())))
    data = {"started_utc": server.get("started_utc", ""), "status": server.get("status", ""),
            "files": server.get("results") or {}}
    session = StoredSession(folder=folder, data=data, record={})
    return _Run(number, session, record, phases=phases, power_results=results)


def _load_training(number: int, folder: Path) -> _Run:
    try:
        record = record_from_training(folder)
        data = json.loads((folder / TRAINING_FILE).read_text())
    except (RecordError, json.JSONDecodeError) as exc:
        raise ReportError(str(exc)) from None
    meta = {"started_utc": data.get("recorded_utc", ""), "files": file_hashes(folder),
            "status": "complete" if record.valid else "invalid"}
    return _Run(number, StoredSession(folder=folder, data=meta, record={}), record,
                training=data)


def render_report(session_folders: Sequence[Path]) -> str:
    """The report's HTML for the given session folders."""
    if not session_folders:
        raise ReportError("give at least one session folder")
    runs = [_load(i, Path(f)) for i, f in enumerate(session_folders, start=1)]
    if not any(r.trace is not None or r.phases or r.training for r in runs):
        raise ReportError(
            "none of the sessions has a power trace (they are "
            + ", ".join(sorted({r.record.scenario or "unknown" for r in runs}))
            + " sessions): give at least one energy session, e.g. from "
            "`tinypower measure --mode performance,energy`, a power session from "
            "`tinypower measure --sut`, or a `tinypower training-energy` session"
        )
    body = "\n".join((
        _summary(runs), _traces(runs), _power(runs), _windows(runs), _pareto(runs),
        _scales(runs), _scale_out(runs), _published(), _sessions(runs),
    ))
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>tinypower report</title><style>{_CSS}</style></head><body>\n"
        f"<h1>tinypower report</h1><p class=\"meta\">{len(runs)} session(s), made {made}</p>\n"
        f"{body}\n</body></html>\n"
    )


def build_report(session_folders: Sequence[Path], out: Path) -> Path:
    """Write the report to ``out`` and return its path."""
    text = render_report(session_folders)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


# --------------------------------------------------------------------------------------------
# Sections


def _e(value: object) -> str:
    return html.escape(str(value))


def _img(png: bytes, alt: str, css: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{css}" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _badge(measured_as: str) -> str:
    return f'<span class="badge badge-{_e(measured_as)}">{_e(measured_as.upper())}</span>'


def _section(section_id: str, title: str, content: str) -> str:
    return f'<section id="{section_id}"><h2>{_e(title)}</h2>\n{content}\n</section>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table; cells are HTML already (escape text with :func:`_e` first)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _value(record: ResultRecord) -> str:
    """The headline value, with its expanded uncertainty where the record has one."""
    if record.value is None:
        return "-"
    u = record.extras.get("uncertainty")
    if isinstance(u, int | float):
        return f"{record.value:.4g} ± {u:.3g} {record.unit} (k=2)"
    return f"{record.value:.4g} {record.unit}"


def _meter(record: ResultRecord) -> str:
    """The meter as it identified itself, with its driver's verification level."""
    level = record.extras.get("verification")
    return f"{record.meter or '-'}" + (f" [{level}]" if level else "")


def _energy_per_work_j(run: _Run) -> float | None:
    """Energy per unit of work in J: per inference (Tiny), per query (SingleStream and
    MultiStream), per sample (Offline and Server: average W / samples per second)."""
    r = run.record
    if r.value is None:
        return None
    per_unit = {"uJ/inf": 1e-6, "mJ/query": 1e-3, "J/query": 1.0}.get(r.unit)
    if per_unit is not None:
        return r.value * per_unit
    throughput = r.extras.get("throughput_samples_per_s")
    if r.unit == "W" and throughput:
        return r.value / float(throughput)
    return None


def _summary(runs: list[_Run]) -> str:
    not_hw = sorted({r.record.measured_as for r in runs} - {"hardware"})
    banner = (
        '<p class="banner">These numbers were not measured on hardware: they are '
        + " and ".join(f"<b>{_e(k)}</b>" for k in not_hw)
        + ". They show how the tool works, not how a real board performs.</p>"
        if not_hw else ""
    )
    rows = [
        [_e(f"#{r.number}"), _e(r.record.system), _e(r.record.benchmark), _e(r.record.scenario),
         _e(_value(r.record)),
         "valid" if r.record.valid else
         f'<span class="bad">invalid: {_e(", ".join(r.record.failed_rules))}</span>',
         _badge(r.record.measured_as), _e(r.session.name)]
        for r in runs
    ]
    table = _table(("run", "system", "benchmark", "mode", "result", "validity", "measured as",
                    "session"), rows)
    return _section("summary", "Summary", banner + table)


def _traces(runs: list[_Run]) -> str:
    parts = []
    for r in runs:
        if r.trace is None:
            continue
        title = (f"{r.label}: median {_value(r.record)}, "
                 f"{r.trace.sample_rate_hz:g} samples/s")
        zooms = _img(window_zooms_png(
            r.trace, r.windows,
            [f"window {k}: {w.duration_s:.3f} s, N={w.work_count}" for k, w in enumerate(r.windows)]
        ), f"each window of {r.label} zoomed") if r.windows else "<p>No scored windows.</p>"
        parts.append(
            f'<div class="run" id="trace-{r.number}">'
            f"<h3>{_e(r.label)} {_badge(r.record.measured_as)}</h3>"
            f"{_img(trace_png(r.trace, r.windows, title), 'power trace of ' + r.label)}"
            f'<p class="meta">Each window zoomed, with a margin either side; the orange lines '
            f"are its timestamp edges.</p>{zooms}</div>"
        )
    return _section("traces", "Power traces and windows", "\n".join(parts))


def _power(runs: list[_Run]) -> str:
    parts = []
    for r in (r for r in runs if r.phases):
        phases = r.power_results.get("phases") or {}
        rows = []
        for phase in r.phases:
            m = next(iter((phases.get(phase.name) or {}).values()), {})
            rows.append([
                _e(phase.name), _e(m.get("scenario", "-")),
                _e(f"{m['value']:.4g} {m['unit']}" if "value" in m else m.get("error", "-")),
                _e(f"{m['average_power_w']:.3f}" if "average_power_w" in m else "-"),
                _e(m.get("samples_in_window", "-")), _e(f"{m.get('window_s', 0):.1f}"),
                _e(len(phase.power_w)),
            ])
        checks = "".join(
            f"<li>{'ok' if check_passed(c) else NOT_OK} "
            f"{_e(c.get('name'))} ({_e(c.get('kind'))}): {_e(c.get('message'))}</li>"
            for c in r.power_results.get("checks") or [])
        bound = r.record.alignment_bound_s
        parts.append(
            f'<div class="run" id="power-{r.number}">'
            f"<h3>{_e(r.label)} {_badge(r.record.measured_as)}</h3>"
            + _img(power_phases_png(r.phases, f"{r.label}: {_value(r.record)}"),
                   f"analyzer readings of {r.label}, ranging and testing")
            + '<p class="meta">The analyzer\'s readings (spl.txt) of each phase; shaded: '
              "LoadGen's power window, whose readings the score averages. Testing runs at "
              "fixed ranges set from the ranging maxima; its power may not fall more than 5% "
              "below ranging's.</p>"
            + _table(("phase", "scenario", "result", "average power (W)", "readings in window",
                      "window (s)", "readings"), rows)
            + f"<p>Meter: {_e(_meter(r.record))}; alignment bound (measured clock skew): "
            + (f"{bound * 1e3:.2f} ms" if bound is not None else "not measured")
            + f"</p><ul>{checks}</ul></div>"
        )
    return _section("power", "Power sessions (MLPerf power workflow)", "\n".join(parts)
                    or "<p>No power sessions in this report.</p>")


def _scale_out(runs: list[_Run]) -> str:
    rows = sorted((dict(r.training["scale_out"], run=r) for r in runs
                   if r.training.get("scale_out")),
                  key=lambda row: (row["nodes"], row["time_to_train_s"]))
    if not rows:
        return _section("scaleout", "Training energy against nodes",
                        "<p>No training energy sessions in this report.</p>")
    table = _table(
        ("run", "benchmark", "nodes", "time-to-train (s)", "energy-to-train (kJ)",
         "per node (kJ)", "mean power (kW)", "interconnect", "validity", "measured as"),
        [[_e(f"#{row['run'].number}"), _e(row["run"].record.benchmark), _e(row["nodes"]),
          f"{row['time_to_train_s']:.1f}", f"{row['energy_to_train_kj']:.3f}",
          f"{row['energy_per_node_kj']:.3f}", f"{row['mean_power_kw']:.3f}",
          _e(row["interconnect"]),
          "valid" if row["valid"] else
          f'<span class="bad">invalid: {_e(", ".join(row["run"].record.failed_rules))}</span>',
          _badge(row["measured_as"])] for row in rows])
    png = scale_out_png([row["nodes"] for row in rows],
                        [row["energy_to_train_kj"] for row in rows],
                        [row["time_to_train_s"] for row in rows],
                        [f"#{row['run'].number}" for row in rows])
    return _section("scaleout", "Training energy against nodes", _img(
        png, "energy-to-train and time-to-train against the number of nodes") + table
        + '<p class="meta">MLPerf Training energy-to-train: every node\'s energy over the '
          "timed portion (run_start to run_stop), plus the interconnect, measured or "
          "estimated as stated.</p>")


def _windows(runs: list[_Run]) -> str:
    parts = []
    for r in runs:
        if r.trace is None:
            continue
        rows = [
            [str(k), f"{w['start_s']:.3f}", f"{w['duration_s']:.3f}", str(w["inferences"]),
             f"{w['energy_uj']:.3f}", f"{w['mean_power_uw'] / 1e3:.4f}",
             f"{w['energy_per_inference_uj']:.3f}",
             f"{float(w.get('alignment_bound_s', 0.0)) * 1e3:g}"]
            for k, w in enumerate(r.session.windows)
        ]
        parts.append(
            f"<h3>{_e(r.label)} {_badge(r.record.measured_as)}</h3>"
            + _table(("window", "start (s)", "duration (s)", "inferences", "energy (uJ)",
                      "mean power (mW)", "energy/inference (uJ)", "alignment bound (ms)"), rows)
            + f"<p>Score: median of the windows' energy per inference = "
              f"<b>{_e(_value(r.record))}</b></p>"
        )
    return _section("windows", "Energy per window", "\n".join(parts))


def _latency_ms(run: _Run, runs: list[_Run]) -> tuple[float, str]:
    """The run's latency: from a performance session of the same system and benchmark among
    the given ones (the MLPerf way; the one started closest in time), else from its own energy
    windows' duration / N."""
    perf = [
        p for p in runs
        if p.record.scenario == "performance" and p.record.value
        and (p.record.system, p.record.benchmark) == (run.record.system, run.record.benchmark)
    ]
    if perf:
        started = _started(run)
        best = min(perf, key=lambda p: abs((_started(p) - started).total_seconds()))
        return 1000.0 / best.record.value, f"performance session #{best.number}"
    per_inference = [w.duration_s / w.work_count for w in run.windows]
    return 1000.0 * statistics.median(per_inference), "energy windows (duration / N)"


def _started(run: _Run) -> datetime:
    try:
        return datetime.fromisoformat(str(run.session.data.get("started_utc")))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _pareto(runs: list[_Run]) -> str:
    energy_runs = [r for r in runs if r.trace is not None and r.record.value is not None]
    points, rows = [], []
    for r in energy_runs:
        latency, source = _latency_ms(r, runs)
        u = r.record.extras.get("uncertainty")
        u = float(u) if isinstance(u, int | float) else None
        points.append(Point(r.label, latency, r.record.value, y_err=u))
        rows.append([_e(r.label), f"{latency:.3f}", _e(source),
                     f"{r.record.value:.3f}" + (f" ± {u:.3g}" if u else ""),
                     _badge(r.record.measured_as)])
    benchmarks = {TINY_BENCH_FOLDERS.get(r.record.benchmark, r.record.benchmark)
                  for r in energy_runs}
    published = [
        Point(f"{p.case} {p.system} (published)", p.latency_ms, p.energy_per_work_j * 1e6, True)
        for p in PUBLISHED
        if p.latency_ms is not None and p.benchmark in benchmarks
    ]
    front = {p.label for p in pareto_front(points)}
    for row, p in zip(rows, points, strict=True):
        row.append("yes" if p.label in front else "")
    content = (
        _img(pareto_png(points, published), "latency against energy per inference")
        + _table(("run", "latency (ms)", "latency from", "energy (uJ/inf)", "measured as",
                  "on the Pareto front"), rows)
        + '<p class="meta">Grey squares: published results of the same benchmark (see the '
          "table of published results). Error bars: the expanded uncertainty (k=2) of each "
          "run's energy.</p>"
    )
    return _section("pareto", "Latency against energy", content)


def _scales(runs: list[_Run]) -> str:
    points = [
        Point(r.label, r.record.power_w, per_work)
        for r in runs
        if (r.trace is not None or r.phases) and r.record.power_w
        and (per_work := _energy_per_work_j(r)) is not None
    ]
    published = [
        Point(f"{p.case} {p.system} {p.benchmark} {p.scenario}", p.mean_power_w,
              p.energy_per_work_j, True)
        for p in PUBLISHED
    ]
    content = (
        _img(scales_png(points, published), "energy per unit of work across scales")
        + '<p class="meta">Energy per unit of work (log) against mean power (log): '
          "microcontrollers work at microjoules and milliwatts, servers at joules and hundreds "
          "of watts. Blue: the runs in this report; grey: published MLPerf results.</p>"
    )
    return _section("scales", "Energy efficiency across scales", content)


def _published() -> str:
    rows = [
        [_e(p.case), _e(p.round), _e(f"{p.organization} {p.system}"),
         _e(f"{p.benchmark} {p.scenario}"), _e(f"{p.value:g} {p.unit}"),
         _e(f"{p.energy_per_work_j:.6g} J/{p.work_unit}"), _e(f"{p.mean_power_w:.6g}"),
         f"<code>{_e(p.repository)}</code><br><code>{_e(p.path)}</code>"
         + (f"<br><i>{_e(p.note)}</i>" if p.note else "")]
        for p in PUBLISHED
    ]
    return _section("published", "Published MLPerf results for comparison", _table(
        ("case", "round", "system", "benchmark", "published", "energy per unit of work",
         "mean power (W)", "source (MLCommons results repository and path)"), rows))


def _sessions(runs: list[_Run]) -> str:
    rows = []
    for r in runs:
        files = r.session.data.get("files") or {}
        hashes = "<br>".join(f"{_e(n)}: <code>{_e(h[:16])}</code>" for n, h in sorted(
            files.items()) if n in SHOWN_FILES)
        rows.append([
            _e(f"#{r.number}"), _e(r.session.folder), _e(r.session.data.get("started_utc", "")),
            _e(r.session.data.get("status", "")), _e(_meter(r.record)),
            _badge(r.record.measured_as), hashes,
        ])
    return _section("sessions", "Sessions and their files", _table(
        ("run", "folder", "started (UTC)", "status", "meter", "measured as",
         "sha256 (first 16)"), rows))


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .85em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; }
.meta { color: #666; font-size: .85em; }
.banner { background: #fff3cd; border: 1px solid #e0c060; padding: .6em; }
.badge { font-size: .75em; padding: .1em .4em; border-radius: 3px; color: #fff;
         background: #2a7d2a; }
.badge-simulated, .badge-emulated { background: #b35900; }
.badge-counter { background: #555; }
.bad { color: #b00; }
code { font-size: .85em; }
"""
