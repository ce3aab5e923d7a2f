"""Our sessions in the layouts other tools read: MLPerf Tiny submission folders and MLPerf
inference power output folders.

Why: a number is easier to trust when the tools that check published results can check it too.
:func:`export_tiny` writes a session as the MLCommons Tiny runner (v1.3+) writes a result:
``<out>/results/<system>/<bench>/<mode>/`` with ``results.json``, ``results.txt`` and
``log.txt``, plus ``<out>/systems/<system>.json`` (``shared/reference/published-logs.md`` §1, §4).
A trace not sampled at the MLCommons runner's 1 kHz is written as the EEMBC runner's
``trace1-energy.bin`` and ``trace1-timestamps.json`` instead (§2), which carry their sample rate.
:func:`export_power` lays a power session's LoadGen and analyzer logs out as
``<out>/results/<system>/<model>/<Scenario>/performance/{run_1,ranging}/`` (§5); a director
session's other files (its ``results.json``, each meter's raw readings) go along at the same
relative paths, so the export is checked, rescored and hash-verified like the session itself.

Each export is read back with the published-log readers (:mod:`tinypower.results.tiny_logs`,
:mod:`tinypower.results.power_logs`) before it is reported done: an export that does not re-derive
the score the session stored raises :class:`ExportError` rather than leaving a folder that
disagrees with its source. How the numbers were measured travels in ``systems/<system>.json`` and
in the header of ``results.txt``.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from energy_monitor.trace import Trace, TraceError, Window, load_trace
from tinypower.results.power_logs import PowerLogError, read_mlperf_log, score_run_dir
from tinypower.results.record import (
    POWER_SESSION_FILE,
    RecordError,
    ResultRecord,
    record_from_power_session,
    records_from_session,
)
from tinypower.results.session import check_name
from tinypower.results.strict_json import dumps_strict
from tinypower.results.tiny_logs import (
    EEMBC_BIN_MAGIC,
    MLCOMMONS_SAMPLE_RATE_HZ,
    LogFormatError,
    score_published,
)

# Benchmark folder names of the published Tiny results (``.../<system>/kws/energy``).
TINY_BENCH_FOLDERS = {"kws01": "kws", "vww01": "vww", "ic01": "ic", "ad01": "ad"}
# How closely an export must re-derive the stored score (relative): float32 EEMBC samples
# round each sample to ~6e-8, far inside this.
ROUND_TRIP_REL = 1e-4
# Files of a power phase the export copies when the session has them; the first two are required.
POWER_PHASE_FILES = (
    "spl.txt", "mlperf_log_detail.txt", "mlperf_log_summary.txt", "mlperf_log_accuracy.json",
)
POWER_SIDE_FILES = (
    "client.json", "client.log", "server.json", "server.log", "ptd_logs.txt", "ptd_out.txt",
)


class SessionFolderError(ValueError):
    """A folder is not a readable session, or lacks what was asked of it; the message says which
    file and what to do."""


class ExportError(ValueError):
    """A session cannot be exported as asked; the message names the folder and the fix."""


@dataclass
class StoredSession:
    """What a ``tinypower measure`` session folder holds, read once for exports and reports."""

    folder: Path
    data: dict  # session.json
    record: dict  # results.json "record": mode, value, unit, measured_as, extras, ...
    windows: list[dict] = field(default_factory=list)  # results.json "windows"
    checks: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def mode(self) -> str:
        return str(self.record.get("mode") or self.data.get("mode", ""))

    @property
    def measured_as(self) -> str:
        return str(self.record.get("measured_as") or self.data.get("measured_as") or "unknown")

    @property
    def system(self) -> str:
        for key in ("system", "sut", "board"):
            value = self.data.get(key) or self.record.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict) and value.get("name"):
                return str(value["name"])
        return self.folder.name

    def value(self) -> float | None:
        """The stored score, or None when the run produced none (a failed run)."""
        v = self.record.get("value")
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    def trace(self) -> Trace:
        """The meter trace (``trace.npz``); an error saying so when the session has none."""
        path = self.folder / "trace.npz"
        if not path.is_file():
            partial = self.folder / "trace-partial.npz"
            hint = (f"; the run failed and kept only {partial.name}" if partial.is_file()
                    else f": a {self.mode or 'non-energy'} session measures no power")
            raise SessionFolderError(f"{self.folder} has no trace.npz{hint}")
        try:
            return load_trace(path)
        except (OSError, ValueError, KeyError) as exc:
            raise SessionFolderError(f"{path}: not a readable tinypower trace ({exc})") from exc

    def trace_windows(self, trace: Trace) -> list[Window]:
        """The scored windows as sample ranges on ``trace``, each checked against its edges.

        ``results.json`` keeps each window's start time and sample count; both ends must fall on
        timestamp edges the meter recorded, or the session's files disagree with each other.
        """
        edges = {e.index for e in trace.events}
        windows = []
        for k, w in enumerate(self.windows):
            start = round((float(w["start_s"]) - trace.start_time_s) * trace.sample_rate_hz)
            end = start + int(w["samples"])
            for what, index in (("start", start), ("end", end)):
                if index not in edges:
                    raise SessionFolderError(
                        f"{self.folder}: window {k} {what}s at sample {index}, where trace.npz "
                        "has no timestamp edge: results.json and trace.npz disagree; measure again"
                    )
            windows.append(Window(
                start_s=trace.time_of(start), end_s=trace.time_of(end),
                work_count=int(w["inferences"]), source="meter-edge",
                alignment_bound_s=float(w.get("alignment_bound_s", trace.period_s)),
                start_index=start, end_index=end, label=str(k),
            ))
        return windows

    def result(self) -> ResultRecord:
        """The session's result record (:func:`records_from_session`), as the store keeps it."""
        try:
            return records_from_session(self.folder)[0]
        except RecordError as exc:
            raise SessionFolderError(str(exc)) from exc

    def input_names(self) -> list[str]:
        """Names of the inputs the run sent, in order (from the artifact hashes)."""
        return [k.split(":", 1)[1] for k in self.data.get("artifacts", {})
                if k.startswith("input:")]


