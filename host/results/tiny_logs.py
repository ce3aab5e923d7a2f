"""Readers that turn published MLPerf Tiny result folders into timing-core objects.

Why: a published score is only a claim until it is re-derived from the raw files beside it. These
readers map each runner's raw output (EEMBC ``trace1-energy.bin`` + ``trace1-timestamps.json`` +
``log.txt``; MLCommons ``results.json``) onto :class:`~energy_monitor.trace.Trace`,
:class:`~energy_monitor.trace.Window` and :class:`~tinypower.rules.tiny.PerfWindow`, and then score
them with the *same* rules code (:func:`~tinypower.rules.tiny.score_energy`,
:func:`~tinypower.rules.tiny.score_performance`) that scores our own runs. There is no separate
arithmetic here: if the rules reproduce the published numbers, they are the runners' rules.

Formats and derivations: ``shared/reference/published-logs.md`` sections 2-4. Anything that would
make a window measure the wrong interval (a lost timestamp, a truncated trace) raises
:class:`LogFormatError` naming the file, instead of being paired or summed silently.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from energy_monitor.trace import (
    Event,
    Trace,
    Window,
    WindowEnergy,
    integrate,
    window_from_events,
)
from tinypower.results.labels import LabelList, best_list
from tinypower.results.logio import (
    ResultFileError,
    json_float,
    json_int,
    lines,
    parse_json,
    printable,
    read_bytes,
    read_text,
    to_int,
)
from tinypower.rules.tiny import (
    REQUIRED_WINDOWS,
    PerfWindow,
    TinyResult,
    score_energy,
    score_performance,
)

EEMBC_BIN_MAGIC = 0xF1
EEMBC_HEADER_BYTES = 5  # magic byte + float32 LE sample rate
# The EEMBC sample rule: window k spans samples round(t0*fs)+1 .. round(t1*fs) inclusive.
EEMBC_DEFAULT_OFFSETS = (1, 1)
# The MLCommons runner's LPM01A capture: joules per 1 ms sample.
MLCOMMONS_SAMPLE_RATE_HZ = 1000.0

_INFER_COMMAND = re.compile(r'Command "[^"]*\binfer (\d+)(?: \d+)?"')
_ANY_COMMAND = re.compile(r'Command "')
_ITER_INFER = re.compile(r"m-bm-cfg-name\[[^\]]*\]-key\[iterInfer\]-val\[(\d+)\]")
_LAP_US = re.compile(r"m-lap-us-(\d+)")
_MEDIAN_ENERGY = re.compile(r"Median energy cost is\s+([\d.]+) uJ/inf")
_MEDIAN_THROUGHPUT = re.compile(r"Median throughput is\s+([\d.]+) inf\./sec")


class LogFormatError(ResultFileError):
    """A published result file cannot be read or scored; the message names the file and why."""


def _find(folder: Path, name: str) -> Path | None:
    """``folder/name``, or its prefixed variant (``energy_log.txt``) that some submitters use.

    Hidden files never count: macOS copies leave ``._log.txt`` resource forks beside the logs.
    """
    exact = folder / name
    if exact.is_file():
        return exact
    try:
        variants = sorted(p for p in folder.glob(f"*_{name}")
                          if not p.name.startswith(".") and p.is_file())
    except OSError:
        return None
    return variants[0] if len(variants) == 1 else None


def _text(path: Path) -> str:
    """A log's text through the defensive reader, its errors as :class:`LogFormatError`."""
    try:
        return read_text(path)
    except LogFormatError:
        raise
    except ResultFileError as exc:
        raise LogFormatError(str(exc)) from None


def _json(path: Path) -> Any:
    """The parsed file; the last few parses are reused (classifying a folder and scoring it
    read the same ``results.json``), keyed by the bytes' digest so an edit is always seen."""
    try:
        data = read_bytes(path)
    except LogFormatError:
        raise
    except ResultFileError as exc:
        raise LogFormatError(str(exc)) from None
    key = (str(path), hashlib.blake2b(data, digest_size=16).digest())
    if key in _JSON_CACHE:
        return _JSON_CACHE[key]
    try:
        parsed = parse_json(data.decode("utf-8", errors="replace"), path)
    except ResultFileError as exc:
        raise LogFormatError(str(exc)) from None
    _JSON_CACHE[key] = parsed
    while len(_JSON_CACHE) > 2:
        _JSON_CACHE.pop(next(iter(_JSON_CACHE)))
    return parsed


_JSON_CACHE: dict[tuple[str, bytes], Any] = {}


def _require(folder: Path, name: str) -> Path:
    """Like :func:`_find`, but a missing file is a format error: the reader cannot go on."""
    path = _find(folder, name)
    if path is None:
        raise LogFormatError(f"{folder / name}: file not found")
    return path


# --------------------------------------------------------------------------------------------
# EEMBC runner: energy


@dataclass
class EembcEnergyRun:
    """One EEMBC energy-mode run: the meter trace and the windows its timestamps bound.

    ``timestamps_s`` is the raw ``trace1-timestamps.json`` list (ms-rounded), kept so a checker
    can show the evidence behind each window; ``trace.events`` holds the same edges placed by the
    default sample rule, for plots.
    """

    folder: Path
    trace: Trace
    timestamps_s: list[float]
    windows: list[Window]

    def energies(self) -> list[WindowEnergy]:
        """Each window's energy, integrated by the timing core."""
        return [integrate(self.trace, w) for w in self.windows]

    def score(self) -> TinyResult:
        """The run scored by our energy rules: median uJ/inf over the windows."""
        return score_energy(self.energies())


