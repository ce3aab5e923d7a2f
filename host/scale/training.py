"""MLPerf Training energy-to-train: the run window from the training log, node energy from
Prometheus or per-node CSV logs, the interconnect measured or estimated, scored by
:mod:`tinypower.rules.training`.

The window is the timed portion MLPerf logging marks with ``run_start`` and ``run_stop``
(``:::MLLOG {"key": "run_start", "time_ms": <UTC epoch ms>, ...}``; lines may carry a rank
prefix such as ``0: ``). The nodes' readings are integrated in the timing core over exactly
that window; the log's clock and the telemetry's must agree, and the alignment bound (their
skew, measured by NTP) is the caller's to state.

Per-node CSV logs: one file per node, ``<node>.csv``, header ``time_s,power_w`` (a W reading)
or ``time_s,energy_j`` (a J counter), ``time_s`` in UTC epoch seconds.

Each result is kept as a session folder, ``<runs>/<UTC time>-training-<benchmark>-<N>nodes/``
(:func:`write_training_session`): ``training.json`` (the result, its scale-out row and each
node's sampling interval) and a copy of the training log. The result store and the report read
these folders like the others.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from energy_monitor.prometheus import (
    FleetEnergy,
    FleetQuery,
    PrometheusClient,
    Series,
    integrate_nodes,
    read_fleet,
)
from energy_monitor.series import CounterSeries, PowerSeries
from energy_monitor.trace import TraceError
from tinypower.results.strict_json import dumps_strict
from tinypower.rules.tiny import Check
from tinypower.rules.training import (
    MAX_GAP_S,
    InterconnectEnergy,
    NodeSampling,
    energy_to_train_j,
    sampling_checks,
)

_MLLOG = re.compile(r":::MLLOG\s+(\{.*\})\s*$")


class TrainingLogError(ValueError):
    """The training log or the node logs cannot give a run window or readings; says why."""


@dataclass(frozen=True)
class RunWindow:
    """The timed portion of one training run, in UTC epoch seconds."""

    start_s: float
    stop_s: float
    status: str  # run_stop's metadata status: "success" or "aborted"
    benchmark: str
    source: str

    @property
    def duration_s(self) -> float:
        return self.stop_s - self.start_s


def read_run_window(log: Path) -> RunWindow:
    """``run_start``/``run_stop`` of an MLPerf training log (the first run in the file)."""
    start = stop = None
    status, benchmark = "", ""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError as exc:
        raise TrainingLogError(f"cannot read the training log {log}: {exc}") from None
    for number, line in enumerate(lines, 1):
        m = _MLLOG.search(line)
        if not m:
            continue
        try:
            entry = json.loads(m.group(1))
        except ValueError:
            raise TrainingLogError(f"{log}:{number}: a :::MLLOG line that is not JSON") from None
        key = entry.get("key")
        if key == "submission_benchmark" and not benchmark:
            benchmark = str(entry.get("value", ""))
        elif key == "run_start" and start is None:
            start = _time_s(entry, log, number)
        elif key == "run_stop" and start is not None and stop is None:
            stop = _time_s(entry, log, number)
            status = str((entry.get("metadata") or {}).get("status", ""))
    if start is None or stop is None:
        raise TrainingLogError(
            f"{log} has no {'run_start' if start is None else 'run_stop'} :::MLLOG line: give "
            "the log of a complete MLPerf training run (mlperf_logging output)"
        )
    if stop <= start:
        raise TrainingLogError(f"{log}: run_stop ({stop}) is not after run_start ({start})")
    return RunWindow(start, stop, status, benchmark, str(log))


def _time_s(entry: dict, log: Path, number: int) -> float:
    try:
        return float(entry["time_ms"]) / 1000.0
    except (KeyError, TypeError, ValueError):
        raise TrainingLogError(f"{log}:{number}: {entry.get('key')} has no time_ms") from None


def read_csv_dir(folder: Path) -> tuple[dict[str, list[tuple[str, Series]]], str]:
    """Each ``<node>.csv`` in ``folder`` as that node's series, and the kind (power/energy)."""
    files = sorted(Path(folder).glob("*.csv"))
    if not files:
        raise TrainingLogError(f"{folder} holds no <node>.csv files (header time_s,power_w "
                               "or time_s,energy_j)")
    out: dict[str, list[tuple[str, Series]]] = {}
    kinds = set()
    for path in files:
        header = path.open().readline().strip().replace(" ", "")
        if header not in ("time_s,power_w", "time_s,energy_j"):
            raise TrainingLogError(f"{path}: header {header!r}; expected time_s,power_w (W "
                                   "readings) or time_s,energy_j (a J counter)")
        try:
            data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        except ValueError as exc:
            raise TrainingLogError(f"{path}: not numbers: {exc}") from None
        kind = "power" if header.endswith("power_w") else "energy"
        kinds.add(kind)
        try:
            series: Series = (PowerSeries(data[:, 0], data[:, 1], source=str(path))
                              if kind == "power"
                              else CounterSeries(data[:, 0], data[:, 1], source=str(path)))
        except TraceError as exc:
            raise TrainingLogError(f"{path}: {exc}") from None
        out[path.stem] = [(str(path), series)]
    if len(kinds) > 1:
        raise TrainingLogError(f"{folder} mixes power and energy logs; keep one kind per run")
    return out, kinds.pop()