def load_session(folder: Path) -> StoredSession:
    """Read a session folder; a folder that is not one is an error that says what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SessionFolderError(f"{folder} is not a folder: give a session folder from runs/")
    session_json = folder / "session.json"
    if not session_json.is_file():
        raise SessionFolderError(
            f"{folder} is not a tinypower session: it has no session.json (session folders are "
            "made by `tinypower measure`, under runs/ by default)"
        )
    try:
        data = json.loads(session_json.read_text())
    except json.JSONDecodeError as exc:
        raise SessionFolderError(f"{session_json}: not valid JSON ({exc})") from exc
    results: dict = {}
    results_json = folder / "results.json"
    if results_json.is_file():
        try:
            results = json.loads(results_json.read_text())
        except json.JSONDecodeError as exc:
            raise SessionFolderError(f"{results_json}: not valid JSON ({exc})") from exc
    return StoredSession(
        folder=folder, data=data, record=results.get("record") or {},
        windows=results.get("windows") or [], checks=results.get("checks") or [],
    )


# --------------------------------------------------------------------------------------------
# MLPerf Tiny submission layout


def export_tiny(session_folder: Path, out: Path) -> Path:
    """Write one Tiny session (performance, energy or accuracy) into ``out``'s result tree.

    Returns the mode folder written. Sessions of one system and benchmark share a tree, so a
    performance, an energy and an accuracy session exported to the same ``out`` make one
    submission-shaped result.
    """
    session = load_session(session_folder)
    suite = str(session.record.get("suite") or session.data.get("suite") or "")
    if session.mode not in ("performance", "energy", "accuracy") or not suite:
        raise ExportError(
            f"{session.folder} is not an MLPerf Tiny session (mode {session.mode!r}): "
            "use --format power for an inference power session"
        )
    if session.value() is None:
        raise ExportError(
            f"{session.folder}: the run stored no score ({session.data.get('reason', 'failed')})"
            ": there is nothing to submit"
        )
    folder = _inside(out, "results", session.system, TINY_BENCH_FOLDERS.get(suite, suite),
                     session.mode)
    folder.mkdir(parents=True, exist_ok=True)
    if session.mode == "energy":
        _write_energy(session, folder)
    elif session.mode == "performance":
        _write_performance(session, folder)
    else:
        _write_accuracy(session, folder)
    _write_log(session, folder)
    _write_system(session, out / "systems")
    if session.mode != "accuracy":
        _check_round_trip(session, folder)
    return folder


def _header(session: StoredSession) -> str:
    return (f"# tinypower export of session {session.name}, measured_as: {session.measured_as}\n")


def _warmups(session: StoredSession) -> int:
    from tinypower.suites.benchmarks import SUITES  # the suite's default when none was given

    configured = session.data.get("config", {}).get("warmups")
    if configured is not None:
        return int(configured)
    suite = SUITES.get(str(session.record.get("suite")))
    return suite.default_infer_warmups if suite else 0


def _classes(session: StoredSession) -> str | None:
    from tinypower.suites.benchmarks import SUITES

    suite = SUITES.get(str(session.record.get("suite")))
    return str(suite.classes) if suite else None


def _element(session: StoredSession, k: int, mode: str, infer: dict) -> dict:
    """One ``results.json`` element in the MLCommons runner's shape."""
    names = session.input_names()
    return {
        "file": names[k % len(names)] if names else None,
        "classes": _classes(session), "class": None,
        "bytes_to_send": None, "stride": None, "total_length": None,
        "infer": infer, "mode": mode,
    }


