"""Re-derive published MLPerf scores (and our own) from their raw files, and say where they differ.

Why: a published number is a claim; the raw files beside it are the evidence. For each result
folder this module reads the rawest files with the existing readers
(:mod:`tinypower.results.tiny_logs`, :mod:`tinypower.results.power_logs`), scores them with the
same rules code that scores our runs, compares with the published value and gives a status:

- ``match``: the derived value agrees within 0.01% (or to the published print precision, or,
  for an EEMBC trace, within the +-1 sample window ambiguity, with the range stated);
- ``mismatch``: the files give a different number than the one published;
- ``flagged``: the files do not support the published value at all (a missing or damaged file,
  a lost timestamp so windows measure the wrong interval, results listing windows the log cannot
  produce, printed windows the raw data does not reproduce, fewer than five windows);
- ``unsupported``: nothing here can be re-derived (a kind we do not read, or no published
  value to compare with).

Formats and rules: ``shared/reference/published-logs.md``. Our own session folders rescore to
their stored value from ``trace.npz`` (energy) or ``transcript.log`` (performance).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from energy_monitor.trace import TraceError, integrate, load_trace, window_from_events
from tinypower.results.logio import ResultFileError, lines, printable, read_json, read_text
from tinypower.results.power_logs import (
    era_rules,
    read_mlperf_log,
    score_power_folder,
)
from tinypower.results.record import (
    DUT_LAP_RESOLUTION_S,
    RecordError,
    ResultRecord,
    file_hashes,
    power_validity,
    primary_meter_identity,
    records_from_session,
)
from tinypower.results.tiny_logs import (
    AccuracyRun,
    EembcEnergyRun,
    LogFormatError,
    _find,
    _load_results_json,
    is_sww,
    printed_energy_windows,
    printed_performance_windows,
    published_auc,
    published_sww,
    published_top1,
    published_value,
    read_eembc_accuracy,
    read_eembc_energy,
    read_eembc_performance,
    read_mlcommons_accuracy,
    read_mlcommons_energy,
    read_mlcommons_performance,
    read_sww,
    runner_errors,
    score_eembc_summary,
)
from tinypower.rules.power import SCENARIO_NAMES, score_for_scenario
from tinypower.rules.tiny import (
    REQUIRED_WINDOWS,
    PerfWindow,
    TinyResult,
    accuracy_scores,
    median,
    score_energy,
    score_performance,
)

STATUSES = ("match", "mismatch", "flagged", "unsupported")
REL_TOLERANCE = 1e-4  # 0.01%
PRINT_TOLERANCE_UJ = 0.0051  # a printed 3-decimal uJ value, plus float noise
PERF_CROSSCHECK_TOLERANCE = 0.05  # energy window vs N x performance-mode latency
EEMBC_OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))
BENCHMARKS = {
    "kws": "kws01", "keyword_spotting": "kws01", "kws01": "kws01",
    "vww": "vww01", "visual_wake_words": "vww01", "vww01": "vww01",
    "ic": "ic01", "image_classification": "ic01", "ic01": "ic01",
    "ad": "ad01", "anomaly_detection": "ad01", "ad01": "ad01",
    "sww": "sww01", "streaming_wakeword": "sww01", "sww01": "sww01", "strww01": "sww01",
    "ic2": "ic02", "ic02": "ic02",
}
TINY_MODES = ("energy", "performance", "accuracy", "power", "enegy")
_VERSION = re.compile(r"^v(\d{1,3})\.(\d{1,3})$")
_REPO_VERSION = re.compile(r"results_v(\d{1,3})\.(\d{1,3})$", re.IGNORECASE)
_SUFFIX_VERSION = re.compile(r"[_-]v(\d{1,3})\.(\d{1,3})$")
_TRANSCRIPT_INFER = re.compile(r"^[\d.]+ > (?:\S+ )*?infer (\d+)(?: (\d+))?")
_TRANSCRIPT_LAP = re.compile(r"^[\d.]+ < .*m-lap-us-(\d+)")
_TRANSCRIPT_SENT = re.compile(r"^[\d.]+ > ")


class RescoreError(ValueError):
    """The path cannot be rescored at all (nothing found); the message says what to pass."""


@dataclass
class CaseResult:
    """One rescored folder: what was published, what the files give, and why they differ."""

    path: Path
    kind: str
    published: float | None
    derived: float | None
    unit: str
    status: str = "unsupported"
    reasons: list[str] = field(default_factory=list)
    derived_range: tuple[float, float] | None = None
    # For the result record: system, benchmark, scenario, metric, scale, measured_as,
    # energy_j, duration_s, work_count, power_w, meter, alignment_bound_s.
    facts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` line: path, kind, published, derived, unit, status, reasons."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "published": self.published,
            "derived": None if self.derived is None or math.isnan(self.derived) else self.derived,
            "unit": self.unit,
            "status": self.status,
            "reasons": self.reasons,
            "derived_range": list(self.derived_range) if self.derived_range else None,
        }

    def to_record(self) -> ResultRecord:
        """This case as a result record (the derived value, marked valid only on a match)."""
        f = self.facts
        failed = () if self.status == "match" else (f"rescore.{self.status}",)
        derived = None if self.derived is None or math.isnan(self.derived) else self.derived
        return ResultRecord(
            system=f.get("system", self.path.name),
            scale=f.get("scale", "tiny"),
            benchmark=f.get("benchmark", ""),
            scenario=f.get("scenario", ""),
            metric=f.get("metric", ""),
            value=derived,
            unit=self.unit,
            measured_as=f.get("measured_as", "hardware"),
            energy_j=f.get("energy_j"),
            duration_s=f.get("duration_s"),
            work_count=f.get("work_count"),
            power_w=f.get("power_w"),
            meter=f.get("meter", ""),
            alignment_bound_s=f.get("alignment_bound_s"),
            valid=self.status == "match",
            failed_rules=failed,
            artifacts_sha256=file_hashes(self.path),
            source=str(self.path.resolve()),
            extras={"kind": self.kind, "published": self.published, "status": self.status,
                    "reasons": "; ".join(self.reasons)},
        )


# --------------------------------------------------------------------------------------------
# Finding cases


_COMPLIANCE = re.compile(r"^TEST\d\d$", re.IGNORECASE)
# Result folders whose files are missing or unrecognised are still reported, never dropped.
MISSING_FILES = "tiny_unreadable"


def _has_power_logs(folder: Path) -> bool:
    """A LoadGen folder holds a power result: a ranging run, the director's logs or spl.txt."""
    return ((folder / "ranging").is_dir() or (folder / "power").is_dir()
            or (folder / "run_1" / "spl.txt").is_file())