def read_eembc_trace(path: Path) -> Trace:
    """Read ``trace1-energy.bin`` (0xF1, float32 LE rate in Hz, float32 LE uJ per sample).

    The header and size are checked because a truncated download still parses as floats: the
    loss would only show up as a window that quietly ends early.
    """
    try:
        data = read_bytes(path)
    except ResultFileError as exc:
        raise LogFormatError(str(exc)) from None
    if len(data) < EEMBC_HEADER_BYTES:
        raise LogFormatError(
            f"{path}: {len(data)} byte(s), shorter than the {EEMBC_HEADER_BYTES}-byte header"
        )
    if data[0] != EEMBC_BIN_MAGIC:
        raise LogFormatError(
            f"{path}: header byte 0x{data[0]:02X}, expected 0x{EEMBC_BIN_MAGIC:02X}: "
            "not an EEMBC energy trace"
        )
    payload = len(data) - EEMBC_HEADER_BYTES
    if payload % 4:
        raise LogFormatError(
            f"{path}: {payload} payload bytes is not a whole number of float32 samples: "
            "the file is truncated"
        )
    fs = float(np.frombuffer(data, dtype="<f4", count=1, offset=1)[0])
    if not (np.isfinite(fs) and fs > 0):
        raise LogFormatError(f"{path}: sample rate {fs!r} Hz in the header is not positive")
    samples_uj = np.frombuffer(data, dtype="<f4", offset=EEMBC_HEADER_BYTES).astype(np.float64)
    if samples_uj.size == 0:
        raise LogFormatError(f"{path}: no samples after the header")
    if not np.all(np.isfinite(samples_uj)):
        raise LogFormatError(
            f"{path}: {int(np.sum(~np.isfinite(samples_uj)))} non-finite sample(s)"
        )
    return Trace(sample_rate_hz=fs, energy_j=samples_uj * 1e-6)


def _read_timestamps(path: Path) -> list[float]:
    """The timestamps list, checked to be numbers in time order."""
    raw = _json(path)
    if not isinstance(raw, list) or not all(
        isinstance(t, int | float) and not isinstance(t, bool) for t in raw
    ):
        raise LogFormatError(f"{path}: expected a JSON list of times in seconds")
    try:
        times = [json_float(t, path) for t in raw]
    except ResultFileError as exc:
        raise LogFormatError(str(exc)) from None
    if any(t < 0 or t > 1e7 for t in times):
        raise LogFormatError(f"{path}: a timestamp is negative or beyond 10^7 s")
    if any(b < a for a, b in pairwise(times)):
        raise LogFormatError(f"{path}: timestamps are not in time order")
    return times


def _eembc_inference_counts(log: Path) -> list[int]:
    """N for each window: one per ``Command "... infer N W"``, else ``iterInfer`` x 5.

    The infer commands also say how many windows the runner ran, which is what the timestamp
    count must be checked against; only a log without them falls back to the required five.
    """
    text = _text(log)
    counts = [_count(m.group(1), log) for m in _INFER_COMMAND.finditer(text)]
    if counts:
        return counts
    cfg = _ITER_INFER.search(text)
    if cfg is None:
        raise LogFormatError(
            f"{log}: no 'infer N W' command and no iterInfer setting: inference count unknown"
        )
    return [_count(cfg.group(1), log)] * REQUIRED_WINDOWS


def _count(digits: str, where: object) -> int:
    """A positive count from a log (an inference count of 0 cannot be divided by)."""
    try:
        n = to_int(digits, where)
    except ResultFileError as exc:
        raise LogFormatError(str(exc)) from None
    if n <= 0:
        raise LogFormatError(f"{where}: inference count {n}: nothing was run")
    return n


def read_eembc_energy(
    folder: Path, offsets: Sequence[tuple[int, int]] | None = None
) -> EembcEnergyRun:
    """Read an EEMBC energy folder into a trace and its windows.

    The first timestamp is the initial ``timestamp`` pulse; window k (k = 2, 4, ..., 2W) spans
    ``ts[k-1] .. ts[k]``. By default a window holds samples ``round(t0*fs)+1 .. round(t1*fs)``
    (offsets ``(+1, +1)``). The JSON keeps times rounded to 1 ms while the runner used sub-ms
    times, so each edge is known only to +-1 sample: for every published window exactly one of
    the offset pairs (j0, j1) in {0, +1}^2 reproduces the printed energy. Pass ``offsets`` (one
    pair per window) to reproduce printed window values exactly; ``alignment_bound_s`` records
    the one-sample uncertainty either way.

    A timestamp count other than 2W+1 raises :class:`LogFormatError`: pairing the edges in
    order after a lost one would measure the gaps between inference loops, not the loops.
    """
    bin_path = _require(folder, "trace1-energy.bin")
    ts_path = _require(folder, "trace1-timestamps.json")
    trace = read_eembc_trace(bin_path)
    timestamps = _read_timestamps(ts_path)
    counts = _eembc_inference_counts(_require(folder, "log.txt"))
    n_windows = len(counts)
    if len(timestamps) != 2 * n_windows + 1:
        raise LogFormatError(
            f"{ts_path}: {len(timestamps)} timestamps, expected 2W+1 = {2 * n_windows + 1} "
            f"for the W = {n_windows} infer commands in the log: an edge was lost or added, "
            "and pairing the rest in order would measure the wrong intervals"
        )
    if offsets is None:
        offsets = [EEMBC_DEFAULT_OFFSETS] * n_windows
    if len(offsets) != n_windows or any(d not in (0, 1) for pair in offsets for d in pair):
        raise ValueError(f"offsets must be {n_windows} (j0, j1) pairs from {{0, 1}}, got {offsets}")
    fs = trace.sample_rate_hz
    if fs > 1e7:
        raise LogFormatError(f"{bin_path}: sample rate {fs:g} Hz in the header is implausible")
    trace.events = [Event(index=round(t * fs) + 1, time_s=t) for t in timestamps]
    windows = []
    for i, (n, (d0, d1)) in enumerate(zip(counts, offsets, strict=True)):
        k = 2 * (i + 1)
        j0 = round(timestamps[k - 1] * fs) + d0
        j1 = round(timestamps[k] * fs) + d1
        if j1 > len(trace):
            raise LogFormatError(
                f"{bin_path}: {len(trace)} samples ({len(trace) / fs:.3f} s) but window {k} in "
                f"{ts_path.name} ends at {timestamps[k]:.3f} s: the trace is truncated"
            )
        windows.append(
            Window(
                start_s=trace.time_of(j0),
                end_s=trace.time_of(j1),
                work_count=n,
                source="eembc-timestamps",
                alignment_bound_s=trace.period_s,
                start_index=j0,
                end_index=j1,
                label=str(k),
            )
        )
    return EembcEnergyRun(folder=folder, trace=trace, timestamps_s=timestamps, windows=windows)


