"""One result record for every scale, from a microcontroller's uJ/inference to a fleet's kWh.

Why: a number is only comparable with another when both say the same things about themselves:
what ran where, what was measured, over how long and how much work, how it was measured
(``hardware``, ``emulated``, ``simulated`` or ``counter``), with which meter, how well the
workload and the meter shared a clock, whether the rules passed, and which raw files it came
from (by sha256). :class:`ResultRecord` is that shape; the store (:mod:`tinypower.results.db`),
the exporters and the report all read it. Our own session folders become records through
:func:`records_from_session`; rescored published cases through
:meth:`tinypower.results.rescore.CaseResult.to_record`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tinypower.results.session import sha256_bytes

SCALES = ("tiny", "edge", "datacenter", "fleet")
MEASURED_AS = ("hardware", "emulated", "simulated", "counter")

# The resolution of the DUT's m-lap-us counter: the alignment bound of a performance window.
DUT_LAP_RESOLUTION_S = 1e-6


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
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc})") from None


def _meter_name(meter: Mapping[str, Any] | None) -> str:
    if not meter:
        return ""
    return " ".join(str(meter[k]) for k in ("kind", "model", "serial") if meter.get(k))


def records_from_session(folder: Path) -> list[ResultRecord]:
    """The records of one ``tinypower measure`` session folder (one per measured mode).

    Reads ``session.json`` (board, suite, mode, meter, status, sha256 of every file written)
    and ``results.json`` (the scored record, windows and checks). A session that ended without
    a result (a failed run keeps its folder) gives a record with no value, marked invalid with
    the reason, so the store shows failed runs too.
    """
    folder = Path(folder)
    if not (folder / "session.json").is_file():
        raise RecordError(
            f"{folder} has no session.json: not a tinypower session folder (give the folder "
            "`tinypower measure` printed, under --runs-dir)"
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