@dataclass
class TrainingEnergy:
    """Energy-to-train of one run: per node, interconnect, total, and the rule checks."""

    run: RunWindow
    fleet: FleetEnergy
    interconnect: InterconnectEnergy
    checks: list[Check] = field(default_factory=list)

    @property
    def node_energy_kj(self) -> dict[str, float]:
        return {name: n.energy_j / 1000.0 for name, n in self.fleet.nodes.items()}

    @property
    def energy_j(self) -> float:
        return energy_to_train_j([n.energy_j for n in self.fleet.nodes.values()],
                                 self.interconnect)

    @property
    def energy_kj(self) -> float:
        return self.energy_j / 1000.0

    @property
    def node_count(self) -> int:
        return len(self.fleet.nodes) + len(self.fleet.missing)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed and c.severity == "fail"]

    @property
    def valid(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.run.benchmark, "log": self.run.source,
            "run_start_s": self.run.start_s, "run_stop_s": self.run.stop_s,
            "time_to_train_s": self.run.duration_s, "run_status": self.run.status,
            "nodes": self.node_count, "energy_to_train_kj": self.energy_kj,
            "node_energy_kj": self.node_energy_kj,
            "interconnect": {"energy_kj": self.interconnect.energy_j / 1000.0,
                             "how": self.interconnect.how,
                             "detail": self.interconnect.detail},
            "measured_as": self.fleet.measured_as, "valid": self.valid,
            "checks": [{"rule": c.rule, "passed": c.passed, "message": c.message}
                       for c in self.checks],
            "problems": self.fleet.problems, "telemetry": self.fleet.source,
            "transport": self.fleet.transport or None,  # None: read from CSV logs
        }


def score_training(run: RunWindow, fleet: FleetEnergy,
                   interconnect: InterconnectEnergy) -> TrainingEnergy:
    """Apply the training power rules to a run's node energies."""
    sampling = [NodeSampling(name, n.readings, n.median_interval_s, n.coverage)
                for name, n in fleet.nodes.items()]
    checks = sampling_checks(sampling, fleet.missing, run.status)
    checks.append(Check("training.interconnect", True, interconnect.detail))
    return TrainingEnergy(run, fleet, interconnect, checks)


def training_energy_from_prometheus(
    run: RunWindow, client: PrometheusClient, what: FleetQuery, nodes: Sequence[str] | None,
    interconnect: InterconnectEnergy, *, measured_as: str,
) -> TrainingEnergy:
    fleet = read_fleet(client, what, run.start_s, run.stop_s, nodes, max_gap_s=MAX_GAP_S,
                       measured_as=measured_as)
    return score_training(run, fleet, interconnect)


def training_energy_from_csv(
    run: RunWindow, folder: Path, nodes: Sequence[str] | None,
    interconnect: InterconnectEnergy, *, measured_as: str,
) -> TrainingEnergy:
    series, kind = read_csv_dir(folder)
    fleet = integrate_nodes(series, run.start_s, run.stop_s, max_gap_s=MAX_GAP_S, kind=kind,
                            measured_as=measured_as, source=str(folder), nodes=nodes)
    return score_training(run, fleet, interconnect)


def scale_out_rows(results: Sequence[TrainingEnergy]) -> list[dict[str, Any]]:
    """Energy vs node count for a report: one row per run, sorted by nodes then time."""
    rows = [{
        "nodes": r.node_count, "time_to_train_s": r.run.duration_s,
        "energy_to_train_kj": r.energy_kj,
        "energy_per_node_kj": r.energy_kj / r.node_count if r.node_count else float("nan"),
        "mean_power_kw": r.energy_j / r.run.duration_s / 1000.0,
        "interconnect": r.interconnect.how, "valid": r.valid,
        "measured_as": r.fleet.measured_as,
    } for r in results]
    return sorted(rows, key=lambda row: (row["nodes"], row["time_to_train_s"]))


def write_training_session(result: TrainingEnergy, runs_dir: Path, system: str = "") -> Path:
    """Keep one result as a session folder and return it: ``training.json`` holds the result
    (:meth:`TrainingEnergy.to_dict`), its scale-out row (:func:`scale_out_rows`), each node's
    median reading interval and the system name; ``training_log.txt`` is the log it came from.
    """
    stamp = datetime.now(UTC)
    benchmark = re.sub(r"[^A-Za-z0-9_.-]+", "_", result.run.benchmark or "run")
    base = Path(runs_dir) / f"{stamp:%Y%m%dT%H%M%SZ}-training-{benchmark}-{result.node_count}nodes"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    if Path(result.run.source).is_file():
        shutil.copyfile(result.run.source, folder / "training_log.txt")
    (folder / "training.json").write_text(dumps_strict({
        "system": system or f"{result.node_count}-node fleet",
        "recorded_utc": stamp.isoformat(),
        "result": result.to_dict(),
        "scale_out": scale_out_rows([result])[0],
        "median_intervals_s": {name: n.median_interval_s
                               for name, n in result.fleet.nodes.items()},
    }, indent=1) + "\n")
    return folder