def _write_performance(session: StoredSession, folder: Path) -> None:
    elements, lines = [], ["Performance Edition Output"]
    for k, w in enumerate(session.windows):
        elapsed_us = round(float(w["elapsed_s"]) * 1e6)
        throughput = float(w["throughput_inf_per_s"])
        elements.append(_element(session, k, "p", {
            "start_time": int(w["start_us"]), "end_time": int(w["end_us"]),
            "results": None, "elapsed_time": elapsed_us, "total_inferences": 1,
            "iterations": int(w["inferences"]), "warmups": _warmups(session),
            "throughput": throughput,
        }))
        lines += [
            f"Performance results for window {k + 1}",
            f"    # Inferences : {w['inferences']}",
            f"    Runtime: {elapsed_us / 1e6} sec.",
            f"    Throughput: {throughput} inf./sec.",
            "    Runtime requirements have been met." if float(w["elapsed_s"]) >= 10
            else "    e-[The run must take at least 10 seconds and 10 iterations to be valid]",
        ]
    lines.append(f"Median throughput is {session.value():10.3f} inf./sec.")
    (folder / "results.json").write_text(json.dumps(elements) + "\n")
    (folder / "results.txt").write_text(_header(session) + "\n".join(lines) + "\n")


def _write_energy(session: StoredSession, folder: Path) -> None:
    trace = session.trace()
    windows = session.trace_windows(trace)
    if not windows:
        raise ExportError(f"{session.folder}: results.json lists no energy windows to export")
    for name in ("results.json", "trace1-energy.bin", "trace1-timestamps.json"):
        (folder / name).unlink(missing_ok=True)  # a re-export must not leave the other format
    if trace.sample_rate_hz == MLCOMMONS_SAMPLE_RATE_HZ:
        _write_mlcommons_energy(session, trace, windows, folder)
    else:
        _write_eembc_energy(trace, windows, folder)
    lines = ["Power Edition Output"]
    for k, w in enumerate(session.windows):
        lines += [
            f"Energy data for trial {k}",
            f"  Elapsed time  : {w['duration_s']}",
            f"  Inferences    : {w['inferences']}",
            f"  Power         : {float(w['mean_power_uw']) / 1e3:.4f} mW.",
            f"  Total Energy  : {float(w['energy_uj']):.3f} uJ",
            f"  Energy/Inf    : {float(w['energy_per_inference_uj']):.3f} uJ/inf",
        ]
    lines.append(f"Median energy cost is {session.value():5.4f} uJ/inf.")
    (folder / "results.txt").write_text(_header(session) + "\n".join(lines) + "\n")