def _results_json_kind(path: Path) -> str:
    try:
        elements = _load_results_json(path)
    except LogFormatError:
        return "tiny_newrunner_unreadable"
    modes = {str(e.get("mode")) for e in elements}
    if is_sww(path.parent):
        return "tiny_sww_energy_newrunner" if "e" in modes else "tiny_sww_perf_newrunner"
    if "e" in modes:
        return "tiny_energy_newrunner"
    return "tiny_perf_newrunner" if "p" in modes else "tiny_accuracy_newrunner"


def classify(folder: Path) -> tuple[str | None, str | None]:
    """``(kind, None)`` for a result folder, ``(None, why)`` for one that is not a result of a
    kind rescored here (skipped, listed once), ``(None, None)`` for anything else."""
    if (folder / "session.json").is_file():
        return "tinypower_session", None
    if _COMPLIANCE.match(folder.name):
        return None, "compliance test folder (TEST0x), not a result"
    if (folder / "run_1").is_dir() or (folder / "ranging").is_dir():
        if _has_power_logs(folder):
            return "power", None
        return None, "MLPerf Inference result without power logs"
    if any((folder / "power" / name).is_file()
           for name in ("server.json", "client.json", "ptd_logs.txt")):
        return "power", None  # the director's logs without the runs: reported, flagged
    if (folder / "mlperf_log_accuracy.json").is_file() or (
            folder / "mlperf_log_detail.txt").is_file():
        return None, "MLPerf Inference accuracy or LoadGen log folder, not a power result"
    if _find(folder, "trace1-energy.bin") or _find(folder, "trace1-timestamps.json"):
        return "tiny_energy_eembc", None
    if (results_json := _find(folder, "results.json")) is not None:
        return _results_json_kind(results_json), None
    results_txt = _find(folder, "results.txt")
    log = _find(folder, "log.txt")
    mode = folder.name.lower()
    if results_txt is None and log is None:
        if _tiny_mode_folder(folder) and not _has_subfolders(folder):
            return MISSING_FILES, None
        return None, None
    try:
        text = read_text(results_txt) if results_txt else ""
    except ResultFileError:
        return (MISSING_FILES, None) if _tiny_mode_folder(folder) else (None, None)
    if "Energy data for window" in text or (not text and mode in ("energy", "power", "enegy")):
        return "tiny_energy_summary", None
    if "Median throughput" in text or (not text and mode == "performance"):
        return "tiny_perf_eembc", None
    if re.search(r"Top[- ]1|AUC", text) or (not text and mode == "accuracy"):
        return "tiny_accuracy", None
    return (MISSING_FILES, None) if _tiny_mode_folder(folder) else (None, None)


def _tiny_mode_folder(folder: Path) -> bool:
    """A Tiny result's mode folder by its place in the tree: ``<bench>/<mode>`` or
    ``<bench>/<model>/<mode>`` (a ``performance/`` among source code is not one)."""
    if folder.name.lower() not in TINY_MODES:
        return False
    above = [p.name.lower() for p in list(folder.parents)[:2]]
    return any(name in BENCHMARKS for name in above)


def _has_subfolders(folder: Path) -> bool:
    try:
        return any(entry.is_dir(follow_symlinks=False) for entry in os.scandir(folder))
    except OSError:
        return False


def case_kind(folder: Path) -> str | None:
    """What kind of result folder this is, or None when it is not one."""
    return classify(folder)[0]


@dataclass
class TreeScan:
    """What a walk of a tree found: result folders, and folders skipped with the reason."""

    cases: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def skipped_summary(self) -> list[str]:
        """One line per reason: how many folders, and the first of them."""
        by_reason: dict[str, list[Path]] = {}
        for path, why in self.skipped:
            by_reason.setdefault(why, []).append(path)
        return [f"skipped {len(paths)} folder(s): {why} (e.g. {printable(paths[0])})"
                for why, paths in by_reason.items()]


def scan_tree(root: Path) -> TreeScan:
    """Walk ``root`` without recursion (trees thousands deep occur in damaged copies) and
    without following links; stop descending at a result or skipped folder."""
    root = Path(root)
    if not root.exists():
        raise RescoreError(f"{printable(root)} does not exist")
    scan = TreeScan()
    try:
        kind, why = classify(root)
    except (ResultFileError, OSError, ValueError):
        kind = "unknown"
    if kind:
        scan.cases.append(root)
        return scan
    stack = [root]
    while stack:
        here = stack.pop()
        if here != root:
            try:
                kind, why = classify(here)
            except (ResultFileError, OSError, ValueError):
                kind, why = "unknown", None  # reported, and flagged with the reason
            if kind:
                scan.cases.append(here)
                continue
            if why:
                scan.skipped.append((here, why))
                continue
        try:
            subdirs = sorted(
                (Path(e.path) for e in os.scandir(here)
                 if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)),
                reverse=True)
        except OSError:
            continue
        stack.extend(subdirs)
    scan.cases.sort(key=lambda p: p.parts)
    return scan


def find_cases(root: Path) -> list[Path]:
    """Every result folder under ``root`` (``root`` itself if it is one), in path order."""
    return scan_tree(root).cases


# --------------------------------------------------------------------------------------------
# Published values that live outside the folder (power results): a CASES.md-style table


def read_published_table(path: Path) -> dict[Path, tuple[float, str]]:
    """``folder -> (published, unit)`` from a markdown table with folder/published/unit columns.

    Power result folders carry no published metric (it is in the results summary), so a table
    such as ``shared/mlperf-logs/CASES.md`` supplies it; folders are relative to the table.
    """
    table: dict[Path, tuple[float, str]] = {}
    header: list[str] | None = None
    for line in lines(read_text(Path(path))):
        if not line.startswith("|"):
            header = None if not line.strip() else header
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        row = dict(zip(header, cells, strict=False))
        if not {"folder", "published"} <= row.keys():
            continue
        try:
            value = float(row["published"])
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        try:
            folder = (Path(path).parent / row["folder"]).resolve()
        except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop
            continue
        table[folder] = (value, row.get("unit", ""))
    return table


def find_published_table(start: Path) -> Path | None:
    """The nearest ``CASES.md`` in ``start`` or one of its parents."""
    for folder in [start.resolve(), *start.resolve().parents]:
        if (folder / "CASES.md").is_file():
            return folder / "CASES.md"
    return None


# --------------------------------------------------------------------------------------------
# Comparing


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


