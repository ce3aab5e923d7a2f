"""Driver for the Nordic Power Profiler Kit II (PPK2) in source-meter mode.

The PPK2 takes raw command bytes (no terminator, no acknowledgement), answers GetMetadata with a
``key: value`` text block ending in ``END`` (its calibration constants), and while measuring
streams one 4-byte little-endian word per 10 us: a 14-bit ADC code, the 3-bit current range that
code was taken in, a 6-bit sample counter and the 8 logic inputs D0..D7. One reader thread owns
the port: it appends every byte to the raw file, decodes whole words with numpy (a word split
across two reads waits for its other half), converts them to amperes with the unit's own
calibration, turns gaps in the counter into drops (padded with NaN so indices stay on the
meter's clock) and level changes on D0 into timestamp edges. Anything it cannot read (a range
field above 4, a saturated top range) marks the stream broken with the sample number; what came
before is kept, and the raw file keeps the evidence.

Reference: ``shared/reference/instruments.md`` §3.
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
        zero keeps its default, as Nordic's app and ppk2-api do."""
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
        """Current in A for ADC codes taken in ranges ``rng`` (both integer arrays, range <= 4)."""

        def col(name: str) -> np.ndarray:
            return np.asarray(getattr(self, name), dtype=np.float64)[rng]

        x = (adc.astype(np.float64) * 4 - col("o")) * ADC_MULT / col("r")
        return col("ug") * (x * (col("gs") * x + col("gi")) + col("s") * vdd_mv / 1000 + col("i"))


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
    for lost samples, ``received`` counts the words decoded, ``error`` ends the stream."""

    current_a: np.ndarray
    received: int
    drops: list[Drop] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    error: str | None = None


class Ppk2Decoder:
    """Bytes -> samples, keeping state across reads: a split word's first bytes, the last
    counter value (for gaps) and the last D0 level (for edges). Also decodes a saved
    ``ppk2-raw.bin`` offline."""

    def __init__(self, calibration: Ppk2Calibration, vdd_mv: float, edges: str) -> None:
        self.calibration = calibration
        self.vdd_mv = vdd_mv
        self.edges = edges
        self.rest = b""
        self.position = 0  # trace index of the next sample (received + NaN pads)
        self.received = 0
        self.last_counter: int | None = None
        self.last_level: int | None = None

    def feed(self, data: bytes) -> DecodedBlock:
        data = self.rest + data
        whole = len(data) // 4 * 4
        self.rest = data[whole:]
        words = np.frombuffer(data, dtype="<u4", count=whole // 4)
        adc = (words & ADC_MAX).astype(np.int64)
        rng = ((words >> 14) & 0x7).astype(np.int64)
        error = None
        bad = np.flatnonzero((rng > TOP_RANGE) | ((rng == TOP_RANGE) & (adc == ADC_MAX)))
        if len(bad):
            j = int(bad[0])
            at = self.received + j
            if rng[j] > TOP_RANGE:
                error = (
                    f"garbled PPK2 stream at sample {at}: word 0x{int(words[j]):08x} has current "
                    f"range {int(rng[j])} (0..4 exist). Bytes were lost or another program reads "
                    "the port; the samples before it are kept, the raw file has the rest"
                )
            else:
                error = (
                    f"current above the PPK2's range at sample {at}: the top range's ADC is "
                    "saturated (0x3FFF). The PPK2 measures up to 1 A: check the DUT for a short "
                    "or use a meter with a higher range; the samples before it are kept"
                )
            words, adc, rng = words[:j], adc[:j], rng[:j]
        n = len(words)
        block = DecodedBlock(np.empty(0), n, error=error)
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
    ``rise`` or ``both``.
    """

    kind = "ppk2"

    def __init__(
        self, url: str, *, measured_as: str = "hardware", edges: str = "fall",
        command_timeout_s: float = 3.0, stall_timeout_s: float = 3.0,
        on_command: Callable[[str, str], None] | None = None,
    ) -> None:
        if edges not in EDGE_CHOICES:
            raise ValueError(f"edges must be one of {', '.join(EDGE_CHOICES)}, not {edges!r}")
        self.url = url
        self.measured_as = measured_as
        self.edges = edges
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
        whose block is not a calibrated PPK2's."""
        self.metadata = self._read_metadata()
        self.calibration = Ppk2Calibration.from_metadata(self.metadata)
        return MeterIdentity(
            "ppk2", "Power Profiler Kit II", _usb_serial(self.url),
            f"HW {self.metadata.get('HW', 'unknown')}", self.measured_as,
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
        if "Calibrated" not in meta or "R0" not in meta:
            raise MeterError(
                f"the metadata from {self.url} is not a PPK2's (no Calibrated or R0 key): "
                "check the port belongs to a Power Profiler Kit II"
            )
        if _number(meta["Calibrated"]) in (None, 0):
            raise MeterError(
                f"the PPK2 at {self.url} reports 'Calibrated: {meta['Calibrated']}': it holds no "
                "factory calibration, so its currents cannot be trusted. Update its firmware "
                "with nRF Connect Power Profiler or use a calibrated unit"
            )
        return meta

    # -- the stream -----------------------------------------------------------------------

    def _reset_acquisition(self, samples_path: Path | None) -> None:
        self._samples = SampleStore(samples_path)
        self._decoder = Ppk2Decoder(
            self.calibration or Ppk2Calibration(), self.voltage_v * 1000, self.edges
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
            if block.error:
                self._health.fail(block.error)


def _usb_serial(url: str) -> str:
    """The USB serial number of the port, when the OS lists it (not for ptys or sockets)."""
    for port in serial.tools.list_ports.comports():
        if port.device == url and port.serial_number:
            return port.serial_number
    return "unknown"
