"""Driver for the Nordic Power Profiler Kit II (PPK2) in source-meter mode.

The PPK2 takes raw command bytes (no terminator, no acknowledgement), answers GetMetadata with a
``key: value`` text block ending in ``END`` (its calibration constants), and while measuring
streams one 4-byte little-endian word per 10 us: a 14-bit ADC code, the 3-bit current range that
code was taken in, a 6-bit sample counter and the 8 logic inputs D0..D7. One reader thread owns
the port: it appends every byte to the raw file, decodes whole words with numpy (a word split
across two reads waits for its other half), converts them to amperes with the unit's own
calibration, turns gaps in the counter into drops (padded with NaN so indices stay on the
meter's clock) and level changes on D0 into timestamp edges.

What the vendor software does is the yardstick (Nordic's nRF Connect Power Profiler,
``NordicSemiconductor/pc-nrfconnect-ppk`` ``src/device/serialDevice.ts``, and the ``ppk2-api``
package, which follows it): the current formula in their order of operations, so both give the
same float for the same word; a metadata block without ``Calibrated``, or with ``Calibrated: 0``,
is used as it is (neither program reads that key) and the warning goes into the meter identity;
a word whose range field is above 4 is not a reading (Nordic clamps the field to 5, past its
five sets of constants, and shows no value; ppk2-api clamps to 4): it is skipped and the
counter places the samples after it, so a word that replaced a sample is a one-sample drop.
Nordic's optional spike filter is here too (``spike_filter=True``), off by default: it smooths
the samples right after each range switch, which moves charge between samples, so it is for
looking at traces, not for energy. A saturated top range ends the stream with an error; what
came before is kept, and the raw file keeps the evidence.

Reference: ``shared/reference/instruments.md`` §3; ``docs/monitors/ppk2.md``.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import serial
import serial.tools.list_ports

from energy_monitor.meter import MeterError, MeterIdentity
from energy_monitor.store import SampleStore
from energy_monitor.stream import EdgeWaiting, RawLog, StreamHealth
from energy_monitor.trace import Drop, Event, Trace

SAMPLE_RATE_HZ = 100_000.0  # the only rate the PPK2 streams at
REGULATOR_MV = (800, 5000)
ADC_MULT = 1.8 / 163840  # volts per unit of (ADC code x 4)
ADC_MAX = 0x3FFF
TOP_RANGE = 4
COUNTER_MOD = 64
READ_SIZE = 1 << 18  # bytes per read: 64 Ki samples, or what arrived within READ_TIMEOUT_S
READ_TIMEOUT_S = 0.01
STOP_QUIET_S = 0.05  # after AverageStop, the stream is over once this long passes without bytes
STOP_MAX_S = 5.0
EDGE_CHOICES = ("fall", "rise", "both")
# Nordic's spike filter (pc-nrfconnect-ppk serialDevice.ts, ``spikeFilter`` defaults; ppk2-api
# uses the same numbers): exponential averages with these weights for the new sample, one for
# ranges 0..3 and one for range 4, used for this many samples from a range switch.
SPIKE_ALPHA = 0.18
SPIKE_ALPHA_TOP = 0.06
SPIKE_SAMPLES = 3

GET_METADATA = b"\x19"
AVERAGE_START = b"\x06"
AVERAGE_STOP = b"\x07"
SOURCE_METER = b"\x11\x02"
DUT_POWER_ON = b"\x0c\x01"
REGULATOR_SET = 0x0D


@dataclass(frozen=True)
class Ppk2Calibration:
    """Per-range constants of the PPK2's current formula (index = range 0..4).

    ``x = (4*ADC - O) * 1.8/163840 / R``; ``I = UG * (x*(GS*x + GI) + S*VDD/1000 + I0)`` in A.
    """

    r: tuple[float, ...] = (1031.64, 101.65, 10.15, 0.94, 0.043)
    gs: tuple[float, ...] = (1.0,) * 5
    gi: tuple[float, ...] = (1.0,) * 5
    o: tuple[float, ...] = (0.0,) * 5
    s: tuple[float, ...] = (0.0,) * 5
    i: tuple[float, ...] = (0.0,) * 5
    ug: tuple[float, ...] = (1.0,) * 5

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> Ppk2Calibration:
        """Constants from a metadata block; a key that is missing, ``-nan`` or (for a shunt)
        zero keeps its default, as ppk2-api does (Nordic's app also replaces any zero)."""
        default = cls()
        columns = {}
        for name in ("r", "gs", "gi", "o", "s", "i", "ug"):
            values = []
            for rng, fallback in enumerate(getattr(default, name)):
                value = _number(meta.get(f"{name.upper()}{rng}"))
                usable = value is not None and math.isfinite(value) and not (
                    name == "r" and value == 0
                )
                values.append(value if usable else fallback)
            columns[name] = tuple(values)
        return cls(**columns)

    def amperes(self, adc: np.ndarray, rng: np.ndarray, vdd_mv: float) -> np.ndarray:
        """Current in A for ADC codes taken in ranges ``rng`` (both integer arrays, range <= 4).

        The operations are grouped as in Nordic's ``getAdcResult`` (and ppk2-api's
        ``get_adc_result``), so the result is the same float, not just a close one."""

        def col(name: str) -> np.ndarray:
            return np.asarray(getattr(self, name), dtype=np.float64)[rng]

        x = (adc.astype(np.float64) * 4 - col("o")) * (ADC_MULT / col("r"))
        return col("ug") * (
            x * (col("gs") * x + col("gi")) + (col("s") * (vdd_mv / 1000) + col("i"))
        )


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)  # also reads "-nan", "nan", "inf"
    except ValueError:
        return None


