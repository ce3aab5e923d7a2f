"""One result record for every scale, from a microcontroller's uJ/inference to a fleet's kWh.

Why: a number is only comparable with another when both say the same things about themselves:
what ran where, what was measured, over how long and how much work, how it was measured
(``hardware``, ``emulated``, ``simulated`` or ``counter``), with which meter, how well the
workload and the meter shared a clock, whether the rules passed, and which raw files it came
from (by sha256). :class:`ResultRecord` is that shape; the store (:mod:`tinypower.results.db`),
the exporters and the report all read it. Our own folders become records through
:func:`records_from_session`, whichever command wrote them: a ``tinypower measure`` Tiny session
(``session.json``), a power director session (``power/server.json``) or a training energy
session (``training.json``). Rescored published cases become records through
:meth:`tinypower.results.rescore.CaseResult.to_record`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from energy_monitor.uncertainty import analyzer_budget
from tinypower.results.session import sha256_bytes

SCALES = ("tiny", "edge", "datacenter", "fleet")
MEASURED_AS = ("hardware", "emulated", "simulated", "counter")

# The resolution of the DUT's m-lap-us counter: the alignment bound of a performance window.
DUT_LAP_RESOLUTION_S = 1e-6
# What marks a folder as a power director session and as a training energy session.
POWER_SESSION_FILE = "power/server.json"
TRAINING_FILE = "training.json"
# LoadGen scenarios of the datacenter suite only; the others are run on edge systems.
DATACENTER_SCENARIOS = ("Server", "Interactive")


class RecordError(ValueError):
    """A folder or dict cannot become a result record; the message names it and the fix."""


@dataclass(frozen=True)
class ResultRecord:
    """One scored result, at any scale.

    ``value``/``unit`` is the headline metric as its rule set defines it (median uJ/inf,
    median inf/s, top-1 %, average W, J/query, ...). ``energy_j``, ``duration_s`` and
    ``work_count`` are the totals behind it (the sum over the scored windows), and ``power_w``
    their ratio, in SI units whatever the headline unit. ``scenario`` is the MLPerf Tiny mode
    (``performance``, ``energy``, ``accuracy``) or the LoadGen scenario (``Offline``, ...).
    ``failed_rules`` names the rules that made the result invalid; ``artifacts_sha256`` maps
    each raw file's name to its sha256; ``source`` is the folder the record came from.
    """

    system: str
    scale: str
    benchmark: str
    scenario: str
    metric: str
    value: float | None
    unit: str
    measured_as: str
    energy_j: float | None = None
    duration_s: float | None = None
    work_count: int | None = None
    power_w: float | None = None
    meter: str = ""
    alignment_bound_s: float | None = None
    valid: bool = True
    failed_rules: tuple[str, ...] = ()
    artifacts_sha256: Mapping[str, str] = field(default_factory=dict, hash=False)
    source: str = ""
    recorded_utc: str = ""
    extras: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise RecordError(f"scale {self.scale!r} is not one of {', '.join(SCALES)}")
        if self.measured_as not in MEASURED_AS:
            raise RecordError(
                f"measured_as {self.measured_as!r} is not one of {', '.join(MEASURED_AS)}: "
                "say how the number was measured"
            )
        object.__setattr__(self, "failed_rules", tuple(self.failed_rules))

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes a record unique in the store: its source folder, scenario and metric."""
        return (self.source, self.scenario, self.metric)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes None; tuples become lists)."""
        d = asdict(self)
        d["failed_rules"] = list(self.failed_rules)
        d["artifacts_sha256"] = dict(self.artifacts_sha256)
        d["extras"] = dict(self.extras)
        return {k: _no_nan(v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultRecord:
        """The inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RecordError(f"unknown result record field(s): {', '.join(unknown)}")
        missing = sorted(
            f.name for f in fields(cls)
            if f.name not in data and f.default is MISSING and f.default_factory is MISSING
        )
        if missing:
            raise RecordError(f"result record lacks field(s): {', '.join(missing)}")
        values = dict(data)
        values["failed_rules"] = tuple(values.get("failed_rules") or ())
        values["artifacts_sha256"] = dict(values.get("artifacts_sha256") or {})
        values["extras"] = dict(values.get("extras") or {})
        return cls(**values)


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def check_passed(check: Mapping[str, Any]) -> bool:
    """Whether a stored check passed: only a JSON ``true`` in its ``ok`` (or ``passed``) is a
    pass. Older sessions wrote a numpy ``False`` as the string ``"False"``, which is truthy;
    here anything but ``true`` is a failure, so no reader can take such a check as passed."""
    return check.get("ok", check.get("passed")) is True


