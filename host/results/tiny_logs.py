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

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from energy_monitor.trace import (
    Event,
    Trace,
    Window,
    WindowEnergy,
    integrate,
    window_from_events,
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


class LogFormatError(ValueError):
    """A published result file cannot be read or scored; the message names the file and why."""


def _find(folder: Path, name: str) -> Path | None:
    """``folder/name``, or its prefixed variant (``energy_log.txt``) that some submitters use."""
    exact = folder / name
    if exact.is_file():
        return exact
    variants = sorted(folder.glob(f"*_{name}"))
    return variants[0] if len(variants) == 1 else None


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
    data = path.read_bytes()
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
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LogFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, list) or not all(
        isinstance(t, int | float) and not isinstance(t, bool) for t in raw
    ):
        raise LogFormatError(f"{path}: expected a JSON list of times in seconds")
    times = [float(t) for t in raw]
    if any(b < a for a, b in pairwise(times)):
        raise LogFormatError(f"{path}: timestamps are not in time order")
    return times


def _eembc_inference_counts(log: Path) -> list[int]:
    """N for each window: one per ``Command "... infer N W"``, else ``iterInfer`` x 5.

    The infer commands also say how many windows the runner ran, which is what the timestamp
    count must be checked against; only a log without them falls back to the required five.
    """
    text = log.read_text(errors="replace")
    counts = [int(m.group(1)) for m in _INFER_COMMAND.finditer(text)]
    if counts:
        return counts
    cfg = _ITER_INFER.search(text)
    if cfg is None:
        raise LogFormatError(
            f"{log}: no 'infer N W' command and no iterInfer setting: inference count unknown"
        )
    return [int(cfg.group(1))] * REQUIRED_WINDOWS


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
    for line in log.read_text(errors="replace").splitlines():
        infer = _INFER_COMMAND.search(line)
        if infer:
            groups.append((int(infer.group(1)), []))
            in_infer = True
        elif _ANY_COMMAND.search(line):
            in_infer = False
        elif in_infer and (lap := _LAP_US.search(line)):
            groups[-1][1].append(int(lap.group(1)))
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
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LogFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise LogFormatError(f"{path}: expected a list of window objects")
    return data


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
        try:
            power = element["power"]
            samples = np.asarray(power["samples"], dtype=np.float64)
            events = [
                Event(index=int(idx), time_s=int(idx) / MLCOMMONS_SAMPLE_RATE_HZ)
                for _counter, idx in power["timestamps"]
            ]
            iterations = int(element["infer"]["iterations"])
            trace = Trace(sample_rate_hz=MLCOMMONS_SAMPLE_RATE_HZ, energy_j=samples, events=events)
            window = window_from_events(events, trace, work_count=iterations, label=str(i))
        except (KeyError, TypeError, ValueError) as exc:
            # TraceError is a ValueError: a trial with < 2 edges lands here too.
            raise LogFormatError(f"{path}: trial {i}: {exc}") from exc
        if window.end_index > len(trace):
            raise LogFormatError(
                f"{path}: trial {i} ends at sample {window.end_index} but holds {len(trace)}"
            )
        traces.append(trace)
        windows.append(window)
    return MlcommonsEnergyRun(folder=folder, traces=traces, windows=windows)