def parse_metadata(text: str) -> dict[str, str]:
    """The ``key: value`` lines before ``END`` (values kept as text)."""
    meta: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line == "END":
            break
        key, sep, value = line.partition(":")
        if sep:
            meta[key.strip()] = value.strip()
    return meta


@dataclass
class DecodedBlock:
    """What one stretch of the stream decoded to, in trace order: ``current_a`` holds NaN
    for lost samples, ``received`` counts the words decoded, ``garbled`` the words skipped
    (range field above 4), ``error`` ends the stream."""

    current_a: np.ndarray
    received: int
    drops: list[Drop] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    garbled: int = 0
    error: str | None = None


class SpikeFilter:
    """Nordic's spike filter, sample by sample as ``getAdcResult`` applies it (state kept
    across reads; a new acquisition starts a new filter, as AverageStart resets Nordic's).

    Two exponential averages run over every sample (weights :data:`SPIKE_ALPHA` and
    :data:`SPIKE_ALPHA_TOP`). From a range switch, for :data:`SPIKE_SAMPLES` samples, the
    output is the average instead of the sample (range 4: the range-4 average), and in range 4
    the first two samples after the switch are left out of both averages. A Python loop: it
    is optional and off for energy."""

    def __init__(self) -> None:
        self.avg: float | None = None
        self.avg_top: float | None = None
        self.prev_range: int | None = None
        self.after = 0
        self.consecutive = 0

    def apply(self, amps: np.ndarray, rng: np.ndarray) -> np.ndarray:
        out = amps.tolist()
        ranges = rng.tolist()
        avg, avg_top, prev, after, consecutive = (
            self.avg, self.avg_top, self.prev_range, self.after, self.consecutive
        )
        keep, keep_top = 1.0 - SPIKE_ALPHA, 1.0 - SPIKE_ALPHA_TOP
        for j, (value, r) in enumerate(zip(out, ranges, strict=True)):
            before, before_top = avg, avg_top
            avg = value if avg is None else SPIKE_ALPHA * value + keep * avg
            avg_top = value if avg_top is None else SPIKE_ALPHA_TOP * value + keep_top * avg_top
            if prev is None:
                prev = r
            if prev != r or after > 0:
                if prev != r:
                    consecutive = 0
                    after = SPIKE_SAMPLES
                else:
                    consecutive += 1
                if r == TOP_RANGE:
                    if consecutive < 2:
                        avg, avg_top = before, before_top
                    out[j] = avg_top
                else:
                    out[j] = avg
                after -= 1
            prev = r
        self.avg, self.avg_top, self.prev_range, self.after, self.consecutive = (
            avg, avg_top, prev, after, consecutive
        )
        return np.asarray(out, dtype=np.float64)