# --------------------------------------------------------------------------------------------
# EEMBC runner: performance


def read_eembc_performance(folder: Path) -> list[PerfWindow]:
    """One :class:`PerfWindow` per ``Command "... infer N W"`` in ``log.txt``.

    A window's laps are the last two ``m-lap-us-`` values after its command and before the next
    command; the lap the initial ``dut timestamp`` command prints comes before any infer command
    and so is ignored. An infer command with fewer than two laps cannot be timed and is an error.
    """
    log = _require(folder, "log.txt")
    groups: list[tuple[int, list[int]]] = []
    in_infer = False
    for lineno, line in enumerate(lines(_text(log)), 1):
        infer = _INFER_COMMAND.search(line)
        if infer:
            groups.append((_count(infer.group(1), f"{log}:{lineno}"), []))
            in_infer = True
        elif _ANY_COMMAND.search(line):
            in_infer = False
        elif in_infer and (lap := _LAP_US.search(line)):
            try:
                groups[-1][1].append(to_int(lap.group(1), f"{log}:{lineno}"))
            except ResultFileError as exc:
                raise LogFormatError(str(exc)) from None
    if not groups:
        raise LogFormatError(f"{log}: no 'infer N W' command: nothing to time")
    windows = []
    for i, (n, laps) in enumerate(groups, start=1):
        if len(laps) < 2:
            raise LogFormatError(
                f"{log}: infer command {i} is followed by {len(laps)} lap(s), needs 2"
            )
        windows.append(PerfWindow(inferences=n, start_us=laps[-2], end_us=laps[-1]))
    return windows


# --------------------------------------------------------------------------------------------
# MLCommons runner (v1.3+): results.json


def _load_results_json(path: Path) -> list[dict]:
    """The ``results.json`` list, one element per window, trial or accuracy segment."""
    data = _json(path)
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise LogFormatError(f"{path}: expected a list of window objects")
    return data


def _finite_array(values: list, where: object) -> np.ndarray:
    """A list of JSON numbers as float64, fast; the slow path only to name a bad element."""
    if all(type(v) in (int, float) for v in values):
        try:
            array = np.asarray(values, dtype=np.float64)
        except (OverflowError, ValueError):
            array = None
        if array is not None and np.all(np.isfinite(array)):
            return array
    return np.asarray([json_float(v, where) for v in values], dtype=np.float64)


def runner_errors(folder: Path) -> list[str]:
    """The errors the MLCommons runner recorded in ``results.json`` (``error 1``: loop count
    not 5; ``error 2``: the loop took under 10 s), for which it prints no median."""
    path = _find(folder, "results.json")
    if path is None:
        return []
    try:
        return [printable(e["error"]) for e in _load_results_json(path) if e.get("error")]
    except LogFormatError:
        return []


def _get(element: Any, *keys: str) -> Any:
    """``element[k1][k2]...``, or None where any level is missing or not an object."""
    for key in keys:
        if not isinstance(element, dict):
            return None
        element = element.get(key)
    return element


def _mlcommons_elements(folder: Path, mode: str) -> tuple[Path, list[dict]]:
    """The ``results.json`` elements of one mode (``"e"`` energy, ``"p"`` performance)."""
    path = _require(folder, "results.json")
    elements = [e for e in _load_results_json(path) if e.get("mode") == mode]
    if not elements:
        raise LogFormatError(f"{path}: no elements with mode {mode!r}")
    return path, elements


@dataclass
class MlcommonsEnergyRun:
    """An MLCommons energy run: one separate capture (:class:`Trace`) and window per trial."""

    folder: Path
    traces: list[Trace]
    windows: list[Window]

    def energies(self) -> list[WindowEnergy]:
        """Each trial's energy, integrated by the timing core on its own capture."""
        return [integrate(t, w) for t, w in zip(self.traces, self.windows, strict=True)]

    def score(self) -> TinyResult:
        """The run scored by our energy rules: median uJ/inf over the trials."""
        return score_energy(self.energies())


