"""labgrid drivers for tinypower's serial energy monitors (LPM01A, PPK2), so a labgrid user
reads energy from them in their own tests, locally or through a place's exporter.

Each driver binds to a serial port resource (``RawSerialPort``, ``USBSerialPort`` or a place's
``NetworkSerialPort``) and measures through tinypower's own driver for that monitor. It offers
the four calls of labgrid's energy-analyzer protocol (``EnergyAnalyzerProtocol``: the
``get_statistics``/``start``/``stop``/``capture``, proposed with a Joulescope driver in
labgrid-project/labgrid PR #1920), and declares that protocol when the installed labgrid has
it; released labgrid (26.0.1) does not, so there the drivers are found by name
(``target.get_driver("Lpm01aEnergyDriver")``).

Registered with labgrid when this module is imported, which a labgrid environment does with::

    imports:
      - energy_monitor.labgrid_drivers

Only this module and ``tinypower.farm.place`` import labgrid (``pip install
'tinypower[labgrid]'``).

What the numbers are: the monitor's own samples, integrated by tinypower's timing core
(``Trace.energy_sum_j``). The LPM01A's ASCII stream gives energy per sample period, so there
the voltage is the output voltage the driver set (``voltage_v``) and the current is power over
it; the PPK2 gives current, at the source voltage set.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import attr
import numpy as np
from labgrid.driver.common import Driver
from labgrid.factory import target_factory
from labgrid.resource import NetworkSerialPort

from energy_monitor.drivers import connect_meter
from energy_monitor.meter import Meter
from energy_monitor.trace import Trace, save_trace

try:
    from labgrid.protocol import EnergyAnalyzerProtocol
except ImportError:  # labgrid 26.0.1 and earlier
    EnergyAnalyzerProtocol = None

_BASES: tuple[type, ...] = (Driver,) if EnergyAnalyzerProtocol is None else (
    Driver, EnergyAnalyzerProtocol)
STATISTICS_S = 0.5  # get_statistics outside a window measures this long
CAPTURE_S = 1.0  # capture() without a duration


def port_url(port: Any) -> str:
    """What pyserial opens for a labgrid serial port resource (as labgrid's SerialDriver)."""
    if isinstance(port, NetworkSerialPort):
        if port.protocol == "raw":
            return f"socket://{port.host}:{port.port}"
        return f"rfc2217://{port.host}:{port.port}?ign_set_control"
    return port.port


def _stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"avg": float("nan"), "std": float("nan"), "min": float("nan"),
                "max": float("nan")}
    return {"avg": float(np.mean(values)), "std": float(np.std(values)),
            "min": float(np.min(values)), "max": float(np.max(values))}


def trace_statistics(trace: Trace, voltage_v: float) -> dict[str, Any]:
    """``current``/``voltage``/``power`` (avg, std, min, max), ``charge_C``, ``energy_J`` and
    ``duration_s`` of a trace; ``voltage_v`` is the set output voltage, for traces of energy
    or power (which carry no voltage column)."""
    power = trace.power_w_column()
    if trace.current_a is not None:
        current = np.asarray(trace.current_a, dtype=np.float64)
        voltage = np.asarray(trace.voltage_v, dtype=np.float64)
    else:
        current = power / voltage_v
        voltage = np.full(len(power), voltage_v)
    return {
        "current": _stats(current), "voltage": _stats(voltage), "power": _stats(power),
        "charge_C": float(np.sum(current)) / trace.sample_rate_hz,
        "energy_J": trace.energy_sum_j(),
        "duration_s": len(trace) / trace.sample_rate_hz,
    }


@attr.s(eq=False)
class _MonitorDriver(*_BASES):
    """A tinypower monitor as a labgrid driver; subclasses name the monitor ``kind``."""

    bindings: ClassVar[dict] = {"port": {"SerialPort", "NetworkSerialPort"}}
    kind: ClassVar[str] = ""
    default_sample_rate_hz: ClassVar[float] = 0.0
    voltage_v = attr.ib(default=3.3, converter=float)
    sample_rate_hz = attr.ib(default=None, converter=attr.converters.optional(float))

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.sample_rate_hz = self.sample_rate_hz or self.default_sample_rate_hz
        self._meter: Meter | None = None
        self._acquiring = False
        self._folder: tempfile.TemporaryDirectory | None = None

    def on_activate(self) -> None:
        self._meter = connect_meter(self.kind, port_url(self.port))
        self._meter.identify()
        self._meter.configure(voltage_v=self.voltage_v, sample_rate_hz=self.sample_rate_hz)

    def on_deactivate(self) -> None:
        try:
            if self._acquiring:
                self._stop_trace()
        finally:
            self._meter.close()
            self._meter = None

    def _start_trace(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix=f"{self.kind}-")
        self._meter.start(Path(self._folder.name))
        self._acquiring = True

    def _stop_trace(self) -> Trace:
        self._acquiring = False
        try:
            return self._meter.stop()
        finally:
            self._folder.cleanup()

    def _measure(self, seconds: float) -> Trace:
        self._start_trace()
        time.sleep(seconds)
        return self._stop_trace()

    @Driver.check_active
    def get_statistics(self) -> dict[str, Any]:
        """Statistics of the open window so far, else of a short acquisition."""
        trace = self._meter.trace() if self._acquiring else self._measure(STATISTICS_S)
        return trace_statistics(trace, self.voltage_v)

    @Driver.check_active
    def start(self) -> None:
        """Begin a charge and energy window."""
        if self._acquiring:
            raise RuntimeError(f"{self.kind}: a window is already open: stop() it first")
        self._start_trace()

    @Driver.check_active
    def stop(self) -> dict[str, float]:
        """End the window: its ``energy_J``, ``charge_C`` and ``duration_s``."""
        if not self._acquiring:
            raise RuntimeError(f"{self.kind}: no window is open: start() one first")
        stats = trace_statistics(self._stop_trace(), self.voltage_v)
        return {k: stats[k] for k in ("energy_J", "charge_C", "duration_s")}

    @Driver.check_active
    def capture(self, filename: str, signals: Any = None, duration: float | None = None,
                frequency: float | None = None) -> Path:
        """Measure ``duration`` seconds into ``filename`` (tinypower's trace ``.npz``, which
        ``energy_monitor.trace.load_trace`` reads); ``frequency`` stays set for later calls.
        The monitor gives one signal (its energy, power or current samples), whatever
        ``signals`` asks for."""
        if frequency is not None and float(frequency) != self.sample_rate_hz:
            self.sample_rate_hz = float(frequency)
            self._meter.configure(voltage_v=self.voltage_v, sample_rate_hz=self.sample_rate_hz)
        return save_trace(self._measure(CAPTURE_S if duration is None else duration),
                          Path(filename))


@target_factory.reg_driver
@attr.s(eq=False)
class Lpm01aEnergyDriver(_MonitorDriver):
    """ST X-NUCLEO-LPM01A (PowerShield) on a serial port."""

    kind: ClassVar[str] = "lpm01a"
    default_sample_rate_hz: ClassVar[float] = 1000.0  # MLPerf Tiny's rate for it


@target_factory.reg_driver
@attr.s(eq=False)
class Ppk2EnergyDriver(_MonitorDriver):
    """Nordic Power Profiler Kit II on a serial port (source meter mode)."""

    kind: ClassVar[str] = "ppk2"
    default_sample_rate_hz: ClassVar[float] = 100_000.0  # the only rate it streams at