def spike_windows(rng: np.ndarray) -> np.ndarray:
    """Which samples the spike filter replaces: the :data:`SPIKE_SAMPLES` samples from each
    range switch (``rng`` = the range field of consecutive samples)."""
    switch = np.zeros(len(rng), dtype=bool)
    switch[1:] = rng[1:] != rng[:-1]
    window = switch.copy()
    for k in range(1, SPIKE_SAMPLES):
        window[k:] |= switch[:-k]
    return window


class Ppk2Decoder:
    """Bytes -> samples, keeping state across reads: a split word's first bytes, the last
    counter value (for gaps), the last D0 level (for edges) and, when on, the spike filter.
    Also decodes a saved ``ppk2-raw.bin`` offline."""

    def __init__(
        self, calibration: Ppk2Calibration, vdd_mv: float, edges: str,
        spike_filter: bool = False,
    ) -> None:
        self.calibration = calibration
        self.vdd_mv = vdd_mv
        self.edges = edges
        self.spike_filter = SpikeFilter() if spike_filter else None
        self.rest = b""
        self.position = 0  # trace index of the next sample (received + NaN pads)
        self.received = 0
        self.garbled = 0  # words skipped: range field above 4
        self.last_counter: int | None = None
        self.last_level: int | None = None

    def feed(self, data: bytes) -> DecodedBlock:
        data = self.rest + data
        whole = len(data) // 4 * 4
        self.rest = data[whole:]
        words = np.frombuffer(data, dtype="<u4", count=whole // 4)
        garbled = ((words >> 14) & 0x7) > TOP_RANGE
        skipped = int(np.count_nonzero(garbled))
        if skipped:  # not a reading: the counter of the words around it tells what was lost
            words = words[~garbled]
            self.garbled += skipped
        adc = (words & ADC_MAX).astype(np.int64)
        rng = ((words >> 14) & 0x7).astype(np.int64)
        error = None
        bad = np.flatnonzero((rng == TOP_RANGE) & (adc == ADC_MAX))
        if len(bad):
            j = int(bad[0])
            error = (
                f"current above the PPK2's range at sample {self.received + j}: the top range's "
                "ADC is saturated (0x3FFF). The PPK2 measures up to 1 A: check the DUT for a "
                "short or use a meter with a higher range; the samples before it are kept"
            )
            words, adc, rng = words[:j], adc[:j], rng[:j]
        n = len(words)
        block = DecodedBlock(np.empty(0), n, garbled=skipped, error=error)
        if n == 0:
            return block
        counter = ((words >> 18) & (COUNTER_MOD - 1)).astype(np.int64)
        previous = np.empty(n, dtype=np.int64)
        previous[1:] = counter[:-1]
        previous[0] = counter[0] - 1 if self.last_counter is None else self.last_counter
        step = (counter - previous) % COUNTER_MOD
        lost = np.where(step == 0, COUNTER_MOD, step) - 1  # a repeated counter: 63 lost
        positions = self.position + np.arange(n) + np.cumsum(lost)
        current = self.calibration.amperes(adc, rng, self.vdd_mv)
        if self.spike_filter is not None:
            current = self.spike_filter.apply(current, rng)
        if lost.any():
            padded = np.full(int(positions[-1]) + 1 - self.position, np.nan)
            padded[positions - self.position] = current
            current = padded
            block.drops = [
                Drop(index=int(positions[j]), missing=int(lost[j])) for j in np.flatnonzero(lost)
            ]
        block.current_a = current
        block.events = self._edges(((words >> 24) & 1).astype(np.int8), positions)
        self.last_counter = int(counter[-1])
        self.position = int(positions[-1]) + 1
        self.received += n
        return block

    def _edges(self, level: np.ndarray, positions: np.ndarray) -> list[Event]:
        before = level[0] if self.last_level is None else self.last_level
        changed = np.flatnonzero(level != np.concatenate(([before], level[:-1])))
        self.last_level = int(level[-1])
        events = []
        for j in changed:
            polarity = "rise" if level[j] else "fall"
            if self.edges in (polarity, "both"):
                index = int(positions[j])
                events.append(Event(index=index, time_s=index / SAMPLE_RATE_HZ, polarity=polarity))
        return events


class Ppk2(EdgeWaiting):
    """A PPK2 reached through any pyserial URL (``/dev/ttyACM0``, ``COM5``, a pty, ``socket://``).

    It supplies the DUT from its regulator (source-meter mode) and measures the current it
    draws; the voltage column of the trace is the regulator setting. ``edges`` picks which
    level changes of logic input D0 become timestamp events: ``fall`` (MLPerf Tiny's choice),
    ``rise`` or ``both``. ``spike_filter`` applies Nordic's spike filter to the currents (off
    by default; the identity warns when it is on, since it is not for energy).
    """

    kind = "ppk2"

    def __init__(
        self, url: str, *, measured_as: str = "hardware", edges: str = "fall",
        command_timeout_s: float = 3.0, stall_timeout_s: float = 3.0,
        on_command: Callable[[str, str], None] | None = None, spike_filter: bool = False,
    ) -> None:
        if edges not in EDGE_CHOICES:
            raise ValueError(f"edges must be one of {', '.join(EDGE_CHOICES)}, not {edges!r}")
        self.url = url
        self.measured_as = measured_as
        self.edges = edges
        self.spike_filter = spike_filter
        self.command_timeout_s = command_timeout_s
        self._health = StreamHealth(
            "the PPK2", stall_timeout_s, "Check the USB cable and that the PPK2 is switched on"
        )
        self._on_command = on_command or (lambda direction, text: None)
        try:
            self._port = serial.serial_for_url(url, baudrate=115200, timeout=READ_TIMEOUT_S)
        except (serial.SerialException, OSError) as exc:
            raise MeterError(
                f"cannot open the PPK2 at {url}: {exc}. Check it is plugged in (the USB DATA/POWER "
                "port), switched on, and that no other program (nRF Connect Power Profiler, "
                "another runner) holds the port"
            ) from exc
        self.sample_rate_hz = SAMPLE_RATE_HZ
        self.voltage_v = 3.3
        self.metadata: dict[str, str] = {}
        self.calibration: Ppk2Calibration | None = None
        self.warnings: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._text = bytearray()  # bytes outside an acquisition: the metadata reply
        self._raw = RawLog(None)
        self._streaming = False  # AverageStart sent and not yet stopped
        self._reset_acquisition(None)
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="ppk2-reader", daemon=True)
        self._reader.start()

    # -- Meter protocol -------------------------------------------------------------------

    def identify(self) -> MeterIdentity:
        """Read the metadata block (calibration constants, hardware id); refuses a device
        whose block is not a PPK2's. What weakens the numbers (no factory calibration, the
        spike filter) is in the identity's ``warnings``."""
        self.metadata = self._read_metadata()
        self.calibration = Ppk2Calibration.from_metadata(self.metadata)
        self.warnings = self._warnings(self.metadata)
        return MeterIdentity(
            "ppk2", "Power Profiler Kit II", _usb_serial(self.url),
            f"HW {self.metadata.get('HW', 'unknown')}", self.measured_as, self.warnings,
        )

    def configure(self, *, voltage_v: float, sample_rate_hz: float) -> None:
        """Source-meter mode at ``voltage_v`` (0.8..5 V) and the DUT powered; 100 kS/s only."""
        if sample_rate_hz != SAMPLE_RATE_HZ:
            raise MeterError(
                f"the PPK2 streams at {SAMPLE_RATE_HZ:g} Hz only, not {sample_rate_hz:g} Hz: set "
                "the board's monitor sample_rate_hz to 100000 (this driver does not decimate)"
            )
        millivolts = round(voltage_v * 1000)
        if not REGULATOR_MV[0] <= millivolts <= REGULATOR_MV[1]:
            raise MeterError(
                f"the PPK2 supplies {REGULATOR_MV[0]}..{REGULATOR_MV[1]} mV, not {millivolts} mV: "
                "pick a supply voltage in that range for the DUT"
            )
        self.voltage_v = millivolts / 1000
        self._send(SOURCE_METER, "SetPowerMode source meter")
        self._send(bytes([REGULATOR_SET, millivolts >> 8, millivolts & 0xFF]),
                   f"RegulatorSet {millivolts} mV")
        self._send(DUT_POWER_ON, "DeviceRunningSet DUT power on")

    def start(self, folder: Path | None = None) -> None:
        """Start the stream and return once its first sample arrived (the PPK2 does not
        acknowledge commands); with a folder, the raw bytes (``ppk2-raw.bin``) and the current
        column (``ppk2-current.f64``) are written there as they arrive."""
        if self.calibration is None:
            self.identify()
        with self._lock:
            self._reset_acquisition(folder / "ppk2-current.f64" if folder else None)
            self._raw = RawLog(folder / "ppk2-raw.bin" if folder else None)
            self._acquiring = True
            self._health.data_arrived()
        self._send(AVERAGE_START, "AverageStart")
        self._streaming = True
        deadline = time.monotonic() + self.command_timeout_s
        while self.sample_count() == 0:
            self._raise_if_failed()
            if time.monotonic() > deadline:
                self._health.fail(
                    f"the PPK2 at {self.url} sent no sample within {self.command_timeout_s:g} s "
                    "of AverageStart: check it is a PPK2 with current firmware and that no "
                    "other program holds it"
                )
                raise MeterError(self._health.failure)
            time.sleep(0.002)

    def sample_count(self) -> int:
        with self._lock:
            return self._decoder.received

    def stop(self) -> Trace:
        """AverageStop, then collect what was still on its way; the DUT stays powered. A broken
        stream raises :class:`MeterError` after the files are closed, keeping the data."""
        with contextlib.suppress(MeterError):
            self._raise_if_failed()  # marks a stalled stream as failed
        try:
            self._stop_stream()
            if self._health.failure is None:
                self._settle()
        finally:
            with self._lock:
                self._acquiring = False
                self._samples.close()
                self._raw.close()
        self._raise_if_failed()
        self._on_command("<", f"({self._decoder.received} samples streamed)")
        return self.trace()

    def trace(self) -> Trace:
        """What has been measured so far (also after a failure, for the session folder)."""
        with self._lock:
            current = self._samples.array()
            events, drops = list(self._events), list(self._drops)
        return Trace(
            sample_rate_hz=self.sample_rate_hz, current_a=current,
            voltage_v=np.broadcast_to(np.float64(self.voltage_v), current.shape),
            events=events, drops=drops,
        )

    def close(self) -> None:
        """Stop a running stream and release the port; the DUT power is left as it is."""
        self._stop_stream()
        self._closing.set()
        self._reader.join(timeout=1)
        self._port.close()

    # -- commands -------------------------------------------------------------------------

    def _send(self, data: bytes, name: str) -> None:
        self._raise_if_failed()
        self._on_command(">", f"{name} ({data.hex(' ')})")
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            self._health.fail(f"lost the PPK2 at {self.url} ({exc}): was it unplugged?")
            raise MeterError(self._health.failure) from exc

    def _stop_stream(self) -> None:
        """AverageStop, best effort: also after a failure the PPK2 should stop sending."""
        if self._streaming:
            self._streaming = False
            self._on_command(">", "AverageStop (07)")
            with contextlib.suppress(serial.SerialException, OSError):
                self._port.write(AVERAGE_STOP)

    def _read_metadata(self) -> dict[str, str]:
        # A PPK2 left streaming by a program that crashed would bury the reply in samples.
        self._send(AVERAGE_STOP, "AverageStop")
        self._settle()
        with self._lock:
            self._text.clear()
        self._send(GET_METADATA, "GetMetadata")
        deadline = time.monotonic() + self.command_timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                text = bytes(self._text)
            if b"\nEND" in b"\n" + text:
                return self._check_metadata(text.decode("ascii", "replace"))
            self._raise_if_failed()
            time.sleep(0.005)
        with self._lock:
            got = bytes(self._text)
        detail = f"got {got[:60]!r}" if got else "got nothing"
        raise MeterError(
            f"no metadata block ending in END from {self.url} within "
            f"{self.command_timeout_s:g} s ({detail}): is this port a PPK2's (product 'PPK2', "
            "the DATA/POWER USB port) with its current firmware?"
        )

    def _check_metadata(self, text: str) -> dict[str, str]:
        meta = parse_metadata(text)
        for key, value in meta.items():
            self._on_command("<", f"{key}: {value}")
        if "R0" not in meta:
            raise MeterError(
                f"the metadata from {self.url} is not a PPK2's (no R0 key): check the port "
                "belongs to a Power Profiler Kit II"
            )
        return meta

    def _warnings(self, meta: dict[str, str]) -> tuple[str, ...]:
        """Nordic's app and ppk2-api use the constants whatever ``Calibrated`` says; so do we,
        and say so."""
        found = []
        calibrated = meta.get("Calibrated")
        if calibrated is None or _number(calibrated) in (None, 0):
            said = "no Calibrated key" if calibrated is None else f"'Calibrated: {calibrated}'"
            found.append(
                f"the PPK2 reports {said}: its constants may not be a factory calibration, so "
                "its currents may be off by more than the datasheet's accuracy. Calibrate it "
                "with nRF Connect Power Profiler or use a calibrated unit for results"
            )
        if self.spike_filter:
            found.append(
                "the spike filter is on: samples after each range switch are averages "
                "(Nordic's filter), not readings; energies are approximate"
            )
        for warning in found:
            self._on_command("#", warning)
        return tuple(found)

    # -- the stream -----------------------------------------------------------------------

    def _reset_acquisition(self, samples_path: Path | None) -> None:
        self._samples = SampleStore(samples_path)
        self._decoder = Ppk2Decoder(
            self.calibration or Ppk2Calibration(), self.voltage_v * 1000, self.edges,
            self.spike_filter,
        )
        self._events: list[Event] = []
        self._drops: list[Drop] = []
        self._acquiring = False

    def _raise_if_failed(self) -> None:
        with self._lock:
            received = self._decoder.received
        self._health.check(self._acquiring, received)

    def _settle(self) -> None:
        """Wait until the bytes sent before an AverageStop have arrived."""
        deadline = time.monotonic() + STOP_MAX_S
        while time.monotonic() < deadline and self._health.failure is None:
            if self._health.quiet_s() >= STOP_QUIET_S:
                return
            time.sleep(0.01)

    def _read_loop(self) -> None:
        while not self._closing.is_set():
            try:
                chunk = self._port.read(READ_SIZE)
            except (serial.SerialException, OSError) as exc:
                if not self._closing.is_set():
                    self._health.fail(
                        f"lost the PPK2 at {self.url} after {self._decoder.received} samples "
                        f"({exc}): was it unplugged? The samples received so far are kept"
                    )
                return
            if chunk:
                self._take(chunk)

    def _take(self, chunk: bytes) -> None:
        self._health.data_arrived()
        with self._lock:
            if not self._acquiring:
                self._text += chunk
                del self._text[:-65536]
                return
            self._raw.write(chunk)
            if self._health.failure is not None:
                return  # a broken stream: keep the bytes as evidence, decode no further
            block = self._decoder.feed(chunk)
            self._samples.extend_array(block.current_a)
            self._drops.extend(block.drops)
            self._events.extend(block.events)
            if block.garbled:
                self._on_command(
                    "#", f"skipped {block.garbled} garbled word(s) (range field above 4) near "
                    f"sample {self._decoder.position}; the counter places the samples after them"
                )
            if block.error:
                self._health.fail(block.error)


def _usb_serial(url: str) -> str:
    """The USB serial number of the port, when the OS lists it (not for ptys or sockets)."""
    for port in serial.tools.list_ports.comports():
        if port.device == url and port.serial_number:
            return port.serial_number
    return "unknown"