def agrees(derived: float, published: float) -> bool:
    """Within 0.01%, or equal at the published value's print precision."""
    if math.isnan(derived):
        return False
    if abs(derived - published) <= REL_TOLERANCE * abs(published):
        return True
    d = _decimals(published)
    return f"{derived:.{d}f}" == f"{published:.{d}f}"


def _diff(derived: float, published: float) -> str:
    rel = (derived - published) / published if published else float("inf")
    return f"derived {derived:.10g} vs published {published:.10g} ({rel:+.5%})"


def _settle(case: CaseResult, flags: list[str], notes: list[str]) -> CaseResult:
    """Set the status from the flags and the comparison; reasons say why, flags first."""
    if flags:
        case.status = "flagged"
        case.reasons = flags + notes
        if case.published is not None and case.derived is not None:
            case.reasons.append(_diff(case.derived, case.published))
        return case
    if case.published is None:
        case.status = "unsupported"
        case.reasons = ["no published value to compare with: the folder prints none (give a "
                        "table with --published-table, e.g. CASES.md)"] + notes
        return case
    if case.derived is not None and agrees(case.derived, case.published):
        case.status = "match"
        case.reasons = [f"matches published ({_diff(case.derived, case.published)})"] + notes
        return case
    lo_hi = case.derived_range
    if (case.derived is not None and lo_hi is not None
            and lo_hi[0] * (1 - REL_TOLERANCE) <= case.published <= lo_hi[1] * (1 + REL_TOLERANCE)):
        case.status = "match"
        case.reasons = [
            f"matches published within the +-1 sample window ambiguity ({lo_hi[0]:.6g} .. "
            f"{lo_hi[1]:.6g}; default rule {_diff(case.derived, case.published)})"
        ] + notes
        return case
    case.status = "mismatch"
    derived = case.derived if case.derived is not None else float("nan")
    case.reasons = [f"does not match published: {_diff(derived, case.published)}", *notes]
    return case


def _window_notes(result: TinyResult, windows: int = REQUIRED_WINDOWS
                  ) -> tuple[list[str], list[str]]:
    """Rule failures of a scored Tiny result: a window count other than ``windows`` flags,
    short windows are noted."""
    flags, notes = [], []
    for check in result.failures:
        if check.rule == "tiny.window_count":
            if len(result.windows) != windows:
                flags.append(f"{len(result.windows)} window(s) measured, {windows} required: "
                             "the published median is not over the required windows")
        else:
            notes.append(f"warning: {check.message}")
    return flags, notes


def _path_facts(folder: Path, scale: str = "tiny") -> dict[str, Any]:
    """System, benchmark and mode/scenario from the results-tree path."""
    parts = folder.resolve().parts
    facts: dict[str, Any] = {"scale": scale, "measured_as": "hardware"}
    if scale == "tiny":
        mode_i = len(parts) - 1
        facts["scenario"] = "energy" if parts[mode_i] in ("power", "enegy") else parts[mode_i]
        bench_i = mode_i - 1
        if parts[bench_i].lower() not in BENCHMARKS and mode_i >= 3:
            bench_i -= 1  # an extra model level: <bench>/<model>/<mode>
        facts["benchmark"] = BENCHMARKS.get(parts[bench_i].lower(), parts[bench_i])
        facts["system"] = parts[bench_i - 1] if bench_i >= 1 else ""
    return facts


def _version(folder: Path) -> tuple[int, int] | None:
    """The round a result belongs to, from the path: a results repository's name
    (``inference_results_v2.1``), else a component ``v2.1``, else one ending ``_v2.1``; the
    nearest to the folder wins within each form. A system named ``...-v2.7.1-...`` is not a
    round."""
    parts = Path(os.path.abspath(folder)).parts
    for pattern in (_REPO_VERSION, _VERSION, _SUFFIX_VERSION):
        for part in reversed(parts):
            if m := pattern.search(part):
                return int(m.group(1)), int(m.group(2))
    return None


def parse_round(text: str) -> tuple[int, int]:
    """``--round`` as ``v2.1``, ``2.1`` or ``inference_results_v2.1``."""
    m = re.search(r"(\d{1,3})\.(\d{1,3})$", text.strip())
    if not m:
        raise RescoreError(f"--round {printable(text)!s}: expected a round such as v2.1 or 4.0")
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------------------------
# MLPerf Tiny, EEMBC energy


def _offset_energies_uj(run: EembcEnergyRun) -> list[dict[tuple[int, int], float]]:
    """Each window's energy (uJ) for the four (j0, j1) edge offsets the ms rounding allows."""
    fs = run.trace.sample_rate_hz
    cumulative = np.concatenate(([0.0], np.cumsum(run.trace.energy_per_sample_j() * 1e6)))
    out = []
    for i in range(len(run.windows)):
        k = 2 * (i + 1)
        base0 = round(run.timestamps_s[k - 1] * fs)
        base1 = round(run.timestamps_s[k] * fs)
        out.append({
            (d0, d1): float(cumulative[min(base1 + d1, len(cumulative) - 1)]
                            - cumulative[base0 + d0])
            for d0, d1 in EEMBC_OFFSETS
        })
    return out


def _in_order_pairing(folder: Path) -> str:
    """What pairing a damaged timestamp list in order would measure (evidence for a flag)."""
    path = _find(folder, "trace1-timestamps.json")
    try:
        ts = read_json(path) if path else []
        durations = [round(b - a, 3) for a, b in zip(ts[1::2], ts[2::2], strict=False)]
    except (ResultFileError, TypeError, KeyError, OverflowError):
        return ""
    return (f"; paired in order the {len(ts)} timestamps would give {len(durations)} windows "
            f"of {durations} s")


def _perf_sibling_throughput(folder: Path) -> float | None:
    sibling = folder.parent / "performance"
    try:
        claim = published_value(sibling) if sibling.is_dir() else None
    except ResultFileError:
        return None
    return claim[0] if claim and claim[1] == "inf/s" and claim[0] > 0 else None