def _write_mlcommons_energy(
    session: StoredSession, trace: Trace, windows: list[Window], folder: Path
) -> None:
    """One trial per window, each a capture from the previous window's end to this one's
    (plus the gap before the next window), with its edges as ``[counter, sample]`` pairs."""
    voltage = _monitor_voltage_v(session)
    elements, counter = [], 0
    for k, w in enumerate(windows):
        first = windows[k - 1].end_index if k else 0
        last = windows[k + 1].start_index if k + 1 < len(windows) else len(trace)
        samples = trace.energy_per_sample_j(first, last)
        edges = [e.index - first for e in trace.events if first <= e.index <= w.end_index]
        timestamps = []
        for index in edges:
            timestamps.append([f"{counter:02d}", index])
            counter += 1
        element = _element(session, k, "e", {
            "results": None, "total_inferences": 1, "iterations": w.work_count,
            "warmups": _warmups(session),
        })
        element["power"] = {
            # A lost sample is NaN in the trace and null here (numpy reads null back as NaN).
            "samples": [None if math.isnan(x) else x for x in samples.tolist()],
            "timestamps": timestamps, "extracted_power": None, "voltage": voltage,
        }
        elements.append(element)
    (folder / "results.json").write_text(json.dumps(elements) + "\n")


def _write_eembc_energy(trace: Trace, windows: list[Window], folder: Path) -> None:
    """``trace1-energy.bin`` at the trace's own rate and the 2W+1 timestamps that bound the
    windows under the EEMBC sample rule (window = samples ``round(t0*fs)+1 .. round(t1*fs)``).

    Times are written unrounded (the EEMBC runner rounds them to 1 ms), so the windows come back
    on exactly the samples the session scored.
    """
    fs = trace.sample_rate_hz
    before = [e.index for e in trace.events if e.index < windows[0].start_index]
    initial = before[-1] if before else 1
    stamps = [initial] + [i for w in windows for i in (w.start_index, w.end_index)]
    header = bytes([EEMBC_BIN_MAGIC]) + np.float32(fs).tobytes()
    samples_uj = (trace.energy_per_sample_j() * 1e6).astype("<f4")
    (folder / "trace1-energy.bin").write_bytes(header + samples_uj.tobytes())
    (folder / "trace1-timestamps.json").write_text(
        json.dumps([max(0, i - 1) / fs for i in stamps]) + "\n"
    )


def _monitor_voltage_v(session: StoredSession) -> float | None:
    """The supply voltage the meter set, from the board file the session names (if present)."""
    board_file = session.data.get("config", {}).get("board_file")
    if not board_file or not Path(board_file).is_file():
        return None
    from tinypower.boards import BoardError, load_board

    try:
        return load_board(board_file).monitor_voltage_v
    except BoardError:
        return None


def _write_accuracy(session: StoredSession, folder: Path) -> None:
    r = session.record
    metric, value = r.get("metric"), float(r["value"])
    lines = []
    if metric == "top1":
        lines.append(f"Top 1% = {value:.1f}")
    elif metric == "auc":
        lines.append(f"AUC = {value:.3f}")
    agreement = r.get("extras", {}).get("reference_agreement_percent")
    if agreement is not None:
        lines.append(f"Reference agreement: {float(agreement):.1f}%")
    (folder / "results.txt").write_text(_header(session) + "\n".join(lines) + "\n")


