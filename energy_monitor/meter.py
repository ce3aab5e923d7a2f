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
# Every simulator in tinypower puts this in what it reports about itself (an ID, serial or
# firmware string). A driver that reads it back knows it talked to one of ours: the label is
# evidence (what the device said), never configuration.
SIM_MARK = "tinypowersim"
# From the least to the most trustworthy: a result is as weak as its weakest part.
_STRENGTH = ("simulated", "emulated", "counter", "hardware")


def is_ours(*reported: object) -> bool:
    """Whether any of the strings a device reported carries :data:`SIM_MARK`."""
    return any(SIM_MARK in str(text).lower() for text in reported)


def weakest(*labels: str) -> str:
    """The least trustworthy of several ``measured_as`` labels (a simulated meter on a real
    board gives a simulated number)."""
    for label in labels:
        if label not in MEASURED_AS:
            raise ValueError(f"measured_as {label!r} is not one of {', '.join(MEASURED_AS)}")
    return min(labels, key=_STRENGTH.index)


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
    """What the instrument reported about itself, and what that makes its numbers.

    ``measured_as`` is what the driver was asked to claim, but it is checked against the
    evidence here, once for every driver: an identity carrying :data:`SIM_MARK` is
    ``simulated`` whatever was asked. ``verification`` is the driver's level from
    :data:`energy_monitor.verification.LEVELS`.
    """

    kind: str  # driver name, e.g. "lpm01a"
    model: str
    serial: str
    firmware: str
    measured_as: str  # one of MEASURED_AS
    # What the instrument told us that weakens its numbers without stopping a run (e.g. a PPK2
    # that reports no factory calibration); kept in the session with the identity.
    warnings: tuple[str, ...] = ()
    verification: str = ""

    def __post_init__(self) -> None:
        from energy_monitor.verification import level_of

        if self.measured_as not in MEASURED_AS:
            raise ValueError(
                f"measured_as {self.measured_as!r} is not one of {', '.join(MEASURED_AS)}"
            )
        if is_ours(self.model, self.serial, self.firmware):
            object.__setattr__(self, "measured_as", "simulated")
        if not self.verification:
            object.__setattr__(self, "verification", level_of(self.kind))


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
