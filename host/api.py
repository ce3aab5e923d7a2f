"""tinypower's Python API: ``tinypower.measure`` and :class:`EnergyMonitor`.

``measure(board=..., suite=..., model=..., mode=...)`` is ``tinypower measure`` as a function:
the same checks before the run, the same session folder and store row, and the scored
:class:`~tinypower.results.record.ResultRecord` back.

:class:`EnergyMonitor` measures the energy of blocks of code, the way Zeus's
``ZeusMonitor.begin_window``/``end_window`` does, over series meters: this machine's RAPL and
NVML (found on their own) or any meter tinypower drives (``EnergyMonitor.remote("ptd",
"host:8888")``). The meters read on their own clock in the background; a window's energy is the
meters' readings integrated over the window, with the ends interpolated between the readings
around them. So ``end_window`` waits for the first reading after the window has ended, and a
window with fewer than two readings inside it is marked ``interpolated`` and says so: it is the
bracketing readings' mean power times the window's length, not a resolved measurement.
See docs/python-api.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energy_monitor.meter import MeterError, SeriesMeter

POLL_INTERVAL_S = 0.1  # how often auto-detected RAPL and NVML are read
END_TIMEOUT_INTERVALS = 20  # end_window waits this many reading intervals for the next reading


class MonitorError(RuntimeError):
    """The energy monitor cannot measure as asked; the message says why and what to do."""


def measure(board: str = "sim-m4", suite: str = "kws01", model: str | None = None,
            mode: str = "energy", dataset: str | Path | None = None,
            runs_dir: str | Path = "runs", monitor: str | None = None, **options: Any):
    """Run one MLPerf Tiny mode and return its scored ResultRecord (``.value``, ``.unit``,
    ``.valid``, ``.failed_rules``, ``.measured_as``, ``.source`` = the session folder).

    ``board``: a board name or TOML path; ``model``: a .tflite path, 'reference' or 'synthetic'
    (default as the CLI's); ``options``: the RunRequest fields ``iterations``, ``warmups``,
    ``min_window_s``, ``interface``. Raises PreflightError (and the CLI's other usage errors)
    before any session exists when the run cannot succeed.
    """
    from tinypower.boards import load_board
    from tinypower.dut.hardware_bench import BenchPorts
    from tinypower.models import resolve_model
    from tinypower.preflight import check_tiny_run
    from tinypower.results.record import records_from_session
    from tinypower.runner import RunRequest, run
    from tinypower.suites.benchmarks import get_suite
    from tinypower.suites.datasets import load_dataset, synthetic_inputs

    the_board, the_suite = load_board(board), get_suite(suite)
    resolved = resolve_model(the_suite, model)
    ports = BenchPorts(options.pop("port", None), options.pop("monitor_port", None),
                       options.pop("interface_port", None))
    check_tiny_run(the_board, the_suite, resolved, [mode], ports, monitor,
                   options.get("interface"))
    inputs = (load_dataset(Path(dataset), the_suite, limit=None if mode == "accuracy" else 5)
              if dataset else synthetic_inputs(the_suite))
    outcome = run(RunRequest(board=the_board, suite=the_suite, model=resolved, dataset=inputs,
                             mode=mode, runs_dir=Path(runs_dir), monitor=monitor, ports=ports,
                             **options))
    [record] = records_from_session(outcome.session.folder)
    return record


@dataclass(frozen=True)
class WindowEnergy:
    """The energy of one window, summed over the monitor's meters."""

    name: str
    start_s: float  # UTC epoch seconds
    end_s: float
    energy_j: float
    per_meter_j: dict[str, float]
    readings: int  # the fewest readings any meter took strictly inside the window
    interpolated: bool  # some meter took fewer than 2 readings inside: see ``note``
    measured_as: str  # how the meters measure: "counter" (RAPL, NVML), "hardware", ...
    note: str = ""

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def mean_power_w(self) -> float:
        return self.energy_j / self.duration_s if self.duration_s > 0 else math.nan


@dataclass
class _Open:
    start_s: float
    done: list[WindowEnergy] = field(default_factory=list)


class EnergyMonitor:
    """Energy of code blocks: ``begin_window(name)`` / ``end_window(name)``, or
    ``with monitor.window(name) as w: ...`` then ``w.result``. Windows may nest and overlap."""

    def __init__(self, meters: Sequence[SeriesMeter] | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        """``meters``: started here and closed by :meth:`close`; None finds this machine's
        RAPL and NVML. ``clock``: the meters' clock (UTC epoch seconds; a simulator's in
        tests)."""
        self.clock = clock
        self.meters = list(meters) if meters is not None else _local_meters()
        self.names = [_label(m) for m in self.meters]
        self._windows: dict[str, float] = {}
        started_s = self.clock()
        for meter in self.meters:
            meter.start()
        try:  # a first reading from each, so every window begins after one
            for meter, label in zip(self.meters, self.names, strict=True):
                self._series_after(meter, label, started_s)
        except BaseException:
            self.close()
            raise

    @classmethod
    def remote(cls, kind: str, address: str | None = None, **options: Any) -> EnergyMonitor:
        """A monitor over one meter tinypower drives: ``ptd`` (HOST:PORT), ``yokogawa``,
        ``redfish``, ``snmp_pdu``, ``ipmi``, ``nvml``, ``rapl`` (see energy_monitor.series_meters
        for the addresses)."""
        from energy_monitor.series_meters import connect_series_meter

        try:
            return cls([connect_series_meter(kind, address, **options)])
        except (MeterError, ValueError, OSError) as exc:
            raise MonitorError(f"cannot open the {kind} meter: {exc}") from exc

    def begin_window(self, name: str) -> None:
        if name in self._windows:
            raise MonitorError(f"window {name!r} is already open: end it first")
        self._windows[name] = self.clock()

    def end_window(self, name: str) -> WindowEnergy:
        try:
            start_s = self._windows.pop(name)
        except KeyError:
            raise MonitorError(f"no open window {name!r}: begin_window({name!r}) first") from None
        end_s = self.clock()
        per_meter, readings, notes = {}, [], []
        for meter, label in zip(self.meters, self.names, strict=True):
            series = self._series_after(meter, label, end_s)
            energy = series.energy(start_s, end_s, max_gap_s=math.inf)
            per_meter[label] = energy.energy_j
            readings.append(energy.readings)
            if energy.coverage < 1.0:
                notes.append(f"{label}: readings cover {energy.coverage:.0%} of the window")
            if energy.readings < 2:
                notes.append(f"{label}: {energy.readings} reading(s) inside the "
                             f"{end_s - start_s:.3f} s window, shorter than its reading "
                             "interval: energy interpolated from the readings around it")
        kinds = {m.identify().measured_as for m in self.meters}
        # a sum is only as good as its weakest part: simulated, then counter, then hardware
        label = next((k for k in ("simulated", "counter") if k in kinds), kinds.pop())
        return WindowEnergy(name, start_s, end_s, sum(per_meter.values()), per_meter,
                            min(readings), any(r < 2 for r in readings), label,
                            "; ".join(notes))

    @contextmanager
    def window(self, name: str) -> Iterator[WindowResult]:
        """``with monitor.window("train") as w: ...``; afterwards ``w.result`` is the
        WindowEnergy."""
        holder = WindowResult()
        self.begin_window(name)
        try:
            yield holder
        finally:
            holder.result = self.end_window(name)

    def close(self) -> None:
        for meter in self.meters:
            meter.close()

    def __enter__(self) -> EnergyMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _series_after(self, meter: SeriesMeter, label: str, end_s: float):
        """The meter's readings so far, once one is at or after ``end_s``."""
        interval = getattr(meter, "poll_interval_s", None) or getattr(
            getattr(meter, "_poller", None), "interval_s", 1.0)
        deadline = time.monotonic() + END_TIMEOUT_INTERVALS * interval
        while True:
            series = meter.series()
            if len(series) and series.time_s[-1] >= end_s:
                return series
            if time.monotonic() > deadline:
                raise MonitorError(f"{label} gave no reading after the window ended (waited "
                                   f"{END_TIMEOUT_INTERVALS * interval:.1f} s): is it still "
                                   "connected?")
            time.sleep(min(interval / 4, 0.05))


@dataclass
class WindowResult:
    """What ``EnergyMonitor.window`` yields; ``result`` is set when the block ends."""

    result: WindowEnergy | None = None


def _label(meter: SeriesMeter) -> str:
    identity = meter.identify()
    return f"{identity.kind} {identity.model}".strip()


def _local_meters() -> list[SeriesMeter]:
    """This machine's RAPL and NVML, whichever can be read; an error naming both reasons when
    neither can."""
    from energy_monitor.nvml import Nvml
    from energy_monitor.rapl import Rapl

    meters, reasons = [], []
    for kind, make in (("RAPL", lambda: Rapl(poll_interval_s=POLL_INTERVAL_S)),
                       ("NVML", lambda: Nvml(poll_interval_s=POLL_INTERVAL_S))):
        try:
            meters.append(make())
        except (MeterError, OSError) as exc:
            reasons.append(f"{kind}: {exc}")
    if not meters:
        raise MonitorError("no local energy meter can be read here (" + "; ".join(reasons)
                           + "); pass meters, or use EnergyMonitor.remote(KIND, ADDRESS)")
    return meters