def read_mlcommons_energy(folder: Path) -> MlcommonsEnergyRun:
    """Read the ``"mode": "e"`` trials of ``results.json``.

    ``power.samples`` are joules per 1 ms sample; ``power.timestamps`` are ``[counter,
    sample_index]`` edges. The window is the last two edges, as the runner takes it, via the
    timing core's :func:`window_from_events`; N is ``infer.iterations``.
    """
    path, elements = _mlcommons_elements(folder, "e")
    traces, windows = [], []
    for i, element in enumerate(elements):
        where = f"{path}: trial {i}"
        try:
            power = _get(element, "power")
            raw_samples = _get(power, "samples")
            raw_events = _get(power, "timestamps")
            if not isinstance(raw_samples, list) or not isinstance(raw_events, list):
                raise LogFormatError(f"{where}: no power.samples/power.timestamps lists")
            samples = _finite_array(raw_samples, where)
            events = []
            for event in raw_events:
                if not isinstance(event, list) or len(event) != 2:
                    raise LogFormatError(f"{where}: timestamp {printable(event)[:40]} is not "
                                         "[counter, sample index]")
                idx = json_int(event[1], where)
                events.append(Event(index=idx, time_s=idx / MLCOMMONS_SAMPLE_RATE_HZ))
            iterations = json_int(_get(element, "infer", "iterations"), f"{where}: iterations")
            if iterations <= 0:
                raise LogFormatError(f"{where}: {iterations} iterations")
            trace = Trace(sample_rate_hz=MLCOMMONS_SAMPLE_RATE_HZ, energy_j=samples, events=events)
            window = window_from_events(events, trace, work_count=iterations, label=str(i))
        except LogFormatError:
            raise
        except (ResultFileError, ValueError) as exc:
            # TraceError is a ValueError: a trial with < 2 edges lands here too.
            raise LogFormatError(f"{where}: {exc}") from None
        if window.start_index < 0 or window.end_index > len(trace):
            raise LogFormatError(
                f"{path}: trial {i} ends at sample {window.end_index} but holds {len(trace)}"
            )
        traces.append(trace)
        windows.append(window)
    return MlcommonsEnergyRun(folder=folder, traces=traces, windows=windows)


def read_mlcommons_performance(folder: Path) -> list[PerfWindow]:
    """One :class:`PerfWindow` per ``"mode": "p"`` element: DUT laps ``start/end_time`` in us."""
    path, elements = _mlcommons_elements(folder, "p")
    windows = []
    for i, e in enumerate(elements):
        if "infer" not in e and e.get("error"):
            continue  # the runner's "error 1"/"error 2" marker, see runner_errors()
        where = f"{path}: window {i + 1}"
        if _get(e, "infer", "start_time") is None or _get(e, "infer", "end_time") is None:
            raise LogFormatError(f"{where}: no infer.start_time/end_time laps to time it by")
        try:
            n = json_int(_get(e, "infer", "iterations"), f"{where}: iterations")
            start = json_int(_get(e, "infer", "start_time"), f"{where}: start_time")
            end = json_int(_get(e, "infer", "end_time"), f"{where}: end_time")
        except ResultFileError as exc:
            raise LogFormatError(str(exc)) from None
        if n <= 0 or start < 0 or end < 0 or start == end:
            raise LogFormatError(f"{where}: {n} iterations from {start} to {end} us")
        windows.append(PerfWindow(inferences=n, start_us=start, end_us=end))
    return windows


# --------------------------------------------------------------------------------------------
# Published claim and dispatch


def _results_text(folder: Path) -> str | None:
    """What the runner printed as the result: ``results.txt``, or in early rounds the EEMBC
    post-processing output ``postproc.txt``."""
    path = _find(folder, "results.txt") or _find(folder, "postproc.txt")
    return None if path is None else _text(path)


def _number(text: str) -> float | None:
    """A printed decimal; None for anything else (``1.2.3``, an empty match)."""
    try:
        return float(text)
    except ValueError:
        return None


def published_value(folder: Path) -> tuple[float, str] | None:
    """The median ``results.txt`` claims, as ``(value, unit)``; None if it prints none.

    Energy wins over throughput: an EEMBC energy ``results.txt`` also prints a throughput from
    the energy timestamps, which is not the published one. A streaming-wake-word
    ``results.txt`` prints an ``Estimated throughput`` instead of a median, and its energy run
    is published as the stream's mean power (``Power : X mW``, as the submission checker reads
    it).
    """
    text = _results_text(folder)
    if text is None:
        return None
    text = _unix(text)
    if (_SWW_THROUGHPUT.search(text) or _SWW_COUNTS.search(text)) and (
            m := _SWW_POWER.search(text)) and (value := _number(m.group(1))) is not None:
        return value, "mW"  # a streamed file's energy run reports its mean power
    for pattern, unit in ((_MEDIAN_ENERGY, "uJ/inf"), (_MEDIAN_THROUGHPUT, "inf/s"),
                          (_SWW_THROUGHPUT, "inf/s")):
        match = pattern.search(text)
        if match and (value := _number(match.group(1))) is not None:
            return value, unit
    return None