def read_mlcommons_performance(folder: Path) -> list[PerfWindow]:
    """One :class:`PerfWindow` per ``"mode": "p"`` element: DUT laps ``start/end_time`` in us."""
    path, elements = _mlcommons_elements(folder, "p")
    try:
        return [
            PerfWindow(
                inferences=int(e["infer"]["iterations"]),
                start_us=int(e["infer"]["start_time"]),
                end_us=int(e["infer"]["end_time"]),
            )
            for e in elements
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise LogFormatError(f"{path}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Published claim and dispatch


def published_value(folder: Path) -> tuple[float, str] | None:
    """The median ``results.txt`` claims, as ``(value, unit)``; None if it prints none.

    Energy wins over throughput: an EEMBC energy ``results.txt`` also prints a throughput from
    the energy timestamps, which is not the published one.
    """
    path = _find(folder, "results.txt")
    if path is None:
        return None
    text = path.read_text(errors="replace")
    for pattern, unit in ((_MEDIAN_ENERGY, "uJ/inf"), (_MEDIAN_THROUGHPUT, "inf/s")):
        match = pattern.search(text)
        if match:
            return float(match.group(1)), unit
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
        modes = {e.get("mode") for e in _load_results_json(results_json)}
        if "e" in modes:
            result, source = read_mlcommons_energy(folder).score(), "mlcommons-energy"
        elif "p" in modes:
            result = score_performance(read_mlcommons_performance(folder))
            source = "mlcommons-performance"
        else:
            raise LogFormatError(
                f"{results_json}: modes {sorted(map(str, modes))}, no energy or performance "
                "windows to score"
            )
    elif (log := _find(folder, "log.txt")) is not None and _LAP_US.search(
        log.read_text(errors="replace")
    ):
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
    r"\s*Elapsed time\s*:\s*([\d.e+-]+)\s*\n"
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


def printed_energy_windows(folder: Path) -> list[PrintedWindow]:
    """The energy windows (EEMBC) or trials (MLCommons) ``results.txt`` prints, in order."""
    path = _find(folder, "results.txt")
    if path is None:
        return []
    text = path.read_text(errors="replace")
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
    path = _find(folder, "results.txt")
    if path is None:
        return []
    return [
        PrintedWindow(label=m[0], inferences=m[1], runtime_s=m[2], throughput=m[3])
        for m in _PERF_WINDOW.findall(path.read_text(errors="replace"))
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
        energy_j = float(w.energy_uj) * 1e-6
        power_w = float(w.power) * 1e-6
        duration_s = energy_j / power_w if power_w > 0 else float(w.duration_s)
        window = Window(start_s=0.0, end_s=duration_s, work_count=n, source="eembc-printed",
                        alignment_bound_s=float("nan"), label=w.label)
        energies.append(WindowEnergy(window, energy_j, round(duration_s * 1000), duration_s))
    result = score_energy(energies)
    result.extras["source"] = "eembc-summary"
    return result


@dataclass
class AccuracyRun:
    """Per-file outputs and labels of an EEMBC accuracy log."""

    files: list[str]
    outputs: list[list[float]]
    labels: list[int]


_BLOAD_FILE = re.compile(r'Command "bload .*?([^"\\/]+\.bin)')
_RESULTS = re.compile(r"m-results-\[([^\]]*)\]")
_LABEL = re.compile(r"_(\d+)\.bin$")


def read_eembc_accuracy(folder: Path) -> AccuracyRun:
    """Pair each ``bload ... <file>.bin`` command with the next ``m-results-[...]``.

    The label is the file name's trailing ``_<class>.bin`` (``tst_000000_Stop_7.bin`` -> 7).
    A file without a result, or a result without a file, is an error: the top-1 would be over
    a different set of files than the log claims.
    """
    log = _require(folder, "log.txt")
    files: list[str] = []
    outputs: list[list[float]] = []
    pending: str | None = None
    for lineno, line in enumerate(log.read_text(errors="replace").splitlines(), 1):
        if (load := _BLOAD_FILE.search(line)) is not None:
            if pending is not None:
                raise LogFormatError(f"{log}:{lineno}: {pending} was loaded but never inferred")
            pending = load.group(1)
        elif (res := _RESULTS.search(line)) is not None and pending is not None:
            try:
                outputs.append([float(v) for v in res.group(1).split(",")])
            except ValueError:
                raise LogFormatError(f"{log}:{lineno}: unreadable m-results line") from None
            files.append(pending)
            pending = None
    if not files:
        raise LogFormatError(f"{log}: no bload/m-results pairs: not an accuracy log")
    labels = []
    for name in files:
        label = _LABEL.search(name)
        if label is None:
            raise LogFormatError(f"{log}: {name} has no trailing _<class>.bin label")
        labels.append(int(label.group(1)))
    return AccuracyRun(files=files, outputs=outputs, labels=labels)


def published_top1(folder: Path) -> float | None:
    """The top-1 percentage an accuracy ``results.txt`` prints, if any."""
    path = _find(folder, "results.txt")
    if path is None:
        return None
    match = _TOP1.search(path.read_text(errors="replace"))
    return float(match.group(1)) if match else None