def _write_log(session: StoredSession, folder: Path) -> None:
    """``log.txt``: the session's protocol transcript (every line sent and received), as the
    runner's log keeps its console output; for EEMBC-format energy, first one ``Command "dut
    infer N W"`` line per window, which the EEMBC readers take N and the window count from."""
    lines = [_header(session).rstrip("\n")]
    if (folder / "trace1-energy.bin").is_file():
        lines += [f'00000.000 parser: Command "dut infer {w["inferences"]} {_warmups(session)}"'
                  for w in session.windows]
    transcript = session.folder / "transcript.log"
    lines.append(f"# transcript ({transcript.name}): host monotonic seconds, > sent, < received")
    text = transcript.read_text(errors="replace") if transcript.is_file() else ""
    (folder / "log.txt").write_text("\n".join(lines) + "\n" + text)


def _write_system(session: StoredSession, systems: Path) -> None:
    """``systems/<system>.json``: the free-form system description, with how it was measured."""
    path = _inside(systems, f"{session.system}.json")
    systems.mkdir(parents=True, exist_ok=True)
    description = json.loads(path.read_text()) if path.is_file() else {}
    sessions = description.setdefault("sessions", {})
    sessions[session.mode or "power"] = {
        "session": session.name, "measured_as": session.measured_as,
        "meter": session.data.get("meter"),
    }
    kinds = sorted({s["measured_as"] for s in sessions.values()})
    description.update({
        "Board Name": session.system,
        "measured_as": kinds[0] if len(kinds) == 1 else "mixed: " + ", ".join(kinds),
        "dut": session.data.get("dut") or description.get("dut"),
        "software": session.data.get("versions"),
        "exported_by": "tinypower",
    })
    path.write_text(dumps_strict(description, indent=2) + "\n")


def _check_round_trip(session: StoredSession, folder: Path) -> None:
    stored = session.value()
    try:
        derived = score_published(folder).value
    except (LogFormatError, TraceError) as exc:
        raise ExportError(f"{folder}: the export cannot be read back ({exc})") from exc
    _compare(session, folder, stored, derived)


def _compare(session: StoredSession, folder: Path, stored: float | None, derived: float) -> None:
    if stored is not None and not math.isclose(derived, stored, rel_tol=ROUND_TRIP_REL):
        raise ExportError(
            f"{folder}: read back as {derived!r} but session {session.name} stored {stored!r}: "
            "the export does not reproduce the session (report this as a bug)"
        )


# --------------------------------------------------------------------------------------------
# MLPerf inference power output layout


def _power_phase(session: StoredSession, names: tuple[str, ...]) -> Path | None:
    for name in names:
        candidate = session.folder / name
        if (candidate / "spl.txt").is_file() or (candidate / "mlperf_log_detail.txt").is_file():
            return candidate
    return None


def _power_session(folder: Path) -> StoredSession:
    """A power session: the scaling layer's (``power/server.json``, ``results.json`` with
    ``testing``) or any folder with a ``session.json`` and a ``results.json`` ``record``."""
    folder = Path(folder)
    for name in ("session.json", POWER_SESSION_FILE):
        if (folder / name).is_file():
            try:
                data = json.loads((folder / name).read_text())
                results = (json.loads((folder / "results.json").read_text())
                           if (folder / "results.json").is_file() else {})
            except json.JSONDecodeError as exc:
                raise SessionFolderError(f"{folder}: {name} or results.json is not valid JSON "
                                         f"({exc})") from exc
            record = dict(results.get("record") or results.get("testing") or {})
            record.setdefault("measured_as", results.get("measured_as"))
            if name == POWER_SESSION_FILE and results:  # the SUT's name and the model it ran
                try:
                    director = record_from_power_session(folder)
                except RecordError as exc:
                    raise SessionFolderError(str(exc)) from exc
                if not any(data.get(k) for k in ("system", "sut", "board")):
                    record["system"] = director.system
                if not data.get("model") and director.benchmark:
                    record["model"] = director.benchmark
            return StoredSession(folder=folder, data=data, record=record)
    raise SessionFolderError(
        f"{folder} is not a power session: no power/server.json or session.json (power sessions "
        "are made by the scaling layer's director)"
    )