def score_published(folder: Path) -> TinyResult:
    """Detect a published folder's kind, re-derive its score with our rules, and return it.

    Kinds: EEMBC energy (``trace1-energy.bin``), MLCommons energy or performance
    (``results.json`` with mode ``"e"``/``"p"``), EEMBC performance (``log.txt`` with laps).
    ``extras["source"]`` says which reader was used. A folder with no raw data to re-derive
    from raises :class:`LogFormatError` rather than echoing its printed claim.
    """
    folder = Path(folder)
    if (folder / "trace1-energy.bin").is_file():
        result, source = read_eembc_energy(folder).score(), "eembc-energy"
    elif (results_json := _find(folder, "results.json")) is not None:
        modes = {str(e.get("mode")) for e in _load_results_json(results_json)}
        if "e" in modes:
            result, source = read_mlcommons_energy(folder).score(), "mlcommons-energy"
        elif "p" in modes:
            result = score_performance(read_mlcommons_performance(folder))
            source = "mlcommons-performance"
        else:
            raise LogFormatError(
                f"{results_json}: modes {sorted(modes)}, no energy or performance "
                "windows to score"
            )
    elif (log := _find(folder, "log.txt")) is not None and _LAP_US.search(_text(log)):
        result, source = score_performance(read_eembc_performance(folder)), "eembc-performance"
    elif (claim := published_value(folder)) is not None:
        raise LogFormatError(
            f"{folder}: summary only: no raw trace to re-derive from "
            f"(results.txt claims {claim[0]} {claim[1]})"
        )
    else:
        raise LogFormatError(f"{folder}: not an MLPerf Tiny energy or performance result folder")
    result.extras["source"] = source
    return result


# --------------------------------------------------------------------------------------------
# What results.txt prints per window (a claim to check against the raw files)

_EEMBC_WINDOW = re.compile(
    r"Energy data for window (\d+) at time ([\d.]+) for ([\d.]+) sec\.:\s*\n"
    r".*?Energy\s+:\s+([\d.]+) uJ\s*\n"
    r".*?Power\s+:\s+([\d.]+) uW\s*\n"
    r".*?Energy/Inf\.\s+:\s+([\d.]+) uJ/inf"
)
_MLCOMMONS_TRIAL = re.compile(
    r"Energy data for trial (\d+)\s*\n"
    r"\s*Elapsed time\s*:\s*([\d.e+-]+)[^\n]*\n"
    r"\s*Inferences\s*:\s*(\d+)\s*\n"
    r"\s*Power\s*:\s*([\d.]+) mW\.?\s*\n"
    r"\s*Total Energy\s*:\s*([\d.]+) uJ\s*\n"
    r"\s*Energy/Inf\s*:\s*([\d.]+) uJ/inf"
)
_PERF_WINDOW = re.compile(
    r"Performance results for window (\d+):?\s*\n"
    r".*?# Inferences\s*:\s*(\d+)\s*\n"
    r".*?Runtime\s*:?\s*([\d.]+) sec\.\s*\n"
    r".*?Throughput\s*:?\s*([\d.]+) inf\./sec"
)
_TOP1 = re.compile(r"Top[- ]1(?::|%\s*=)\s*([\d.]+)")
_AUC = re.compile(r"AUC\s*[:=]\s*([\d.]+)")
_SWW_POWER = re.compile(
    r"Energy data for trial \d+\s*\n(?:[^\n]*\n){0,3}?\s*Power\s*:\s*([\d.]+) mW")
_SWW_THROUGHPUT = re.compile(r"Estimated throughput:\s*([\d.eE+-]+) inf\./sec")
_SWW_COUNTS = re.compile(
    r"Accuracy:\s*(\d+) True positives,\s*(\d+) False negatives,\s*(\d+) False positives")


@dataclass(frozen=True)
class PrintedWindow:
    """One window as ``results.txt`` prints it, values kept as text to compare at print precision.

    Energy windows fill ``energy_uj``/``power``/``per_inference_uj`` (``power`` in uW for the
    EEMBC runner, mW for the MLCommons runner); performance windows fill ``inferences``,
    ``runtime_s`` and ``throughput``.
    """

    label: str
    duration_s: str = ""
    energy_uj: str = ""
    power: str = ""
    per_inference_uj: str = ""
    inferences: str = ""
    runtime_s: str = ""
    throughput: str = ""


