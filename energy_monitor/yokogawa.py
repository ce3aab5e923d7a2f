"""Yokogawa WT310E-class power analyzers directly over SCPI (pyvisa), for labs without PTDaemon.

The analyzer is reached by a VISA resource: USB-TMC (``USB0::0x0B21::0x0025::<serial>::INSTR``),
VXI-11 over Ethernet (``TCPIP::<ip>::INSTR``) or a raw socket (``TCPIP::<ip>::<port>::SOCKET``),
through pyvisa with the pure-Python pyvisa-py backend by default (``visa_library="@py"``; pass
``""`` for an installed NI-VISA). The driver sets up what PTDaemon would:

- remote mode, headers off, ASCII numbers;
- numeric items 1-4 = U, I, P, LAMBDA (power factor) of element 1, then WH and TIME for the
  integrator (``:NUMeric:NORMal:ITEM<n> <func>,<elem>``);
- the update rate (``:RATE``, default 1 s as MLPerf samples) and the voltage and current ranges
  (``"auto"`` for ranging, fixed values for testing, as :meth:`Yokogawa.set_ranges`).

While measuring, a thread asks ``:NUMeric:NORMal:VALue?`` once per update period and stamps
the reply with the host's UTC clock; :meth:`Yokogawa.stop` returns P as a
:class:`~energy_monitor.series.PowerSeries`, and :attr:`Yokogawa.readings` keeps U, I, P and
PF (ranging maxima come from them). An over-range reading (``9.9E+37``) is left out and counted in
``overrange_readings``: MLPerf's testing run must have none. After each setting the driver asks
``:STATus:ERRor?`` so a refused setting (813: not allowed while integrating) is an error naming
it. The analyzer's own integrator (``integration_start``/``integration_stop``/
``integrated_energy_j``) gives a second, independent energy figure.

Reference: ``shared/reference/instruments.md`` §5; setup in ``docs/meters/yokogawa.md``.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from energy_monitor.meter import MeterError, MeterIdentity
from energy_monitor.poller import Poller
from energy_monitor.series import PowerSeries

RATES_S = {"100MS": 0.1, "250MS": 0.25, "500MS": 0.5, "1S": 1.0, "2S": 2.0, "5S": 5.0}
ITEMS = (("U", "1"), ("I", "1"), ("P", "1"), ("LAMBDA", "1"), ("WH", "1"), ("TIME", "1"))
SENTINEL = 9.0e37  # 9.9E+37 over-range, 9.91E+37 no data
# The WT310E's measuring ranges (crest factor 3): it accepts only these values.
VOLTAGE_RANGES_V = (15.0, 30.0, 60.0, 150.0, 300.0, 600.0)
CURRENT_RANGES_A = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)


@dataclass(frozen=True)
class YokogawaReading:
    time_s: float
    volts: float
    amps: float
    watts: float
    pf: float


class Yokogawa:
    """A WT310E-class analyzer as a series meter (element 1)."""

    kind = "yokogawa"

    def __init__(
        self, resource: str, *, update_rate: str = "1S", voltage_range: float | str = "auto",
        current_range: float | str = "auto", poll_interval_s: float | None = None,
        visa_library: str = "@py", timeout_s: float = 5.0, measured_as: str = "hardware",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``poll_interval_s`` defaults to the update period (polling faster reads the same
        update twice)."""
        if update_rate.upper() not in RATES_S:
            raise MeterError(f"update_rate must be one of {', '.join(RATES_S)}, "
                             f"not {update_rate!r}")
        try:
            import pyvisa
        except ImportError:
            raise MeterError("the yokogawa meter needs pyvisa and pyvisa-py: "
                             "pip install pyvisa pyvisa-py") from None
        self._visa_error = pyvisa.errors.Error
        self.resource_name = resource
        self.measured_as = measured_as
        self.clock = clock
        self.update_rate = update_rate.upper()
        self._lock = threading.Lock()
        try:
            self._rm = pyvisa.ResourceManager(visa_library)
            self._inst: Any = self._rm.open_resource(
                resource, read_termination="\n", write_termination="\n",
                timeout=int(timeout_s * 1000),
            )
        except (self._visa_error, OSError, ValueError) as exc:
            raise MeterError(
                f"cannot open the analyzer at {resource} ({exc}): check the VISA resource "
                "(USB0::0x0B21::0x0025::<serial>::INSTR, TCPIP::<ip>::INSTR or "
                "TCPIP::<ip>::<port>::SOCKET), the cable and that no other program holds it"
            ) from exc
        try:
            try:
                self.idn = self._query("*IDN?")
            except MeterError as exc:
                raise MeterError(
                    f"cannot open the analyzer at {resource} ({exc.__cause__ or exc}): check "
                    "the VISA resource, the cable, and that no other program holds it"
                ) from exc
            if not self.idn.upper().startswith("YOKOGAWA,"):
                raise MeterError(f"{resource} answered *IDN? with {self.idn!r}, not a Yokogawa "
                                 "analyzer: check the resource address")
            for command in (":COMMunicate:REMote ON", ":COMMunicate:HEADer OFF",
                            ":NUMeric:FORMat ASCII", ":NUMeric:NORMal:NUMber "
                            f"{len(ITEMS)}"):
                self._set(command)
            for n, (func, element) in enumerate(ITEMS, start=1):
                self._set(f":NUMeric:NORMal:ITEM{n} {func},{element}")
            self._set(f":RATE {self.update_rate}")
            self.set_ranges(voltage_range, current_range)
        except BaseException:
            self.close()
            raise
        self.poll_interval_s = poll_interval_s or RATES_S[self.update_rate]
        self.readings: list[YokogawaReading] = []
        self.overrange_readings = 0
        self._csv: TextIO | None = None
        self._poller = Poller(self.poll, self.poll_interval_s, "yokogawa-poll")

    # -- SeriesMeter ----------------------------------------------------------------------

    def identify(self) -> MeterIdentity:
        fields = [f.strip() for f in self.idn.split(",")]
        fields += ["?"] * (4 - len(fields))
        return MeterIdentity("yokogawa", f"Yokogawa {fields[1]}", fields[2], fields[3],
                             self.measured_as)

    def start(self, folder: Path | None = None) -> None:
        """Poll the numeric items; with a folder, readings go to ``folder/yokogawa.csv``."""
        with self._lock:
            self.readings = []
            self.overrange_readings = 0
        if folder:
            self._csv = (folder / "yokogawa.csv").open("w")
            self._csv.write("time_s,volts,amps,watts,pf\n")
        self.poll()
        self._poller.start()

    def stop(self) -> PowerSeries:
        self._poller.finish(self._close_csv)
        return self.series()

    def _close_csv(self) -> None:
        if self._csv:
            self._csv.close()
            self._csv = None

    def close(self) -> None:
        if hasattr(self, "_poller"):
            self._poller.stop()
        if getattr(self, "_csv", None):
            self._csv.close()
            self._csv = None
        inst = getattr(self, "_inst", None)
        if inst is not None:
            with contextlib.suppress(self._visa_error, OSError):
                inst.write(":COMMunicate:REMote OFF")
            inst.close()
            self._inst = None

    # -- readings -------------------------------------------------------------------------

    def poll(self) -> None:
        """One ``:NUMeric:NORMal:VALue?`` of U, I, P, PF."""
        text = self._query(":NUMeric:NORMal:VALue?")
        now = self.clock()
        values = _numbers(text, len(ITEMS), ":NUMeric:NORMal:VALue?")
        volts, amps, watts, pf = values[:4]
        if max(abs(volts), abs(amps), abs(watts)) >= SENTINEL:
            with self._lock:
                self.overrange_readings += 1
            return
        reading = YokogawaReading(now, volts, amps, watts, pf)
        with self._lock:
            if self.readings and now <= self.readings[-1].time_s:
                return
            self.readings.append(reading)
        if self._csv:
            self._csv.write(f"{now:.6f},{volts:.6g},{amps:.6g},{watts:.6g},{pf:.6g}\n")
            self._csv.flush()

    def series(self) -> PowerSeries:
        with self._lock:
            readings = list(self.readings)
        return PowerSeries(np.array([r.time_s for r in readings]),
                           np.array([r.watts for r in readings]),
                           source=f"yokogawa {self.resource_name}")

    def ranging_maxima(self) -> tuple[float, float]:
        """(max volts, max amps) over the readings, to fix the testing run's ranges."""
        if not self.readings:
            raise MeterError("no analyzer readings to take the ranging maxima from")
        return max(r.volts for r in self.readings), max(r.amps for r in self.readings)

    # -- settings -------------------------------------------------------------------------

    def set_ranges(self, voltage: float | str, current: float | str) -> None:
        """``"auto"``, or the smallest range the analyzer offers that holds the value (V, A):
        MLPerf's testing run fixes the ranges from the ranging maxima, which are rarely a
        range themselves. Auto ranging is for the ranging run only."""
        for what, value, ranges in (("VOLTage", voltage, VOLTAGE_RANGES_V),
                                    ("CURRent", current, CURRENT_RANGES_A)):
            if isinstance(value, str):
                if value.lower() != "auto":
                    raise MeterError(f"a {what.lower()} range is a number or 'auto', "
                                     f"not {value!r}")
                self._set(f":INPut:{what}:AUTO ON")
                continue
            fitting = [r for r in ranges if r >= value]
            if not fitting:
                raise MeterError(
                    f"{value:g} is above the analyzer's largest {what.lower()} range "
                    f"({ranges[-1]:g}): the load cannot be measured on this input"
                )
            self._set(f":INPut:{what}:RANGe {fitting[0]:g}")

    def integration_start(self) -> None:
        """Reset and start the analyzer's integrator (normal mode, no timer)."""
        self._set(":INTEGrate:STOP")
        self._set(":INTEGrate:RESet")
        self._set(":INTEGrate:MODE NORMal")
        self._set(":INTEGrate:TIMer 0,0,0")
        self._set(":INTEGrate:STARt")

    def integration_stop(self) -> None:
        self._set(":INTEGrate:STOP")

    def integrated_energy_j(self) -> tuple[float, float]:
        """(energy J, integration time s) from the WH and TIME items."""
        values = _numbers(self._query(":NUMeric:NORMal:VALue?"), len(ITEMS),
                          ":NUMeric:NORMal:VALue?")
        return values[4] * 3600.0, values[5]

    # -- SCPI -----------------------------------------------------------------------------

    def _set(self, command: str) -> None:
        """Send a setting, then ask the error queue whether it was taken."""
        self._write(command)
        error = self._query(":STATus:ERRor?")
        code = error.split(",", 1)[0].strip()
        if code not in ("0", "+0"):
            hint = (" (stop integration first)" if code == "813" else
                    " (check the value against the analyzer's ranges and rates)")
            raise MeterError(f"the analyzer refused {command!r}: {error}{hint}")

    def _write(self, command: str) -> None:
        with self._lock:
            try:
                self._inst.write(command)
            except (self._visa_error, OSError) as exc:
                raise MeterError(self._lost(command, exc)) from exc

    def _query(self, command: str) -> str:
        with self._lock:
            try:
                return self._inst.query(command).strip()
            except UnicodeDecodeError:
                raise MeterError(f"malformed reply to {command!r} from the analyzer (not "
                                 "ASCII): is only one program talking to it?") from None
            except (self._visa_error, OSError) as exc:
                raise MeterError(self._lost(command, exc)) from exc

    def _lost(self, command: str, exc: Exception) -> str:
        return (f"the analyzer at {self.resource_name} did not answer {command!r} ({exc}) "
                f"after {len(getattr(self, 'readings', []))} readings: check its cable and "
                "power; the readings so far are kept")


def _numbers(text: str, count: int, command: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise MeterError(f"malformed reply to {command!r}: {text[:80]!r} (expected {count} "
                         "numbers); is the analyzer in ASCII format with headers off?")
    return values
