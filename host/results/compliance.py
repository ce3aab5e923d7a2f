"""Compliance checks: does a run (ours or published) follow the MLPerf Tiny and power rules?

Why: a score is defensible only with the rules it was measured under shown to hold. Each check
here is a rule with a verdict (``pass``, ``warn`` or ``fail``) and the evidence behind it, so a
reader can see *why* a run passes, not only that it does.

- MLPerf Tiny: five windows, each at least 10 s of DUT time, every window bounded by timestamp
  edges, no lost samples, accuracy at or above the suite's closed-division target, and the
  stored/published value re-derived from the raw files (:mod:`tinypower.results.rescore`).
  Our sessions must follow the rules (fail); published runs the EEMBC runner let through with
  short windows get a warning, as ``published-logs.md`` section 3 advises.
- MLPerf power: run duration (600 s), testing vs ranging power (at most 5% below), the
  analyzer's uncertainty checking and warnings inside the testing window, client/server clock
  skew, LoadGen's validity, and the sha1 the power client and server recorded for each log.
  Our director's sessions get the same checks from the files it writes (the uncertainty it
  recorded, its client's workload times, its sha256), plus ``measured_as``. A director session
  that declares itself a short, non-compliant run (``--quick``) is held to the run length it
  was configured for, and the 600 s rule is reported beside it as a warning: never waived,
  never hidden.
Sessions additionally have their files checked against the sha256 ``session.json`` recorded.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tinypower.results.logio import ResultFileError, read_json, read_text
from tinypower.results.power_logs import (
    SPL_TIME_FORMAT,
    PowerLogError,
    loadgen_window,
    read_mlperf_log,
    read_spl,
    score_power_folder,
)
from tinypower.results.record import phase_records, power_validity, primary_meter_identity
from tinypower.results.rescore import (
    CaseResult,
    _clock_skew_s,
    _path_facts,
    _version,
    case_kind,
    era_rules,
    find_cases,
    find_published_table,
    read_published_table,
    rescore_case,
)
from tinypower.results.tiny_logs import (
    LogFormatError,
    _eembc_inference_counts,
    _find,
    _load_results_json,
    published_top1,
)
from tinypower.rules.tiny import ACCURACY_TARGETS, MIN_WINDOW_S, REQUIRED_WINDOWS

VERDICTS = ("pass", "warn", "fail")
MIN_POWER_RUN_S = 600.0  # mlperf.conf min_duration for every scenario
MAX_CLOCK_SKEW_S = 0.8  # the power checker's TIME_DELTA_TOLERANCE
UNCERTAINTY_MARGIN_S = 0.8
MAX_UNCERTAINTY = 0.01  # PTDaemon's per-sample limit for a valid power result
SAMPLE_PERIOD_TOLERANCE_S = 0.05  # around MLPerf's 1 Hz (Go,1000,0)
# power-dev compliance/check.py RESULT_PATHS: the files a power result needs
MLPERF_RESULT_FILES = (
    "power/client.json", "power/client.log", "power/ptd_logs.txt", "power/server.json",
    "power/server.log", "ranging/mlperf_log_detail.txt", "ranging/mlperf_log_summary.txt",
    "ranging/spl.txt", "run_1/mlperf_log_detail.txt", "run_1/mlperf_log_summary.txt",
    "run_1/spl.txt")
NOT_SUBMISSION_ENGINE = (
    "not an MLPerf submission engine: power-dev's checker verifies the sources of its own "
    "client and server; run the session with engine = \"power-dev\" to submit")
# the rules that decide MLPerf compliance (beside those that decide validity): a warning on one
# of them means "valid, not compliant"
COMPLIANCE_RULES = ("power.run_duration", "power.uncertainty", "power.uncertainty_checking",
                    "power.sample_rate", "power.submission_engine", "measured_as")
_PTD_LINE = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d\.\d+): (.*)$")
_UNCERTAINTY_HIGH = re.compile(r"WARNING: Uncertainty ([\d.]+)%, which is above")


@dataclass(frozen=True)
class ComplianceCheck:
    """One rule's verdict on one run, with the evidence a reader needs to agree."""

    rule: str
    verdict: str  # pass | warn | fail
    evidence: str

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "verdict": self.verdict, "evidence": self.evidence}