def _unix(text: str) -> str:
    """Text with ``\\r\\n`` and lone ``\\r`` line ends as ``\\n``, so multi-line patterns match."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def printed_energy_windows(folder: Path) -> list[PrintedWindow]:
    """The energy windows (EEMBC) or trials (MLCommons) ``results.txt`` prints, in order."""
    text = _results_text(folder)
    if text is None:
        return []
    text = _unix(text)
    windows = [
        PrintedWindow(label=m[0], duration_s=m[2], energy_uj=m[3], power=m[4],
                      per_inference_uj=m[5])
        for m in _EEMBC_WINDOW.findall(text)
    ]
    return windows or [
        PrintedWindow(label=m[0], duration_s=m[1], inferences=m[2], power=m[3],
                      energy_uj=m[4], per_inference_uj=m[5])
        for m in _MLCOMMONS_TRIAL.findall(text)
    ]


def printed_performance_windows(folder: Path) -> list[PrintedWindow]:
    """The performance windows ``results.txt`` prints, in order."""
    text = _results_text(folder)
    if text is None:
        return []
    return [
        PrintedWindow(label=m[0], inferences=m[1], runtime_s=m[2], throughput=m[3])
        for m in _PERF_WINDOW.findall(_unix(text))
    ]


def score_eembc_summary(folder: Path) -> TinyResult:
    """Re-derive an EEMBC energy median from its printed windows when no trace was published.

    Early EEMBC runs kept only ``results.txt`` and ``log.txt``: each window's energy is
    printed, N is in the log, so the median of energy/N is checkable even though the window
    energies themselves are not. Windows with their printed duration go through the same
    :func:`score_energy` as everything else.
    """
    windows = printed_energy_windows(folder)
    if not windows:
        raise LogFormatError(f"{folder}: results.txt prints no energy windows to re-derive from")
    counts = _eembc_inference_counts(_require(folder, "log.txt"))
    if len(counts) == 1:
        counts = counts * len(windows)
    if len(counts) != len(windows):
        raise LogFormatError(
            f"{folder}: results.txt prints {len(windows)} windows but log.txt ran "
            f"{len(counts)} infer commands"
        )
    energies = []
    for w, n in zip(windows, counts, strict=True):
        energy_j, power_w = _number(w.energy_uj), _number(w.power)
        printed_s = _number(w.duration_s)
        if energy_j is None or power_w is None or printed_s is None:
            raise LogFormatError(f"{folder}: window {w.label} prints unreadable numbers")
        energy_j, power_w = energy_j * 1e-6, power_w * 1e-6
        duration_s = energy_j / power_w if power_w > 0 else printed_s
        window = Window(start_s=0.0, end_s=duration_s, work_count=n, source="eembc-printed",
                        alignment_bound_s=float("nan"), label=w.label)
        energies.append(WindowEnergy(window, energy_j, round(duration_s * 1000), duration_s))
    result = score_energy(energies)
    result.extras["source"] = "eembc-summary"
    return result


# --------------------------------------------------------------------------------------------
# Accuracy: both runners


@dataclass
class AccuracyRun:
    """Per-file outputs and labels of an accuracy run, ready to score.

    ``outputs[i]`` is file ``files[i]``'s result vector, averaged over its segments (anomaly
    detection sends several windows of one file) after scaling each to sum 1 where it has more
    than one class, as the MLCommons runner does. ``expected`` is how many files the run was
    meant to cover (the script's ``bload`` count, the runner's "full set", or the label list),
    so a truncated log is recognised as incomplete rather than scored as a worse accuracy.
    """

    files: list[str]
    outputs: list[list[float]]
    labels: list[int]
    suite: str
    label_source: str
    expected: int | None = None
    results_seen: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def incomplete(self) -> bool:
        return self.expected is not None and len(self.files) < self.expected


_BLOAD_FILE = re.compile(r'Command "bload\b.*?([^"\\/\s]+\.bin)')
_SCRIPT_BLOAD = re.compile(r"bload\b[^\n]*?([^\"'\\/\s]+\.bin)")
_RESULTS = re.compile(r"m-results-\[([^\]]*)\]")
_MODEL = re.compile(r"m-model-\[([a-z]+\d\d)\]|key\[model\]-val\[([a-z]+\d\d)\]")
_FULL_SET = re.compile(r"Using full set \((\d+) test files\)")


def parse_results_vector(inner: str, where: object) -> list[float]:
    """The numbers inside ``m-results-[...]``: a trailing comma and spaces are tolerated."""
    values = []
    for item in inner.split(","):
        item = item.strip()
        if not item:
            continue
        value = _number(item)
        if value is None or value != value or abs(value) == float("inf"):
            raise LogFormatError(f"{where}: m-results value {printable(item)[:30]!r} is not a "
                                 "finite number")
        values.append(value)
    if not values:
        raise LogFormatError(f"{where}: m-results line holds no values")
    return values


def _suite_of(text: str) -> str | None:
    match = _MODEL.search(text)
    return (match.group(1) or match.group(2)) if match else None


def _normalised(vector: list[float]) -> list[float]:
    """The MLCommons runner's ``normalize_probabilities`` for multi-class outputs (an all-zero
    vector, which would make the runner divide by zero, stays zero)."""
    if len(vector) == 1:
        return vector
    total = sum(vector)
    return [v / total for v in vector] if total > 0 else vector


def _per_file(pairs: list[tuple[str, list[float]]], where: object
              ) -> tuple[list[str], list[list[float]]]:
    """Average each file's (normalised) result vectors over its segments, first-seen order."""
    grouped: dict[str, list[list[float]]] = {}
    for name, vector in pairs:
        grouped.setdefault(name, []).append(_normalised(vector))
    widths = {len(v) for vs in grouped.values() for v in vs}
    if len(widths) > 1:
        raise LogFormatError(f"{where}: result vectors of different lengths {sorted(widths)}")
    return list(grouped), [list(np.mean(vs, axis=0)) for vs in grouped.values()]


def _labels_from_list(files: list[str], suite: str | None, where: object
                      ) -> tuple[list[int], LabelList]:
    label_list = best_list(files, suite)
    if label_list is None:
        raise LogFormatError(
            f"{where}: none of the {len(files)} files is in an evaluation set's label list"
            + (f" for {suite}" if suite else "") + f" (first: {printable(files[0])})")
    labels = [label_list.lookup(f) for f in files]
    missing = [f for f, lab in zip(files, labels, strict=True) if lab is None]
    if missing:
        raise LogFormatError(
            f"{where}: {len(missing)} of {len(files)} files are not in {label_list.name} "
            f"(first: {printable(missing[0])}): their class is unknown")
    return [int(lab) for lab in labels if lab is not None], label_list