def rescore_eembc_energy(folder: Path, table_claim: tuple[float, str] | None = None) -> CaseResult:
    claim = published_value(folder) or table_claim
    case = CaseResult(folder, "tiny_energy_eembc", claim[0] if claim else None, None, "uJ/inf",
                      facts=_path_facts(folder))
    flags: list[str] = []
    notes: list[str] = []
    if claim is None:
        flags.append(f"{folder / 'results.txt'}: missing or prints no median energy: nothing "
                     "published to check")
    try:
        run = read_eembc_energy(folder)
    except LogFormatError as exc:
        extra = _in_order_pairing(folder) if "timestamps, expected" in str(exc) else ""
        return _settle(case, flags + [str(exc) + extra], notes)
    energies = run.energies()
    result = score_energy(energies)
    case.derived = result.value
    by_window = _offset_energies_uj(run)
    counts = [w.work_count for w in run.windows]
    lows = [min(e.values()) / n for e, n in zip(by_window, counts, strict=True)]
    highs = [max(e.values()) / n for e, n in zip(by_window, counts, strict=True)]
    case.derived_range = (median(lows), median(highs))
    flags += _window_notes(result)[0]
    notes += _window_notes(result)[1]

    printed = printed_energy_windows(folder)
    labels = [w.label for w in run.windows]
    extra = [p.label for p in printed if p.label not in labels]
    if extra:
        flags.append(
            f"results.txt lists window(s) {', '.join(extra)} that the {len(run.timestamps_s)} "
            f"timestamps cannot produce (they give windows {', '.join(labels)})"
        )
    offsets_used = []
    for p in printed:
        if p.label not in labels:
            continue
        candidates = by_window[labels.index(p.label)]
        hits = [o for o, e in candidates.items()
                if abs(e - float(p.energy_uj)) <= PRINT_TOLERANCE_UJ]
        if hits:
            offsets_used.append(hits[0])
            continue
        twins = [q.label for q in printed if q is not p and q.energy_uj == p.energy_uj]
        flags.append(
            f"window {p.label}: results.txt prints {p.energy_uj} uJ but the trace gives "
            f"{min(candidates.values()):.3f} .. {max(candidates.values()):.3f} uJ for any "
            "+-1 sample edge" + (f" (printed identically to window(s) {', '.join(twins)})"
                                 if twins else "")
        )
    if printed and len(offsets_used) == len(run.windows) == len(printed):
        exact = median([by_window[i][o] / counts[i] for i, o in enumerate(offsets_used)])
        notes.append(f"every printed window reproduced to 0.005 uJ with edge offsets "
                     f"{offsets_used}: derived is the exact median {exact:.3f} uJ/inf (the "
                     f"default rule gives {case.derived:.3f})")
        case.derived = exact
    notes.append(f"+-1 sample window ambiguity: {case.derived_range[0]:.3f} .. "
                 f"{case.derived_range[1]:.3f} uJ/inf (default rule: samples round(t0*fs)+1 .. "
                 "round(t1*fs))")
    throughput = _perf_sibling_throughput(folder)
    if throughput:
        slower = []
        for w in energies:
            expected_s = w.window.work_count / throughput
            off = w.duration_s / expected_s - 1
            if off < -PERF_CROSSCHECK_TOLERANCE:
                flags.append(
                    f"window {w.window.label} lasts {w.duration_s:.3f} s but "
                    f"{w.window.work_count} inferences take {expected_s:.3f} s in performance "
                    f"mode ({off:+.1%}): the window measures the wrong interval"
                )
            elif off > PERF_CROSSCHECK_TOLERANCE:
                slower.append(off)
        if slower:
            # Energy-mode firmware often runs slower (other clocks, the isolated supply): a
            # longer window is no evidence of a wrong interval, a shorter one is.
            notes.append(f"energy mode is {min(slower):+.1%} .. {max(slower):+.1%} slower than "
                         "performance mode in windows that last longer than N x its latency")
    case.facts.update(_tiny_energy_facts(energies, run.trace.period_s))
    return _settle(case, flags, notes)


def _tiny_energy_facts(energies: list, bound_s: float | None) -> dict[str, Any]:
    energy_j = sum(w.energy_j for w in energies)
    duration_s = sum(w.duration_s for w in energies)
    return {
        "metric": "energy_per_inference", "energy_j": energy_j, "duration_s": duration_s,
        "work_count": sum(w.window.work_count for w in energies),
        "power_w": energy_j / duration_s if duration_s else None,
        "alignment_bound_s": bound_s, "meter": "energy monitor (published trace)",
        "window_durations_s": [w.duration_s for w in energies],
    }


# --------------------------------------------------------------------------------------------
# MLPerf Tiny, other kinds


def rescore_mlcommons_energy(folder: Path, kind: str = "tiny_energy_newrunner",
                             windows: int = REQUIRED_WINDOWS,
                             table_claim: tuple[float, str] | None = None) -> CaseResult:
    """MLCommons-runner energy: each trial's samples between its last two events, / N; the
    median of the trials (``windows`` of them: five, or one streamed file for SWW)."""
    claim = published_value(folder) or table_claim
    case = CaseResult(folder, kind, claim[0] if claim else None, None,
                      "uJ/inf", facts=_path_facts(folder))
    flags: list[str] = [] if claim else [f"{folder}: results.txt missing or prints no median"]
    try:
        run = read_mlcommons_energy(folder)
    except LogFormatError as exc:
        return _settle(case, flags + [str(exc)], [])
    energies = run.energies()
    result = score_energy(energies)
    case.derived = result.value
    window_flags, notes = _window_notes(result, windows)
    flags += window_flags
    printed = printed_energy_windows(folder)
    if len(printed) > len(energies):
        flags.append(f"results.txt lists {len(printed)} trials but results.json holds "
                     f"{len(energies)}")
    for p, w in zip(printed, energies, strict=False):
        if abs(w.energy_j * 1e6 - float(p.energy_uj)) > PRINT_TOLERANCE_UJ:
            flags.append(f"trial {p.label}: results.txt prints {p.energy_uj} uJ, results.json "
                         f"gives {w.energy_j * 1e6:.3f} uJ")
    case.facts.update(_tiny_energy_facts(energies, 1e-3))
    return _settle(case, flags, notes)


def rescore_sww_energy(folder: Path, table_claim: tuple[float, str] | None = None) -> CaseResult:
    """Streaming wake word energy: one ~20-minute stream, one trial between its last two
    events; published as the mean power (mW) the runner prints for it."""
    claim = published_value(folder) or table_claim
    case = CaseResult(folder, "tiny_sww_energy_newrunner", claim[0] if claim else None, None,
                      "mW", facts=_path_facts(folder))
    flags = [] if claim and claim[1] == "mW" else [
        f"{printable(folder)}: results.txt missing or prints no Power : X mW"]
    try:
        run = read_mlcommons_energy(folder)
    except LogFormatError as exc:
        return _settle(case, flags + [str(exc)], [])
    energies = run.energies()
    if len(energies) != 1:
        flags.append(f"{len(energies)} trials: a streamed file is one")
    w = energies[0]
    case.derived = w.energy_j / w.duration_s * 1e3 if w.duration_s > 0 else float("nan")
    notes = [f"{w.energy_j * 1e6:.3f} uJ over {w.duration_s:.3f} s between the last two "
             "timestamp events"]
    printed = printed_energy_windows(folder)
    if printed and abs(w.energy_j * 1e6 - float(printed[0].energy_uj)) > PRINT_TOLERANCE_UJ:
        flags.append(f"results.txt prints {printed[0].energy_uj} uJ, results.json gives "
                     f"{w.energy_j * 1e6:.3f} uJ")
    case.facts.update(_tiny_energy_facts(energies, 1e-3))
    case.facts["metric"] = "mean_power"
    return _settle(case, flags, notes)