@dataclass
class CaseChecks:
    path: Path
    kind: str
    checks: list[ComplianceCheck]

    @property
    def failed(self) -> bool:
        return any(c.verdict == "fail" for c in self.checks)

    @property
    def not_compliant(self) -> list[ComplianceCheck]:
        """The MLPerf compliance rules this run does not meet (power runs)."""
        return [c for c in self.checks if c.rule in COMPLIANCE_RULES and c.verdict != "pass"]

    def to_json(self) -> dict:
        out = {"path": str(self.path), "kind": self.kind, "failed": self.failed,
               "checks": [c.to_json() for c in self.checks]}
        if self.kind == "power":
            out["compliant"] = not self.failed and not self.not_compliant
        return out


def _check(rule: str, ok: bool, evidence: str, otherwise: str = "fail") -> ComplianceCheck:
    return ComplianceCheck(rule, "pass" if ok else otherwise, evidence)


def _rescore_check(case: CaseResult) -> ComplianceCheck:
    verdict = {"match": "pass", "unsupported": "warn"}.get(case.status, "fail")
    return ComplianceCheck("rescore", verdict, f"{case.status}: " + "; ".join(case.reasons))


def _window_checks(durations_s: list[float], min_window_s: float, short: str,
                   what: str) -> list[ComplianceCheck]:
    checks = [_check("tiny.window_count", len(durations_s) == REQUIRED_WINDOWS,
                     f"{len(durations_s)} {what} window(s), {REQUIRED_WINDOWS} required")]
    for i, d in enumerate(durations_s):
        checks.append(_check(f"tiny.window_length[{i}]", d >= min_window_s,
                             f"window {i}: {d:.3f} s of DUT time, at least {min_window_s:g} s "
                             "required", short))
    return checks


# --------------------------------------------------------------------------------------------
# Our sessions


def check_session(folder: Path, min_window_s: float = MIN_WINDOW_S) -> list[ComplianceCheck]:
    """The rules on a ``tinypower measure`` session folder."""
    try:
        session = read_json(folder / "session.json")
        results = read_json(folder / "results.json")
    except ResultFileError as exc:
        return [ComplianceCheck("session.readable", "fail", f"{folder}: {exc}")]
    status = session.get("status", "")
    checks = [_check("session.complete", status == "complete",
                     f"status {status!r}" + (f": {session['reason']}" if session.get("reason")
                                             else ""))]
    recorded = session.get("files") or {}
    changed = [n for n, h in recorded.items()
               if not (folder / n).is_file()
               or hashlib.sha256((folder / n).read_bytes()).hexdigest() != h]
    checks.append(_check(
        "session.checksums", bool(recorded) and not changed,
        f"{len(recorded)} file(s) hashed in session.json"
        + (f"; changed or missing: {', '.join(changed)}" if changed else ", all unchanged"),
    ))
    measured_as = session.get("measured_as", "")
    checks.append(_check("measured_as", measured_as == "hardware",
                         f"measured_as: {measured_as}" + ("" if measured_as == "hardware" else
                                                          ": not a hardware measurement"),
                         "warn"))
    mode = session.get("mode")
    windows = results.get("windows") or []
    stored_checks = {c["rule"]: c for c in results.get("checks") or []}
    if mode in ("energy", "performance"):
        key = "duration_s" if mode == "energy" else "elapsed_s"
        checks += _window_checks([w[key] for w in windows], min_window_s, "fail", mode)
    if mode == "energy":
        edges = [c for r, c in stored_checks.items() if r.startswith("tiny.window[")]
        missing = [c["message"] for c in edges if not c["passed"]]
        checks.append(_check("tiny.timestamps", len(edges) == REQUIRED_WINDOWS and not missing,
                             "; ".join(missing) or f"{len(edges)} windows bounded by two "
                             "timestamp edges each"))
        drops = stored_checks.get("tiny.sample_drops")
        if drops:
            checks.append(_check("tiny.sample_drops", drops["passed"], drops["message"]))
    if mode == "accuracy":
        target = stored_checks.get("tiny.accuracy_target")
        if target:
            checks.append(_check("tiny.accuracy_target", target["passed"], target["message"]))
        else:
            checks.append(ComplianceCheck(
                "tiny.accuracy_target", "warn",
                "not comparable with the target: unlabelled, incomplete or synthetic dataset"))
    checks.append(_rescore_check(rescore_case(folder)))
    return checks