def read_eembc_accuracy(folder: Path) -> AccuracyRun:
    """Pair each ``bload ... <file>.bin`` command with the next ``m-results-[...]``.

    Labels come from the evaluation set's label list, looked up by file name
    (:mod:`tinypower.results.labels`), never from the name itself. A file loaded but never
    inferred in the middle of the log is an error (the top-1 would be over other files than
    the log claims); one at the end is a truncated log, reported through ``expected``.
    """
    log = _require(folder, "log.txt")
    text = _text(log)
    pairs: list[tuple[str, list[float]]] = []
    pending: str | None = None
    for lineno, line in enumerate(lines(text), 1):
        if (load := _BLOAD_FILE.search(line)) is not None:
            if pending is not None:
                raise LogFormatError(f"{log}:{lineno}: {printable(pending)} was loaded but "
                                     "never inferred")
            pending = load.group(1)
        elif (res := _RESULTS.search(line)) is not None and pending is not None:
            pairs.append((pending, parse_results_vector(res.group(1), f"{log}:{lineno}")))
            pending = None
    if not pairs:
        raise LogFormatError(f"{log}: no bload/m-results pairs: not an accuracy log")
    files, outputs = _per_file(pairs, log)
    suite = _suite_of(text)
    labels, label_list = _labels_from_list(files, suite, log)
    expected = None
    script = _find(folder, "script.async")
    if script is not None:
        scripted = set(_SCRIPT_BLOAD.findall(_text(script)))
        expected = len(scripted) or None
    expected = expected or len(label_list.labels)
    return AccuracyRun(files, outputs, labels, label_list.suite, label_list.name, expected,
                       len(pairs))


def read_mlcommons_accuracy(folder: Path) -> AccuracyRun:
    """The accuracy elements of an MLCommons-runner ``results.json`` (v1.3 on).

    As the runner's ``summarize_result``: elements without ``infer``/``class``/``file`` or
    with an ``error`` are skipped; each file's class is the runner's own record (``class``);
    vectors are scaled to sum 1 and averaged per file.
    """
    path = _require(folder, "results.json")
    pairs: list[tuple[str, list[float]]] = []
    classes: dict[str, int] = {}
    skipped = 0
    for i, e in enumerate(_load_results_json(path)):
        results = _get(e, "infer", "results")
        if "class" not in e or "file" not in e or results is None or e.get("error"):
            skipped += 1
            continue
        where = f"{path}: element {i}"
        if not isinstance(results, list) or not results:
            raise LogFormatError(f"{where}: infer.results is not a list of numbers")
        try:
            vector = [json_float(v, where) for v in results]
            label = json_int(e["class"], f"{where}: class")
        except ResultFileError as exc:
            raise LogFormatError(str(exc)) from None
        name = printable(e["file"])
        if classes.setdefault(name, label) != label:
            raise LogFormatError(f"{where}: {name} recorded with classes {classes[name]} and "
                                 f"{label}")
        pairs.append((name, vector))
    if not pairs:
        raise LogFormatError(f"{path}: no accuracy elements (file, class, infer.results)")
    files, outputs = _per_file(pairs, path)
    labels = [classes[f] for f in files]
    log = _find(folder, "log.txt")
    log_text = _text(log) if log is not None else ""
    suite = _suite_of(log_text) or _suite_from_record(log_text)
    label_list = best_list(files, suite)
    full = _FULL_SET.search(log_text)
    expected = (to_int(full.group(1), log) if full
                else len(label_list.labels) if label_list else None)
    run = AccuracyRun(files, outputs, labels, label_list.suite if label_list else (suite or ""),
                      "results.json", expected, len(pairs))
    if skipped:
        run.notes.append(f"{skipped} element(s) without a file, class or result, or marked as "
                         "an error, skipped as the runner skips them")
    if label_list is not None:
        differ = [f for f, lab in zip(files, labels, strict=True)
                  if label_list.lookup(f) not in (None, lab)]
        if differ:
            run.notes.append(f"warning: {len(differ)} file(s) recorded with a class other than "
                             f"{label_list.name} gives (first: {differ[0]})")
    return run


def _suite_from_record(log_text: str) -> str | None:
    match = re.search(r"Device model retrieved:\s*([a-z]+\d\d)", log_text)
    return match.group(1) if match else None


def published_top1(folder: Path) -> float | None:
    """The top-1 percentage an accuracy ``results.txt`` prints, if any."""
    text = _results_text(folder)
    match = _TOP1.search(text) if text is not None else None
    return _number(match.group(1)) if match else None


def published_auc(folder: Path) -> tuple[float, str] | None:
    """The AUC an accuracy ``results.txt`` prints, with its text (for its precision)."""
    text = _results_text(folder)
    match = _AUC.search(text) if text is not None else None
    value = _number(match.group(1)) if match else None
    return (value, match.group(1)) if match and value is not None else None


# --------------------------------------------------------------------------------------------
# Streaming wake word (MLCommons runner, v1.3 on)