def _rescore_perf(folder: Path, kind: str, windows_of,
                  table_claim: tuple[float, str] | None = None) -> CaseResult:
    claim = published_value(folder) or table_claim
    case = CaseResult(folder, kind, claim[0] if claim else None, None, "inf/s",
                      facts=_path_facts(folder))
    flags: list[str] = [] if claim else [f"{folder}: results.txt missing or prints no median"]
    try:
        windows: list[PerfWindow] = windows_of(folder)
    except LogFormatError as exc:
        return _settle(case, flags + [str(exc)], [])
    result = score_performance(windows)
    case.derived = result.value
    window_flags, notes = _window_notes(result)
    flags += window_flags
    errors = runner_errors(folder)
    if errors:
        flags.append(f"the runner recorded {', '.join(sorted(set(errors)))} (error 1: not 5 "
                     "loops; error 2: the loop took under 10 s), so it printed no median")
    printed = printed_performance_windows(folder)
    if len(printed) > len(windows):
        flags.append(f"results.txt lists {len(printed)} windows but the log holds only "
                     f"{len(windows)} infer command(s) with a lap pair: the extra windows "
                     "cannot have been measured")
    for p, w in zip(printed, windows, strict=False):
        d = len(p.throughput.split(".")[1]) if "." in p.throughput else 0
        if abs(w.throughput - float(p.throughput)) > max(0.6 * 10**-d, 1e-9 * w.throughput):
            flags.append(f"window {p.label}: results.txt prints {p.throughput} inf/s, the laps "
                         f"give {w.throughput:.{d}f}")
    if case.derived:
        notes.append(f"latency {1000 / float(f'{case.derived:.3f}'):.6g} ms "
                     "(1000 / the 3-decimal median)")
    case.facts.update({
        "metric": "throughput", "duration_s": sum(w.elapsed_s for w in windows),
        "work_count": sum(w.inferences for w in windows),
        "alignment_bound_s": DUT_LAP_RESOLUTION_S, "meter": "dut m-lap-us timer",
        "window_durations_s": [w.elapsed_s for w in windows],
    })
    return _settle(case, flags, notes)


def rescore_eembc_summary(folder: Path, table_claim: tuple[float, str] | None = None) -> CaseResult:
    claim = published_value(folder) or table_claim
    case = CaseResult(folder, "tiny_energy_summary", claim[0] if claim else None, None,
                      "uJ/inf", facts=_path_facts(folder))
    notes = ["summary only: no trace published, so the window energies themselves cannot be "
             "checked; the median is re-derived from the printed windows and log.txt's N"]
    try:
        result = score_eembc_summary(folder)
    except LogFormatError as exc:
        return _settle(case, [str(exc)], notes)
    case.derived = result.value
    flags, window_notes = _window_notes(result)
    printed = printed_energy_windows(folder)
    for p, w in zip(printed, result.windows, strict=True):
        if f"{w['energy_per_inference_uj']:.3f}" != p.per_inference_uj:
            flags.append(f"window {p.label}: Energy/Inf. printed {p.per_inference_uj}, but "
                         f"{p.energy_uj} uJ / {w['inferences']} = "
                         f"{w['energy_per_inference_uj']:.3f}")
        if abs(w["duration_s"] - float(p.duration_s)) > 0.0051:
            flags.append(f"window {p.label}: Energy/Power = {w['duration_s']:.3f} s, printed "
                         f"duration {p.duration_s} s")
    case.facts.update({
        "metric": "energy_per_inference",
        "energy_j": sum(w["energy_uj"] for w in result.windows) * 1e-6,
        "duration_s": sum(w["duration_s"] for w in result.windows),
        "work_count": sum(w["inferences"] for w in result.windows),
        "window_durations_s": [w["duration_s"] for w in result.windows],
    })
    case.facts["power_w"] = case.facts["energy_j"] / case.facts["duration_s"]
    return _settle(case, flags, notes + window_notes)


def _agrees_printed(derived: float, printed: str) -> bool:
    """Equal at the printed precision, rounded or truncated (the EEMBC runner's AUC: 0.99
    where the outputs give 0.9953 is truncation; its method is unpublished)."""
    d = len(printed.split(".")[1]) if "." in printed else 0
    scale = 10**d
    return (f"{derived:.{d}f}" == f"{float(printed):.{d}f}"
            or math.isclose(math.floor(derived * scale + 1e-9) / scale, float(printed)))