def export_power(session_folder: Path, out: Path) -> Path:
    """Lay a power session out as ``results/<system>/<model>/<Scenario>/performance/``.

    A power session keeps, per phase, the analyzer's ``spl.txt`` and LoadGen's
    ``mlperf_log_detail.txt`` (with ``power_begin``/``power_end``): ``run_1/`` (or
    ``testing/``) and, when ranging was run, ``ranging/``; its ``power/`` folder (server and
    client JSON, PTD logs) is copied along. Returns the scenario folder; the testing score read
    back from it must equal the one the session stored, when it stored one.
    """
    session = _power_session(session_folder)
    testing = _power_phase(session, ("run_1", "testing"))
    if testing is None:
        raise ExportError(
            f"{session.folder} is not a power session: no run_1/ or testing/ folder with spl.txt "
            "and mlperf_log_detail.txt (use --format tiny for an MLPerf Tiny session)"
        )
    ranging = _power_phase(session, ("ranging",))
    try:
        scenario = str(read_mlperf_log(testing / "mlperf_log_detail.txt")
                       .get("effective_scenario") or "")
    except PowerLogError as exc:
        raise ExportError(str(exc)) from exc
    if not scenario:
        raise ExportError(f"{testing / 'mlperf_log_detail.txt'} has no effective_scenario")
    session.record["mode"] = scenario
    scenario_dir = _inside(out, "results", session.system, _power_model(session), scenario)
    performance = scenario_dir / "performance"
    phases = {"run_1": testing} | ({"ranging": ranging} if ranging else {})
    for target, source in phases.items():
        (performance / target).mkdir(parents=True, exist_ok=True)
        for name in POWER_PHASE_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, performance / target / name)
    side = [session.folder / "power" / n for n in POWER_SIDE_FILES]
    for path in (p for p in side if p.is_file()):
        (performance / "power").mkdir(exist_ok=True)
        shutil.copyfile(path, performance / "power" / path.name)
    for relative in session.data.get("results") or {}:  # what the director hashed
        source, target = session.folder / relative, performance / relative
        inside = relative.split("/")[0] in ("run_1", "ranging", "power") \
            or relative == "results.json"
        if ".." in Path(relative).parts or Path(relative).is_absolute():
            raise ExportError(f"{session.folder}: the session lists {relative!r}, a path "
                              "outside its folder: refusing to export it")
        if inside and source.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    _write_system(session, out / "systems")
    try:
        derived = score_run_dir(performance / "run_1")
        if ranging:
            score_run_dir(performance / "ranging")
    except (PowerLogError, ValueError) as exc:
        raise ExportError(f"{performance}: the export cannot be scored ({exc})") from exc
    stored_unit = session.record.get("unit")
    if stored_unit in (None, derived.unit):
        _compare(session, performance, session.value(), derived.value)
    elif stored_unit == "J/query" and derived.unit == "mJ/query":
        _compare(session, performance, session.value(), derived.value / 1e3)
    return scenario_dir


def _inside(root: Path, *parts: str) -> Path:
    """``root/part/...``, each part a plain name (names come from session files, which anyone
    may have edited): every write of an export stays inside the folder the user named."""
    for part in parts:
        try:
            check_name(part, "a folder or file name from the session")
        except ValueError as exc:
            raise ExportError(f"cannot export into {root}: {exc}") from None
    return root.joinpath(*parts)


def _power_model(session: StoredSession) -> str:
    for key in ("model", "workload", "benchmark", "label"):
        value = session.data.get(key) or session.record.get(key)
        if isinstance(value, dict):
            value = value.get("name")
        if isinstance(value, str) and value:
            return value.replace("/", "_")
    return "model"