@dataclass
class SwwRun:
    """One streamed wav file: the DUT's processing pulses and its wake-word detections."""

    wav_file: str
    start_times_s: list[float]
    stop_times_s: list[float]
    processing_time_s: float  # as the runner recorded it
    detections_ms: list[int]
    windows_s: list[tuple[float, float]]
    period_s: float = float("nan")

    def duty_cycle(self) -> tuple[float, float, float]:
        """(mean on-time s, mean period s, duty cycle) from the raw pulse edges, as the runner's
        ``process_dutycycle`` (unequal counts cut to the shorter); without edges, the
        runner's own recorded processing time and period."""
        n = min(len(self.start_times_s), len(self.stop_times_s))
        if n < 2:
            if self.processing_time_s > 0 and self.period_s > 0:
                return (self.processing_time_s, self.period_s,
                        self.processing_time_s / self.period_s)
            raise LogFormatError(f"{self.wav_file}: {n} processing pulse(s) and no recorded "
                                 "processing time: no throughput")
        starts = np.asarray(self.start_times_s[:n])
        stops = np.asarray(self.stop_times_s[:n])
        on = float(np.mean(stops - starts))
        period = float(np.mean(np.diff(starts)))
        if not (on > 0 and period > 0):
            raise LogFormatError(f"{self.wav_file}: processing pulses give on-time {on} s and "
                                 f"period {period} s")
        return on, period, on / period

    def throughput(self) -> float:
        """Inferences per second the DUT could sustain: 1 / mean processing time."""
        return 1.0 / self.duty_cycle()[0]

    def detection_counts(self) -> tuple[int, int, int]:
        """(true positives, false negatives, false positives) as the runner counts them."""
        return detection_stats(self.detections_ms, self.windows_s)


def detection_stats(detections_ms: Sequence[int], windows_s: Sequence[tuple[float, float]],
                    suppression_s: float = 1.0, debounce_s: float = 1.0
                    ) -> tuple[int, int, int]:
    """Count detections as the MLCommons runner's ``calc_detection_stats`` does.

    The first detection marks the start of the stream; the others are times from it. A true
    window (start, stop) is found if any detection lies in [start, stop + 2 x suppression]
    (the runner adds the suppression delay twice); those detections are used up. Of what is
    left, detections within ``debounce_s`` after a kept one are merged into it; the rest are
    false positives.
    """
    if not detections_ms:
        raise LogFormatError("no detections captured: the first marks the start of the run")
    start = detections_ms[0]
    free = [d - start for d in detections_ms[1:]]  # ms, as the runner keeps them
    tp = fn = 0
    for w_start, w_stop in windows_s:
        hi = (w_stop + suppression_s) + suppression_s
        hit = [t for t in free if w_start <= t / 1000 <= hi]
        if hit:
            tp += 1
            free = [t for t in free if not w_start <= t / 1000 <= hi]
        else:
            fn += 1
    kept: list[int] = []
    debounce_ms = int(debounce_s * 1000)
    for t in free:  # in stream order, as the runner walks them
        if kept and kept[-1] < t <= kept[-1] + debounce_ms:
            continue
        kept.append(t)
    return tp, fn, len(kept)


def read_sww(folder: Path) -> list[SwwRun]:
    """The streamed files of an MLCommons-runner streaming-wake-word ``results.json``."""
    path = _require(folder, "results.json")
    runs = []
    for i, e in enumerate(_load_results_json(path)):
        infer = _get(e, "infer")
        if not isinstance(infer, dict) or "detections" not in infer:
            continue
        where = f"{path}: element {i}"
        try:
            duty = _get(e, "dutycycle") or {}
            starts = [json_float(v, where) for v in _list(duty.get("start_times_s"), where)]
            stops = [json_float(v, where) for v in _list(duty.get("stop_times_s"), where)]
            if not isinstance(duty, dict):
                raise LogFormatError(f"{where}: dutycycle is not an object")
            processing = duty.get("processing_time")
            period = duty.get("period")
            detections = [json_int(v, where) for v in _list(infer.get("detections"), where)]
            windows = []
            for w in _list(infer.get("detection_windows"), where):
                if not isinstance(w, list) or len(w) != 2:
                    raise LogFormatError(f"{where}: detection window {printable(w)[:40]} is "
                                         "not [start, stop]")
                windows.append((json_float(w[0], where), json_float(w[1], where)))
            runs.append(SwwRun(
                wav_file=printable(infer.get("wav_file", "")), start_times_s=starts,
                stop_times_s=stops,
                processing_time_s=(json_float(processing, where) if processing is not None
                                   else float("nan")),
                detections_ms=detections, windows_s=windows,
                period_s=json_float(period, where) if period is not None else float("nan")))
        except LogFormatError:
            raise
        except ResultFileError as exc:
            raise LogFormatError(str(exc)) from None
    if not runs:
        raise LogFormatError(f"{path}: no streamed file (infer.detections) to score")
    return runs


def _list(value: Any, where: object) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise LogFormatError(f"{where}: expected a list, got {printable(repr(value))[:40]}")
    return value


def is_sww(folder: Path) -> bool:
    """Whether the folder's ``results.json`` is a streaming-wake-word run."""
    path = _find(folder, "results.json")
    if path is None:
        return False
    try:
        return any(isinstance(_get(e, "infer"), dict) and "detections" in e["infer"]
                   for e in _load_results_json(path))
    except LogFormatError:
        return False


def published_sww(folder: Path) -> dict[str, Any]:
    """What a streaming-wake-word ``results.txt`` prints: throughput, duty cycle, counts."""
    text = _results_text(folder) or ""
    out: dict[str, Any] = {}
    if m := _SWW_THROUGHPUT.search(text):
        out["throughput"] = _number(m.group(1))
    if m := re.search(r"Average duty cycle:\s*([\d.eE+-]+)", text):
        out["duty_cycle"] = _number(m.group(1))
    if m := re.search(r"Average period:\s*([\d.eE+-]+) s", text):
        out["period_s"] = _number(m.group(1))
    if m := _SWW_COUNTS.search(text):
        out["counts"] = tuple(int(g) for g in m.groups()[:3] if len(g) <= 9)
    return out