# --------------------------------------------------------------------------------------------
# Published MLPerf Tiny folders


def _suite(folder: Path) -> str:
    return str(_path_facts(folder).get("benchmark", ""))


def check_tiny(folder: Path, kind: str, case: CaseResult) -> list[ComplianceCheck]:
    """The Tiny rules on a published folder, from its raw files where they exist."""
    checks: list[ComplianceCheck] = []
    short = "warn"  # the EEMBC runner only printed the 10 s rule; results exist without it
    try:
        if kind == "tiny_energy_eembc":
            ts_path = _find(folder, "trace1-timestamps.json")
            timestamps = read_json(ts_path) if ts_path else []
            log = _find(folder, "log.txt")
            n_windows = len(_eembc_inference_counts(log)) if log else REQUIRED_WINDOWS
            checks.append(_check(
                "tiny.timestamps", len(timestamps) == 2 * n_windows + 1,
                f"{len(timestamps)} timestamps in trace1-timestamps.json, 2W+1 = "
                f"{2 * n_windows + 1} for W = {n_windows} windows"))
        elif kind == "tiny_energy_newrunner":
            trials = [e for e in _load_results_json(folder / "results.json")
                      if e.get("mode") == "e"]
            events = [len(t.get("power", {}).get("timestamps", [])) for t in trials]
            checks.append(_check("tiny.timestamps", all(n >= 2 for n in events),
                                 f"timestamp events per trial: {events} (at least 2 each)"))
        if kind.startswith("tiny_sww"):
            pass  # one streamed file, no windows: rescore checks its pulses and detections
        elif "accuracy" not in kind:
            durations = case.facts.get("window_durations_s")
            if durations is None:
                checks.append(ComplianceCheck("tiny.windows", "fail",
                                              "no window could be re-derived from the files"))
            else:
                checks += _window_checks(durations, MIN_WINDOW_S, short,
                                         "energy" if "energy" in kind else "performance")
        else:
            suite = _suite(folder)
            top1 = case.derived if case.derived is not None else published_top1(folder)
            target = ACCURACY_TARGETS.get(suite)
            if target is None or top1 is None:
                checks.append(ComplianceCheck("tiny.accuracy_target", "warn",
                                              f"no top-1 target known for {suite!r}"))
            else:
                checks.append(_check("tiny.accuracy_target", top1 >= target,
                                     f"{suite} top-1 {top1:.1f}% (re-derived from log.txt), "
                                     f"target {target}%"))
    except (OSError, ResultFileError, LogFormatError, TypeError, IndexError) as exc:
        checks.append(ComplianceCheck("tiny.readable", "fail", str(exc)))
    checks += _exported_measured_as(folder)
    checks.append(_rescore_check(case))
    return checks


_EXPORT_HEADER = re.compile(r"^# tinypower export of session .*, measured_as: (\w+)$")


def _exported_measured_as(folder: Path) -> list[ComplianceCheck]:
    """A folder tinypower exported says how it was measured in its results.txt header; a
    published folder has none (measured on the submitter's hardware)."""
    try:
        first = read_text(folder / "results.txt").split("\n", 1)[0]
    except ResultFileError:
        return []
    match = _EXPORT_HEADER.match(first.strip())
    if match is None:
        return []
    measured_as = match.group(1)
    return [_check("measured_as", measured_as == "hardware",
                   f"measured_as: {measured_as}" + ("" if measured_as == "hardware" else
                                                    ": not a hardware measurement"), "warn")]


# --------------------------------------------------------------------------------------------
# MLPerf power folders