def power_validity(results: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """The one decision on a power director session's validity, from its ``results.json``:
    the names of its failed ``validity`` checks (``compliance`` checks only make it
    non-compliant with MLPerf), and whether none failed. An unscored session (no results) is
    invalid. The CLI, the report, ``tinypower check`` and ``tinypower rescore`` all ask here."""
    checks = results.get("checks") or []
    failed = [str(c.get("name")) for c in checks
              if c.get("kind", "validity") != "compliance" and not check_passed(c)]
    return bool(results) and not failed, failed


def file_hashes(folder: Path, names: list[str] | None = None) -> dict[str, str]:
    """sha256 of the files in ``folder`` (or of ``names`` in it), by name, recursively."""
    paths = (
        [folder / n for n in names] if names is not None
        else sorted(p for p in folder.rglob("*") if p.is_file())
    )
    return {
        str(p.relative_to(folder)): sha256_bytes(p.read_bytes()) for p in paths if p.is_file()
    }


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not valid JSON ({exc})") from None


def _instrument_extras(meter: Mapping[str, Any] | None) -> dict[str, str]:
    """The instrument's firmware as it reported it and its driver's verification level."""
    if not meter:
        return {}
    return {"meter_firmware": str(meter.get("firmware", "")),
            "verification": str(meter.get("verification") or "unknown")}


def _meter_name(meter: Mapping[str, Any] | None) -> str:
    if not meter:
        return ""
    return " ".join(str(meter[k]) for k in ("kind", "model", "serial") if meter.get(k))


def records_from_session(folder: Path) -> list[ResultRecord]:
    """The records of one session folder: a Tiny session (one per measured mode), a power
    director session or a training energy session (one record each).

    Reads ``session.json`` (board, suite, mode, meter, status, sha256 of every file written)
    and ``results.json`` (the scored record, windows and checks). A session that ended without
    a result (a failed run keeps its folder) gives a record with no value, marked invalid with
    the reason, so the store shows failed runs too.
    """
    folder = Path(folder)
    if not (folder / "session.json").is_file():
        if (folder / POWER_SESSION_FILE).is_file():
            return [record_from_power_session(folder)]
        if (folder / TRAINING_FILE).is_file():
            return [record_from_training(folder)]
        raise RecordError(
            f"{folder} has no session.json, {POWER_SESSION_FILE} or {TRAINING_FILE}: not a "
            "tinypower session folder (give the folder `tinypower measure` or `tinypower "
            "training-energy` printed)"
        )
    session = _read_json(folder / "session.json")
    results_path = folder / "results.json"
    results = _read_json(results_path) if results_path.is_file() else {}
    record = results.get("record") or {}
    windows = results.get("windows") or []
    mode = str(record.get("mode") or session.get("mode", ""))
    measured_as = str(record.get("measured_as") or session.get("measured_as") or "")
    if measured_as not in MEASURED_AS:
        raise RecordError(f"{folder / 'session.json'}: measured_as {measured_as!r} unknown")

    energy_j = duration_s = power_w = alignment_s = None
    work_count = None
    meter = ""
    if mode == "energy" and windows:
        energy_j = sum(w["energy_uj"] for w in windows) * 1e-6
        duration_s = sum(w["duration_s"] for w in windows)
        work_count = sum(int(w["inferences"]) for w in windows)
        power_w = energy_j / duration_s if duration_s else None
        alignment_s = max(w.get("alignment_bound_s") or 0.0 for w in windows)
        meter = _meter_name(session.get("meter"))
    elif mode == "performance" and windows:
        duration_s = sum(w["elapsed_s"] for w in windows)
        work_count = sum(int(w["inferences"]) for w in windows)
        alignment_s = DUT_LAP_RESOLUTION_S
        meter = "dut m-lap-us timer"
    elif mode == "accuracy":
        work_count = (record.get("extras") or {}).get("inferences")

    failed = [f["rule"] for f in record.get("failures") or []]
    status = session.get("status", "")
    if status != "complete" and not failed:
        failed.append(f"session.{status or 'unknown'}")
    value = record.get("value")
    extras: dict[str, Any] = {
        k: v for k, v in (record.get("extras") or {}).items() if isinstance(v, int | float | str)
    }
    if session.get("reason"):
        extras["reason"] = session["reason"]
    extras.update(_instrument_extras(session.get("meter")))
    if isinstance(extras.get("energy_uncertainty_uj"), int | float):
        extras["uncertainty"] = extras["energy_uncertainty_uj"]  # in the value's unit, k=2
    models = session.get("models") or {}
    for key in ("label", "timing", "power_profile"):
        if models.get(key):
            extras[f"model_{key}"] = str(models[key])
    model = record.get("model") or {}
    if model.get("name"):
        extras["model"] = model["name"]
    hashes = session.get("files") or file_hashes(folder)
    return [
        ResultRecord(
            system=str(session.get("board", "")),
            scale="tiny",
            benchmark=str(session.get("suite", "")),
            scenario=mode,
            metric=str(record.get("metric") or ""),
            value=float(value) if value is not None else None,
            unit=str(record.get("unit") or ""),
            measured_as=measured_as,
            energy_j=energy_j,
            duration_s=duration_s,
            work_count=int(work_count) if work_count is not None else None,
            power_w=power_w,
            meter=meter,
            alignment_bound_s=alignment_s,
            valid=bool(record.get("valid")) and status == "complete",
            failed_rules=tuple(failed),
            artifacts_sha256=dict(hashes),
            source=str(folder.resolve()),
            recorded_utc=str(session.get("started_utc", "")),
            extras=extras,
        )
    ]


def read_power_session(folder: Path) -> tuple[dict, dict]:
    """``power/server.json`` and ``results.json`` of a director session (results may be empty
    when the run ended before it was scored)."""
    folder = Path(folder)
    server = _read_json(folder / POWER_SESSION_FILE)
    results_path = folder / "results.json"
    results = _read_json(results_path) if results_path.is_file() else {}
    if not isinstance(server, dict) or not isinstance(results, dict):
        raise RecordError(f"{folder}: server.json or results.json is not a JSON object")
    return server, results


def phase_records(document: Mapping[str, Any]) -> Any:
    """Our per-phase detail in a director's ``server.json`` or a client's ``client.json``:
    power-dev's layout keeps ``phases`` for its checkpoints and our detail in
    ``phase_records``; sessions written before that kept it in ``phases``. Raises KeyError
    when neither is there."""
    return document.get("phase_records") or document["phases"]


def primary_meter_identity(server: Mapping[str, Any]) -> dict[str, Any]:
    """The identity (kind, model, serial, firmware, measured_as, verification) the testing
    run's first meter reported, from a director's ``power/server.json`` (which an export
    keeps): {} when it is not there."""
    try:
        identity = phase_records(server)["testing"]["meters"][primary_name(server)]["identity"]
    except (KeyError, TypeError, AttributeError, IndexError):
        return {}
    return dict(identity) if isinstance(identity, Mapping) else {}


def primary_name(server: Mapping[str, Any]) -> str:
    """The name of a director session's first meter, the one its spl.txt is from."""
    try:
        return str(((server.get("config") or {}).get("meters") or [{}])[0].get("name", ""))
    except (AttributeError, IndexError):
        return ""


def _analyzer_uncertainty(server: Mapping[str, Any], primary: str, testing: Mapping[str, Any],
                          alignment_bound_s: float | None) -> dict[str, float]:
    """The testing value's expanded uncertainty (k=2) from the uncertainty PTDaemon reported
    and the measured clock-skew bound (:func:`energy_monitor.uncertainty.analyzer_budget`)."""
    try:
        unc = float(phase_records(server)["testing"]["meters"][primary]["uncertainty_max"])
        value, window_s = float(testing["value"]), float(testing["window_s"])
    except (KeyError, TypeError, ValueError):
        return {}
    budget = analyzer_budget(value=value, reported_uncertainty=unc, window_s=window_s,
                             alignment_bound_s=float(alignment_bound_s or 0.0))
    return {"uncertainty": budget.expanded_j, "uncertainty_k": budget.k}


def _power_benchmark(folder: Path) -> str:
    """The model the client's LoadGen ran (``--model`` of its recorded command), by file stem."""
    try:
        client = json.loads((folder / "power" / "client.json").read_text())
        command = phase_records(client)["testing"]["command"]
        return Path(command[command.index("--model") + 1]).stem
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return ""


def record_from_power_session(folder: Path) -> ResultRecord:
    """The record of one ``tinypower.scale`` director session: the testing run's MLPerf metric
    (mJ/query for SingleStream/MultiStream, average W otherwise) from its first meter.

    The alignment bound is the largest client/director clock skew bound measured during the
    session. ``failed_rules`` lists the checks that make the number untrustworthy (the director's
    ``validity`` checks); those that only make it non-compliant with MLPerf (a short run, a
    simulated meter) are listed in ``extras["not_compliant"]``.
    """
    folder = Path(folder)
    server, results = read_power_session(folder)
    testing = results.get("testing") or {}
    identity = primary_meter_identity(server)
    measured_as = str(testing.get("measured_as") or results.get("measured_as")
                      or identity.get("measured_as") or "")
    if measured_as not in MEASURED_AS:
        raise RecordError(f"{folder}: the power session does not say how it measured "
                          f"(measured_as {measured_as!r}); was it scored?")
    checks = results.get("checks") or []
    valid, failed = power_validity(results)
    not_compliant = [str(c["name"]) for c in checks
                     if not check_passed(c) and c.get("kind") == "compliance"]
    status = str(server.get("status", ""))
    # a session ended as invalid with no failed check to say why (`tinypower recover` ends a
    # session whose director died that way) is invalid whatever its results say
    if not results or (status == "invalid" and not failed):
        failed.append(f"session.{status or 'unscored'}")
    scenario = str(testing.get("scenario") or "")
    power_w = testing.get("average_power_w")
    window_s = testing.get("window_s")
    # MLPerf's arithmetic (mean of the samples x window), so energy / queries is the value;
    # the integral of the meter's readings stays beside it as a cross-check.
    energy_j = power_w * window_s if power_w is not None and window_s is not None else None
    queries = testing.get("query_count")
    extras: dict[str, Any] = {
        k: testing[k] for k in ("samples_per_joule", "throughput_samples_per_s",
                                "samples_in_window", "coverage", "power_begin", "power_end")
        if isinstance(testing.get(k), int | float | str)
    }
    if isinstance(testing.get("energy_j"), int | float):
        extras["meter_energy_j"] = testing["energy_j"]
    extras.update(_instrument_extras(identity))
    extras.update(_analyzer_uncertainty(server, primary_name(server), testing,
                                        results.get("alignment_bound_s")))
    extras["compliant"] = valid and results.get("compliant") is True
    if not_compliant:
        extras["not_compliant"] = ", ".join(not_compliant)
    if server.get("reasons"):
        extras["reason"] = "; ".join(map(str, server["reasons"]))
    value = testing.get("value")
    return ResultRecord(
        system=str(server.get("label") or folder.name),
        scale="datacenter" if scenario in DATACENTER_SCENARIOS else "edge",
        benchmark=_power_benchmark(folder),
        scenario=scenario,
        metric=str(testing.get("metric") or ""),
        value=float(value) if value is not None else None,
        unit=str(testing.get("unit") or ""),
        measured_as=measured_as,
        energy_j=float(energy_j) if energy_j is not None else None,
        duration_s=float(window_s) if window_s is not None else None,
        work_count=int(queries) if queries is not None and scenario in (
            "SingleStream", "MultiStream") else None,
        power_w=float(power_w) if power_w is not None else None,
        meter=_meter_name(identity),
        alignment_bound_s=results.get("alignment_bound_s"),
        valid=valid and not failed,
        failed_rules=tuple(failed),
        # server.json records sha1, as power-dev does: the record keeps sha256 of the same files
        artifacts_sha256=file_hashes(folder, sorted(server.get("results") or {}) or None),
        source=str(folder.resolve()),
        recorded_utc=str(server.get("started_utc", "")),
        extras=extras,
    )


def record_from_training(folder: Path) -> ResultRecord:
    """The record of one ``tinypower training-energy`` session folder (``training.json``):
    energy-to-train in kJ, at fleet scale.

    The alignment bound is the coarsest node's median reading interval: the run window's edges
    cannot be placed on the telemetry finer than one reading. It does not include the skew
    between the training log's clock and the telemetry's, which the fleet's NTP must bound.
    """
    folder = Path(folder)
    data = _read_json(folder / TRAINING_FILE)
    try:
        result = data["result"]
        duration_s = float(result["time_to_train_s"])
        energy_j = float(result["energy_to_train_kj"]) * 1000.0
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"{folder / TRAINING_FILE}: not a training energy result ({exc})") \
            from None
    failed = [c["rule"] for c in result.get("checks") or [] if not c.get("passed")]
    intervals = [float(i) for i in (data.get("median_intervals_s") or {}).values()]
    extras: dict[str, Any] = {
        "nodes": int(result.get("nodes") or 0),
        "interconnect": str((result.get("interconnect") or {}).get("how", "")),
        "interconnect_kj": float((result.get("interconnect") or {}).get("energy_kj") or 0.0),
        "run_status": str(result.get("run_status", "")),
    }
    return ResultRecord(
        system=str(data.get("system") or f"{extras['nodes']}-node fleet"),
        scale="fleet",
        benchmark=str(result.get("benchmark") or ""),
        scenario="training",
        metric="energy_to_train",
        value=energy_j / 1000.0,
        unit="kJ",
        measured_as=str(result.get("measured_as", "")),
        energy_j=energy_j,
        duration_s=duration_s,
        work_count=1,
        power_w=energy_j / duration_s if duration_s > 0 else None,
        meter=str(result.get("telemetry") or ""),
        alignment_bound_s=max(intervals) if intervals else None,
        valid=bool(result.get("valid")) and not failed,
        failed_rules=tuple(failed),
        artifacts_sha256=file_hashes(folder),
        source=str(folder.resolve()),
        recorded_utc=str(data.get("recorded_utc", "")),
        extras=extras,
    )