def rescore_accuracy(folder: Path, kind: str = "tiny_accuracy",
                     table_claim: tuple[float, str] | None = None) -> CaseResult:
    """Top-1 (classifiers) or AUC (anomaly detection) re-derived from the per-file outputs.

    EEMBC runner: ``log.txt`` outputs with labels from the evaluation set's list. MLCommons
    runner: ``results.json`` with the runner's recorded classes. A run over fewer files than
    it was meant to cover is flagged incomplete with the count seen, not scored as a worse
    accuracy.
    """
    top1 = published_top1(folder)
    auc = published_auc(folder)
    if table_claim and top1 is None and auc is None:  # a table is all that was published
        if table_claim[1].upper() == "AUC":
            auc = (table_claim[0], repr(table_claim[0]))
        else:
            top1 = table_claim[0]
    case = CaseResult(folder, kind, top1, None, "% top-1", facts=_path_facts(folder))
    reader = read_mlcommons_accuracy if kind == "tiny_accuracy_newrunner" else read_eembc_accuracy
    try:
        run: AccuracyRun = reader(folder)
    except LogFormatError as exc:  # (a folder without raw files is summary only, earlier)
        return _settle(case, [str(exc)], [])
    scores = accuracy_scores(run.outputs, run.labels)
    is_ad = scores["width"] == 1
    flags: list[str] = []
    notes = [f"labels from {run.label_source}", *run.notes]
    if is_ad:
        case.unit = "AUC"
        case.published = auc[0] if auc else None
        case.derived = scores["auc"]
        if top1 is not None:
            same = f"{scores['top1']:.1f}" == f"{top1:.1f}"
            if kind == "tiny_accuracy_newrunner" and not same:
                flags.append(f"results.txt prints Top 1% = {top1} but the outputs give "
                             f"{scores['top1']:.1f} (best (precision + recall) / 2 over 100 "
                             "thresholds, as the runner computes it)")
            else:
                notes.append(f"the runner's threshold 'Top 1%' from the outputs: "
                             f"{scores['top1']:.1f} (printed {top1})")
    else:
        case.derived = scores["top1"]
        notes.insert(0, f"{scores['hits']} of {scores['files']} files classified correctly")
        if auc and scores["auc"] is not None:
            agree = _agrees_printed(scores["auc"], auc[1])
            if kind == "tiny_accuracy_newrunner" and not agree:
                flags.append(f"results.txt prints AUC {auc[1]} but the outputs give "
                             f"{scores['auc']:.4f}")
            else:
                notes.append(f"AUC {scores['auc']:.4f} from the outputs, printed {auc[1]}"
                             + ("" if agree else " (EEMBC's AUC method is unpublished: "
                                "not compared)"))
    if run.incomplete:
        flags.insert(0, f"incomplete: the run holds {len(run.files)} of the {run.expected} "
                        f"files it was meant to cover ({run.results_seen} results seen): the "
                        "published accuracy is not over this set")
    if (auc and case.derived is not None and is_ad and not flags
            and _agrees_printed(case.derived, auc[1])):
        case.status = "match"
        case.reasons = [f"matches published (AUC {case.derived:.4f}, printed {auc[1]})", *notes]
        case.facts.update({"metric": "auc", "work_count": len(run.files)})
        return case
    case.facts.update({"metric": "auc" if is_ad else "top1", "work_count": len(run.files)})
    return _settle(case, flags, notes)


def rescore_sww(folder: Path, kind: str,
                table_claim: tuple[float, str] | None = None) -> CaseResult:
    """Streaming wake word (MLCommons runner): throughput = 1 / mean processing time, which is
    1 / (duty cycle x period) as ``results.txt`` prints it, from the DUT's raw pulse edges;
    detections re-counted and compared with the printed accuracy line."""
    printed = published_sww(folder)
    published = printed.get("throughput") or (table_claim[0] if table_claim else None)
    case = CaseResult(folder, kind, published, None, "inf/s",
                      facts=_path_facts(folder))
    try:
        runs = read_sww(folder)
        flags: list[str] = []
        notes: list[str] = []
        run = runs[0]
        on, period, duty = run.duty_cycle()
        case.derived = 1.0 / on
        notes.append(f"{min(len(run.start_times_s), len(run.stop_times_s))} processing pulses: "
                     f"mean on-time {on * 1e3:.4f} ms, period {period * 1e3:.4f} ms, duty cycle "
                     f"{duty:.5f}")
        if len(runs) > 1:
            notes.append(f"{len(runs)} streamed files; the throughput is the first's")
        if "duty_cycle" in printed and printed["duty_cycle"] is not None and not math.isclose(
                duty, printed["duty_cycle"], rel_tol=1e-3):
            flags.append(f"results.txt prints duty cycle {printed['duty_cycle']} but the pulses "
                         f"give {duty:.5f}")
        if run.detections_ms:
            counts = run.detection_counts()
            notes.append(f"detections: {counts[0]} true positives, {counts[1]} false negatives, "
                         f"{counts[2]} false positives")
            if "counts" in printed and tuple(printed["counts"]) != counts:
                flags.append(f"results.txt prints {printed['counts']} (TP, FN, FP) but the "
                             f"detections give {counts}")
    except LogFormatError as exc:
        return _settle(case, [str(exc)], [])
    case.facts.update({"metric": "throughput", "work_count": None})
    return _settle(case, flags, notes)


# --------------------------------------------------------------------------------------------
# MLPerf Inference power


def _power_scale(folder: Path, scenario: str) -> str:
    """SingleStream/MultiStream exist only in the edge suite; Offline is edge when a sibling
    SingleStream run exists; Server and Interactive are datacenter."""
    if scenario in ("SingleStream", "MultiStream"):
        return "edge"
    if scenario == "Offline":
        parent = folder.parent if folder.name != "performance" else folder.parent.parent
        try:
            if any(e.name.lower() == "singlestream" for e in os.scandir(parent)):
                return "edge"
        except OSError:
            pass
    return "datacenter"