def _ptd_checks(folder: Path, begin: datetime, end: datetime) -> list[ComplianceCheck]:
    path = folder / "power" / "ptd_logs.txt"
    if not path.is_file():
        return [_director_uncertainty(folder)]
    try:
        text = read_text(path)
    except ResultFileError as exc:
        return [ComplianceCheck("power.uncertainty_checking", "fail", str(exc))]
    activated = re.search(r"Uncertainty checking for \S+ is activated", text)
    checks = [_check("power.uncertainty_checking", activated is not None,
                     activated.group(0) if activated else
                     "ptd_logs.txt never says uncertainty checking is activated: PTDaemon did "
                     "not check the analyzer's per-sample uncertainty")]
    too_high = []
    for line in text.splitlines():
        m = _PTD_LINE.match(line.strip())
        if not m or not (u := _UNCERTAINTY_HIGH.search(m.group(2))):
            continue
        t = datetime.strptime(m.group(1), SPL_TIME_FORMAT)
        if abs((t - begin).total_seconds()) <= UNCERTAINTY_MARGIN_S or (
                begin <= t <= end) or abs((t - end).total_seconds()) <= UNCERTAINTY_MARGIN_S:
            too_high.append(f"{m.group(1)} {u.group(1)}%")
    checks.append(_check("power.uncertainty", not too_high,
                         "no sample above 1.00% uncertainty inside the testing window"
                         if not too_high else
                         f"{len(too_high)} sample(s) above 1.00% inside the window: "
                         + ", ".join(too_high[:5])))
    return checks


def _director_uncertainty(folder: Path) -> ComplianceCheck:
    """Our director records the analyzer's largest per-sample uncertainty over the testing run
    (PTDaemon's Uncertainty summary) in ``power/server.json``, instead of a ptd_logs.txt."""
    try:
        server = read_json(folder / "power" / "server.json")
        meters = phase_records(server)["testing"]["meters"]
        name, record = next((n, m) for n, m in meters.items() if "uncertainty_max" in m)
        worst = float(record["uncertainty_max"])
    except (OSError, ResultFileError, KeyError, TypeError, ValueError, StopIteration,
            AttributeError):
        return ComplianceCheck("power.uncertainty", "warn",
                               "not compliant: uncertainty: no power/ptd_logs.txt and no "
                               "recorded uncertainty (the meter reports none)")
    return _check("power.uncertainty", worst <= MAX_UNCERTAINTY,
                  f"meter {name}: largest per-sample uncertainty over the testing run "
                  f"{worst:.2%} (power/server.json), at most {MAX_UNCERTAINTY:.0%}")


def _checksum_check(folder: Path) -> ComplianceCheck:
    recorded: dict[str, str] = {}
    for name in ("client.json", "server.json"):
        try:
            recorded.update(read_json(folder / "power" / name).get("results", {}))
        except (ResultFileError, AttributeError):
            return ComplianceCheck("power.checksums", "fail",
                                   f"power/{name} missing or unreadable: no recorded sha1")
    bad = []
    ours = _engine_check(folder).verdict != "pass"
    for rel, sha1 in recorded.items():  # MLPerf's client records sha1, our director sha256
        path = folder / rel
        if not path.is_file():
            # power-dev's server hashes files it never sends (spl_analyzer_1.txt, ...): like
            # its checker, only the files a result needs must be there
            if ours or rel in MLPERF_RESULT_FILES:
                bad.append(f"{rel} missing")
        elif hashlib.new("sha1" if len(sha1) == 40 else "sha256",
                         path.read_bytes()).hexdigest() != sha1:
            bad.append(f"{rel} {'sha1' if len(sha1) == 40 else 'sha256'} differs")
    return _check("power.checksums", bool(recorded) and not bad,
                  f"{len(recorded)} file(s) recorded by client.json/server.json"
                  + (": " + ", ".join(bad) if bad else ", all hashes unchanged"))


def _director_results(folder: Path) -> dict | None:
    """A ``tinypower.scale`` director session's ``results.json`` (None for other folders)."""
    if not (folder / "results.json").is_file() or not (folder / "power").is_dir():
        return None
    try:
        results = read_json(folder / "results.json")
    except ResultFileError:
        return None
    return results if isinstance(results, dict) and "testing" in results else None


def _configured_s(log: dict) -> float | None:
    try:
        return float(log["effective_min_duration_ms"]) / 1000.0  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return None


def claims_compliance(results: dict | None) -> bool:
    """Whether a director session's results.json says the run is MLPerf-compliant."""
    return bool(results) and results.get("compliant") is True


