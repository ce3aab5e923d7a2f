"""The Meter protocol every instrument driver implements.

Small on purpose (like Zeus's ``begin_window``/``end_window``): configure, start, watch for
timestamp edges while the workload runs, stop and get a :class:`~energy_monitor.trace.Trace`.
Integration belongs to the timing core, never to a driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from energy_monitor.series import CounterSeries, PowerSeries
from energy_monitor.trace import Event, Trace

# How a number was measured; results carry it so a simulated number is never passed off as real.
MEASURED_AS = ("hardware", "emulated", "simulated", "counter")


class MeterError(RuntimeError):
    """The meter failed or sent something we cannot read; the message says what and the fix."""


def parse_host_port(address: str, default_port: int, example: str) -> tuple[str, int]:
    """A network meter's address: ``tcp://HOST:PORT``, ``HOST:PORT`` or ``HOST`` (then
    ``default_port``); an empty host is this machine. ``example`` shows the form in the error."""
    rest = address.removeprefix("tcp://")
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest or "127.0.0.1", default_port
    if not port.isdigit():
        raise MeterError(f"bad address {address!r}: write {example}")
    return host or "127.0.0.1", int(port)


@dataclass(frozen=True)
class MeterIdentity:
    kind: str  # driver name, e.g. "lpm01a"
    model: str
    serial: str
    firmware: str
    measured_as: str  # one of MEASURED_AS
    # What the instrument told us that weakens its numbers without stopping a run (e.g. a PPK2
    # that reports no factory calibration); kept in the session with the identity.
    warnings: tuple[str, ...] = ()


class Meter(Protocol):
    """A source of traces with timestamp edges captured on the meter's own clock."""

    def identify(self) -> MeterIdentity: ...

    def configure(self, *, voltage_v: float, sample_rate_hz: float) -> None: ...

    sample_rate_hz: float

    def start(self, folder: Path | None = None) -> None:
        """Start acquiring; with a folder, the raw stream and the samples are written there
        while measuring (bounded memory; a crash loses at most the last second)."""

    def events(self) -> list[Event]:
        """Timestamp edges seen so far."""

    def wait_for_events(self, count: int, timeout_s: float) -> list[Event]:
        """Block until ``count`` edges have been seen (or the timeout); return all seen."""

    def sample_count(self) -> int:
        """Samples received so far."""

    def stop(self) -> Trace:
        """Stop acquiring and return everything measured since ``start``; a broken stream
        raises :class:`MeterError` after closing its files."""

    def trace(self) -> Trace:
        """What has been measured so far, also after a failure (to keep it)."""

    def close(self) -> None: ...


class SeriesMeter(Protocol):
    """A meter whose readings carry their own time: AC analyzers (PTDaemon, SCPI), PDUs,
    BMCs, on-chip counters (NVML, RAPL) and fleet telemetry.

    These meters do not see the workload's edges; the window comes from the workload (LoadGen's
    power_begin/power_end, a training log's run_start/run_stop) on a clock whose skew to the
    meter's the caller measures and states as the alignment bound. Reading times are UTC epoch
    seconds.
    """

    def identify(self) -> MeterIdentity: ...

    def start(self, folder: Path | None = None) -> None:
        """Start reading; with a folder, readings are appended there while measuring."""

    def stop(self) -> PowerSeries | CounterSeries:
        """Stop reading and return everything read since ``start``."""

    def close(self) -> None: ...