def _clock_skew_s(folder: Path) -> float | None:
    """Largest client/server wall-clock difference over the phase checkpoints, if recorded."""
    try:
        client = read_json(folder / "power" / "client.json")
        server = read_json(folder / "power" / "server.json")
        return max(
            abs(c[0] - s[0])
            for mode in ("ranging", "testing")
            for c, s in zip(client["phases"][mode], server["phases"][mode], strict=True)
        )
    except (ResultFileError, KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None


def _director_claim(folder: Path) -> tuple[float, str] | None:
    """The testing value a ``tinypower.scale`` director stored in the session's results.json."""
    try:
        if not (folder / "results.json").is_file():
            return None
        testing = read_json(folder / "results.json")["testing"]
        return float(testing["value"]), str(testing["unit"])
    except (ResultFileError, KeyError, TypeError, ValueError, OverflowError):
        return None


def _director_failures(folder: Path) -> list[str]:
    """A director session that failed its own validity checks (:func:`power_validity`, the
    decision the CLI, report and check share) is flagged, whatever its numbers rescore to."""
    try:
        if not (folder / "results.json").is_file():
            return []
        results = read_json(folder / "results.json")
    except (ResultFileError, ValueError):  # not JSON, not UTF-8: a published side file
        return []
    if not isinstance(results, dict) or "testing" not in results:
        return []
    valid, failed = power_validity(results)
    return [] if valid else [f"the session failed its own check(s): {', '.join(failed)}"]


def _power_measured_as(folder: Path) -> str:
    """How a power folder was measured: a director session says so in results.json, and its
    export keeps the director's power/server.json (meter identities); published folders were
    measured on hardware."""
    try:
        if (folder / "results.json").is_file():
            stated = read_json(folder / "results.json").get("measured_as")
            if stated:
                return printable(stated)
        if not (folder / "power" / "server.json").is_file():
            return "hardware"
        identity = primary_meter_identity(read_json(folder / "power" / "server.json"))
        return str(identity["measured_as"]) if "measured_as" in identity else "hardware"
    except (ResultFileError, KeyError, TypeError, AttributeError, IndexError):
        return "hardware"


def _filed_scenario(folder: Path) -> str | None:
    """The scenario a result is filed under: its ``<Scenario>`` folder (any case), if named so."""
    scenario_dir = folder.parent if folder.name == "performance" else folder
    return SCENARIO_NAMES.get(scenario_dir.name.lower())


def rescore_power(folder: Path, table: dict[Path, tuple[float, str]],
                  round_: tuple[int, int] | None = None) -> CaseResult:
    """Average power or energy per query over LoadGen's window, by the checker rules of the
    result's round (``round_``, else the path; never a table's unit), for the scenario the
    folder is filed under."""
    claim = table.get(folder.resolve()) or _director_claim(folder)
    version = round_ or _version(folder)
    era = era_rules(version)
    measured_as = _power_measured_as(folder)
    case = CaseResult(folder, "power", claim[0] if claim else None, None,
                      claim[1] if claim else "", facts={"measured_as": measured_as})
    flags = _director_failures(folder)
    rules = ", ".join(k for k, on in era.items() if on) or "all samples, W or mJ/query"
    round_name = (f"v{version[0]}.{version[1]}" if version
                  else "the current round (no round in the path: give --round)")
    notes: list[str] = [f"checker rules of {round_name}: {rules}"]
    try:
        scored = score_power_folder(folder, **era)
        log = read_mlperf_log(folder / "run_1" / "mlperf_log_detail.txt")
        run = scored["testing"]
        filed = _filed_scenario(folder) or run.scenario
        testing, inferred = score_for_scenario(run, filed)
    except (ResultFileError, ValueError) as exc:
        return _settle(case, [printable(str(exc))], notes)
    if inferred:
        notes.insert(0, inferred)
    case.derived, case.unit = testing.value, testing.unit
    if claim and claim[1] and claim[1] != testing.unit:
        notes.append(f"the table lists the value in {claim[1]}; {round_name}'s rules give "
                     f"{testing.unit}")
    if str(log.get("result_validity", "VALID")) != "VALID":
        flags.append(f"LoadGen says the run is {printable(log.get('result_validity'))}: no "
                     "power result can be published for it")
    notes.append(f"{testing.samples} samples inside the {testing.window_s:.3f} s LoadGen window, "
                 f"mean {testing.average_power_w:.7g} W")
    missing = math.floor(testing.window_s) - testing.samples
    if missing > 1:
        notes.append(f"warning: {missing} of ~{math.floor(testing.window_s)} 1 Hz samples "
                     "missing inside the window")
    notes.append(("" if scored["ranging_ok"] else "warning: ") + "ranging check: "
                 + scored["ranging_message"])
    queries = log.get("result_query_count")
    skew = _clock_skew_s(folder)
    scenario_dir = folder.parent if folder.name == "performance" else folder
    case.facts.update({
        "scale": _power_scale(folder, testing.scenario), "scenario": testing.scenario,
        "benchmark": scenario_dir.parent.name, "system": scenario_dir.parents[1].name,
        "metric": testing.metric, "power_w": testing.average_power_w,
        "duration_s": testing.window_s, "energy_j": testing.average_power_w * testing.window_s,
        "work_count": queries if isinstance(queries, int) and testing.metric ==
        "energy_per_query" else None,
        "meter": "PTDaemon power analyzer", "alignment_bound_s": skew,
    })
    return _settle(case, flags, notes)


# --------------------------------------------------------------------------------------------
# Our own session folders


def _transcript_infers(path: Path) -> list[tuple[int, list[int]]]:
    """``(N, laps)`` for each ``infer`` the host sent, laps being the m-lap-us values after it."""
    groups: list[tuple[int, list[int]]] = []
    in_infer = False
    for line in path.read_text(errors="replace").splitlines():
        if m := _TRANSCRIPT_INFER.match(line):
            groups.append((int(m.group(1)), []))
            in_infer = True
        elif _TRANSCRIPT_SENT.match(line):
            in_infer = False
        elif in_infer and (lap := _TRANSCRIPT_LAP.match(line)):
            groups[-1][1].append(int(lap.group(1)))
    return groups


def _changed_files(folder: Path, session: dict) -> list[str]:
    recorded = session.get("files") or {}
    now = file_hashes(folder, list(recorded))
    return [n for n, h in recorded.items() if now.get(n) != h]


def rescore_session(folder: Path) -> CaseResult:
    """Re-derive a ``tinypower measure`` session's stored value from its raw files.

    Energy: the trace (``trace.npz``) and the meter-sample count at each window's checkpoint in
    ``session.json`` give each window's edges (the last two before the checkpoint, after the
    previous one); N is from the ``infer`` commands in ``transcript.log``. Performance: the
    laps after each of the last five ``infer`` commands in ``transcript.log``.
    """
    try:
        session = read_json(folder / "session.json")
        stored = read_json(folder / "results.json")["record"]
        record = records_from_session(folder)[0]
    except (ResultFileError, OSError, KeyError, TypeError, RecordError) as exc:
        return CaseResult(folder, "tinypower_session", None, None, "", "flagged",
                          [f"{folder}: session files unreadable ({exc})"])
    case = CaseResult(folder, "tinypower_session", stored.get("value"), None,
                      stored.get("unit") or "", facts={
                          k: getattr(record, k) for k in (
                              "system", "scale", "benchmark", "scenario", "metric",
                              "measured_as", "energy_j", "duration_s", "work_count", "power_w",
                              "meter", "alignment_bound_s")})
    flags = [f"{name} changed since the run (sha256 differs from session.json)"
             for name in _changed_files(folder, session)]
    notes = [f"measured_as: {record.measured_as}"]
    mode = session.get("mode")
    infers = _transcript_infers(folder / "transcript.log") if (
        folder / "transcript.log").is_file() else []
    if mode == "energy":
        try:
            result = _session_energy(folder, session, infers)
        except (OSError, TraceError, ValueError, KeyError) as exc:
            return _settle(case, flags + [f"energy not re-derivable: {exc}"], notes)
    elif mode == "performance":
        timed = [(n, laps) for n, laps in infers if len(laps) >= 2][-REQUIRED_WINDOWS:]
        if not timed:
            return _settle(case, flags + ["transcript.log holds no infer with two laps"], notes)
        result = score_performance([PerfWindow(n, laps[-2], laps[-1]) for n, laps in timed])
    else:
        case.status = "unsupported"
        case.reasons = [f"{mode} sessions keep no per-file outputs to re-derive the score from"]
        return case
    case.derived = result.value
    window_flags, window_notes = _window_notes(result)
    return _settle(case, flags + window_flags, notes + window_notes)


def _session_energy(folder: Path, session: dict, infers: list) -> TinyResult:
    trace = load_trace(folder / "trace.npz")
    bounds = [c["meter_samples"] for c in session.get("checkpoints", [])
              if str(c.get("label", "")).startswith("window ") and "meter_samples" in c]
    if not bounds:
        raise ValueError("session.json has no window checkpoints with meter sample counts")
    counts = [n for n, _ in infers][-len(bounds):]
    if len(counts) != len(bounds):
        raise ValueError(f"transcript.log has {len(counts)} infer commands for "
                         f"{len(bounds)} windows")
    energies = []
    lower = -1
    for k, (upper, n) in enumerate(zip(bounds, counts, strict=True)):
        edges = [e for e in trace.events if lower < e.index <= upper]
        energies.append(integrate(trace, window_from_events(edges, trace, n, str(k))))
        lower = upper
    return score_energy(energies)


# --------------------------------------------------------------------------------------------
# Dispatch


def rescore_case(folder: Path, table: dict[Path, tuple[float, str]] | None = None,
                 round_: tuple[int, int] | None = None) -> CaseResult:
    """Rescore one result folder of any kind we know; never raises for a folder's content."""
    folder = Path(folder)
    try:
        return _rescore_case(folder, table, round_)
    except (ResultFileError, OSError, ValueError, TraceError, RecursionError) as exc:
        # The readers turn every damage they know of into a flag; this is the last guard, so
        # that one unforeseen file cannot stop a whole tree or reach the user as a traceback.
        return CaseResult(folder, case_kind_safe(folder), None, None, "", "flagged",
                          [f"{printable(folder)}: unreadable ({type(exc).__name__}: "
                           f"{printable(str(exc))[:300]})"])


def case_kind_safe(folder: Path) -> str:
    try:
        return case_kind(folder) or "unknown"
    except (ResultFileError, OSError, ValueError):
        return "unknown"


def _rescore_case(folder: Path, table: dict[Path, tuple[float, str]] | None,
                  round_: tuple[int, int] | None) -> CaseResult:
    kind = case_kind(folder)
    if kind == "tinypower_session":
        return rescore_session(folder)
    if kind == "power":
        return rescore_power(folder, table or {}, round_)
    if kind in ("tiny_perf_eembc", "tiny_energy_summary", "tiny_accuracy", MISSING_FILES) and (
            summary := _summary_only(folder)) is not None:
        return summary
    claim = (table or {}).get(folder.resolve())
    if kind == "tiny_energy_eembc":
        case = rescore_eembc_energy(folder, claim)
    elif kind == "tiny_energy_newrunner":
        case = rescore_mlcommons_energy(folder, table_claim=claim)
    elif kind == "tiny_perf_newrunner":
        case = _rescore_perf(folder, kind, read_mlcommons_performance, claim)
    elif kind == "tiny_perf_eembc":
        case = _rescore_perf(folder, kind, read_eembc_performance, claim)
    elif kind == "tiny_energy_summary":
        case = rescore_eembc_summary(folder, claim)
    elif kind in ("tiny_accuracy", "tiny_accuracy_newrunner"):
        case = rescore_accuracy(folder, kind, claim)
    elif kind == "tiny_sww_perf_newrunner":
        case = rescore_sww(folder, kind, claim)
    elif kind == "tiny_sww_energy_newrunner":
        case = rescore_sww_energy(folder, claim)
    elif kind in (MISSING_FILES, "tiny_newrunner_unreadable"):
        case = CaseResult(folder, kind, None, None, "", "flagged", [
            f"{printable(folder)}: a result folder without a readable results.txt, log.txt or "
            "results.json: nothing to re-derive or compare"])
        if kind == "tiny_newrunner_unreadable":
            try:
                _load_results_json(_find(folder, "results.json"))
            except LogFormatError as exc:
                case.reasons = [str(exc)]
        return case
    else:
        claim = published_value(folder) or claim
        return CaseResult(folder, kind or "unknown", claim[0] if claim else None, None,
                          claim[1] if claim else "", "unsupported",
                          [f"{kind or 'this folder'}: no reader re-derives this kind yet"])
    table_claim = (table or {}).get(folder.resolve())
    if table_claim and case.published is not None and not agrees(case.published, table_claim[0]):
        case.status = "mismatch"
        case.reasons.insert(0, f"results.txt says {case.published} but the table lists "
                               f"{table_claim[0]} {table_claim[1]}")
    return case


def _summary_only(folder: Path) -> CaseResult | None:
    """A folder whose ``results.txt`` prints a value but whose raw files were not published
    (no EEMBC ``log.txt`` with its commands, no ``results.json``, no trace): ``unsupported``,
    with the printed value. None when there is raw data to read, or nothing printed."""
    log = _find(folder, "log.txt")
    try:
        if log is not None and 'Command "' in read_text(log):
            return None
        claim = published_value(folder)
        top1, auc = published_top1(folder), published_auc(folder)
    except ResultFileError:
        return None
    if claim is None and top1 is None and auc is None:
        return None
    if auc is not None and (top1 is None or _path_facts(folder).get("benchmark") == "ad01"):
        top1 = None  # anomaly detection publishes its AUC
    value, unit = claim if claim else (top1, "% top-1") if top1 is not None else (auc[0], "AUC")
    return CaseResult(folder, case_kind_safe(folder), value, None, unit, "unsupported", [
        "summary only: results.txt prints the value but the raw files (an EEMBC log.txt with "
        "its commands, the runner's results.json, or a trace) were not published to re-derive "
        "it from"])


def rescore_tree(
    root: Path, table_path: Path | None = None, round_: tuple[int, int] | None = None,
    scan: TreeScan | None = None,
) -> Iterator[CaseResult]:
    """Rescore every result folder under ``root``; the published table is ``table_path`` or
    the nearest ``CASES.md`` above ``root``. Pass ``scan`` to learn what was skipped."""
    found = scan_tree(root)
    if scan is not None:
        scan.cases, scan.skipped = found.cases, found.skipped
    if not found.cases:
        raise RescoreError(
            f"no MLPerf Tiny, MLPerf power or tinypower session folders under "
            f"{printable(root)}: pass a folder holding results.txt/log.txt, run_1/ + ranging/, "
            "or session.json"
            + (f" ({'; '.join(found.skipped_summary())})" if found.skipped else "")
        )
    table_path = table_path or find_published_table(Path(root))
    try:
        table = read_published_table(table_path) if table_path else {}
    except ResultFileError as exc:
        raise RescoreError(str(exc)) from None
    for folder in found.cases:
        yield rescore_case(folder, table, round_)