def _run_duration_checks(window_s: float, min_run_s: float, claimed: bool,
                         configured_s: float | None) -> list[ComplianceCheck]:
    """MLPerf's fixed run length: a shorter run is not compliant (a warning, or a failure when
    its session claims compliance), and a run shorter than LoadGen's own configured minimum
    (``effective_min_duration_ms``) was cut short, which fails."""
    if configured_s is not None and window_s < configured_s:
        return [_check("power.run_duration", False,
                       f"testing window {window_s:.3f} s is shorter than the {configured_s:g} s "
                       "LoadGen was configured for: the run was cut short")]
    if window_s >= min_run_s:
        return [_check("power.run_duration", True,
                       f"testing window {window_s:.3f} s, at least {min_run_s:g} s")]
    return [ComplianceCheck(
        "power.run_duration", "fail" if claimed else "warn",
        f"not compliant: run length: testing window {window_s:.1f} s, MLPerf requires "
        f"{min_run_s:g} s" + (" (and the session claims compliance)" if claimed else ""))]


def _sample_rate_check(folder: Path, begin: datetime, end: datetime) -> ComplianceCheck:
    """MLPerf samples at 1 Hz (``Go,1000,0``): the median interval of the testing samples."""
    try:
        times = sorted(s.time for s in read_spl(folder / "run_1" / "spl.txt")
                       if begin < s.time < end)
    except (PowerLogError, OSError, ValueError, AttributeError):
        times = []
    gaps = sorted((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False))
    if not gaps:
        return ComplianceCheck("power.sample_rate", "warn",
                               "not compliant: sample rate: too few samples in the window")
    median = gaps[len(gaps) // 2]
    return _check("power.sample_rate", abs(median - 1.0) <= SAMPLE_PERIOD_TOLERANCE_S,
                  f"median sample interval {median:.3f} s"
                  + ("" if abs(median - 1.0) <= SAMPLE_PERIOD_TOLERANCE_S else
                     " (not compliant: sample rate: MLPerf samples at 1 Hz)"), "warn")


def _engine_check(folder: Path) -> ComplianceCheck:
    """Only power-dev's own client and server can make a submission (its checker verifies
    their sources); tinypower's director records itself in server.json's ``protocol``."""
    try:
        protocol = str(read_json(folder / "power" / "server.json")
                       .get("protocol", ""))
    except (ResultFileError, AttributeError):
        protocol = ""
    if protocol.startswith("tinypower"):
        return ComplianceCheck("power.submission_engine", "warn", NOT_SUBMISSION_ENGINE)
    return ComplianceCheck("power.submission_engine", "pass",
                           "recorded by power-dev's client and server (power_check verifies "
                           "their sources)")


def _measured_as_check(results: dict | None, folder: Path) -> list[ComplianceCheck]:
    """How the numbers were measured: the director's results.json says so, and an export
    keeps the meter's identity in power/server.json."""
    server_path = folder / "power" / "server.json"
    if results is not None:
        measured_as = str(results.get("measured_as") or "unknown")
    elif server_path.is_file():
        try:
            identity = primary_meter_identity(read_json(server_path))
        except ResultFileError:  # unreadable, too large or not JSON
            identity = {}
        measured_as = str(identity.get("measured_as") or "unknown")
    else:
        return []  # a published folder: measured on the submitter's hardware
    return [_check("measured_as", measured_as == "hardware",
                   f"measured_as: {measured_as}" + ("" if measured_as == "hardware" else
                                                    ": not a hardware measurement"), "warn")]


def _session_validity_check(results: dict | None) -> list[ComplianceCheck]:
    """A director session's own validity checks (coverage, uncertainty, ...), decided by the
    same function as the CLI, the report and rescore (:func:`power_validity`)."""
    if results is None:
        return []
    valid, failed = power_validity(results)
    return [_check("power.session_valid", valid,
                   "the session's own validity checks passed" if valid else
                   f"the session failed its own check(s): {', '.join(failed) or 'unscored'}")]


def check_power(folder: Path, case: CaseResult,
                min_run_s: float = MIN_POWER_RUN_S) -> list[ComplianceCheck]:
    """The MLPerf power checks on a ``<Scenario>`` folder (run_1, ranging, power), published
    or written by our director."""
    era = era_rules(_version(folder))
    try:
        scored = score_power_folder(folder, **era)
        detail = folder / "run_1" / "mlperf_log_detail.txt"
        log = read_mlperf_log(detail)
        begin, end = loadgen_window(log, detail)
    except (PowerLogError, ValueError) as exc:
        return [ComplianceCheck("power.readable", "fail", str(exc)), _rescore_check(case)]
    testing, ranging = scored["testing"], scored["ranging"]
    validity = str(log.get("result_validity", "missing"))
    director = _director_results(folder)
    checks = [
        _check("power.loadgen_valid", validity == "VALID", f"result_validity: {validity}"),
        *_run_duration_checks(testing.window_s, min_run_s, claims_compliance(director),
                              _configured_s(log)),
        _check("power.ranging_duration", testing.window_s >= 0.5 * ranging.window_s,
               f"testing {testing.window_s:.1f} s vs ranging {ranging.window_s:.1f} s "
               "(warn when testing is over 50% shorter)", "warn"),
        _check("power.ranging_vs_testing", scored["ranging_ok"], scored["ranging_message"]),
    ]
    checks += _measured_as_check(director, folder)
    checks += _session_validity_check(director)
    checks += _ptd_checks(folder, begin, end)
    skew = _clock_skew_s(folder)
    if skew is None:  # a tinypower.scale session states its measured skew bound instead
        try:
            skew = read_json(folder / "results.json")["alignment_bound_s"]
        except (ResultFileError, KeyError, TypeError):
            skew = None
    checks.append(
        ComplianceCheck("power.clock_skew", "warn", "client/server phases not recorded")
        if skew is None else
        _check("power.clock_skew", skew <= MAX_CLOCK_SKEW_S,
               f"largest client/server clock difference {skew * 1000:.1f} ms, at most "
               f"{MAX_CLOCK_SKEW_S * 1000:.0f} ms")
    )
    checks.append(_window_in_phases(folder, begin, end))
    checks.append(_sample_rate_check(folder, begin, end))
    checks.append(_engine_check(folder))
    checks.append(_checksum_check(folder))
    checks.append(_rescore_check(case))
    return checks


def _window_in_phases(folder: Path, begin: datetime, end: datetime) -> ComplianceCheck:
    """LoadGen's power window must lie between the client's 'started' and 'workload done'
    (MLPerf's client.json: a list of phase times; our client's: the workload's wall start and
    end)."""
    try:
        phases = read_json(folder / "power" / "client.json")["phases"]["testing"]
        if isinstance(phases, dict):
            started, done = float(phases["wall_start_s"]), float(phases["wall_end_s"])
        else:
            started, done = phases[1][0], phases[2][0]
    except (ResultFileError, KeyError, IndexError, TypeError, ValueError):
        return ComplianceCheck("power.window_in_phases", "warn",
                               "client.json records no testing phases")
    b = begin.replace(tzinfo=UTC).timestamp()
    e = end.replace(tzinfo=UTC).timestamp()
    return _check("power.window_in_phases", started <= b and e <= done,
                  f"LoadGen window {begin} .. {end} UTC; client testing phase "
                  f"{datetime.fromtimestamp(started, UTC):%H:%M:%S.%f} .. "
                  f"{datetime.fromtimestamp(done, UTC):%H:%M:%S.%f} UTC")


# --------------------------------------------------------------------------------------------
# Dispatch


def check_tree(root: Path, min_window_s: float = MIN_WINDOW_S,
               table_path: Path | None = None,
               min_run_s: float = MIN_POWER_RUN_S) -> list[CaseChecks]:
    """Check every session or result folder under ``root``."""
    table_path = table_path or find_published_table(Path(root))
    table = read_published_table(table_path) if table_path else {}
    out = []
    for folder in find_cases(Path(root)):
        kind = case_kind(folder) or "unknown"
        if kind == "tinypower_session":
            checks = check_session(folder, min_window_s)
        else:
            case = rescore_case(folder, table)
            checks = (check_power(folder, case, min_run_s) if kind == "power"
                      else check_tiny(folder, kind, case))
        out.append(CaseChecks(folder, kind, checks))
    return out

