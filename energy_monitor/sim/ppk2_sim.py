"""A simulated Nordic Power Profiler Kit II (PPK2) on a pty, speaking the real instrument's bytes.

It parses the raw command bytes, answers GetMetadata with a calibration block, keeps the
regulator, mode and DUT-power state, and while streaming sends one 4-byte word per 10 us of
virtual time, built the way the instrument builds it: it picks the lowest current range that
holds the sample's mean current (auto-ranging), inverts the calibration formula to the ADC code
(so the driver's conversion recovers the current to within one ADC step), counts samples mod 64,
and puts the DUT's timestamp pin on logic input D0 (low for any sample a low pulse overlaps, so
a pulse shorter than a sample is still seen). The currents are exact integrals of a
:class:`~energy_monitor.sim.load.LoadTimeline`, which gives tests their ground truth. Faults:
an unplugged cable, a stall, lost words (the counter runs on), a garbled word (one sample's
word arrives with range field 7, its counter intact), a lost pulse.

The metadata reply comes as the vendor programs expect it: after one USB frame, and complete
within a few milliseconds. ppk2-api reads whatever is waiting right after sending GetMetadata
and then every 100 ms, keeping only the first read that contains ``END``, so a reply that
dribbled in over more than one of its reads would lose its first keys (and the calibration
with them). With ``quirks`` the block comes in 64-byte USB packets written back to back, so
a reader may still see it in pieces, as a host can.

Reference: ``shared/reference/instruments.md`` §3. The 1 A ceiling is the PPK2's specified
maximum; how the firmware reports it is not documented, so a saturated top range stands for it.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.load import LoadTimeline, PinEdge
from energy_monitor.sim.pty_port import PtyPort

RATE_HZ = 100_000
PERIOD_S = 1.0 / RATE_HZ
ADC_MULT = 1.8 / 163840
ADC_MAX = 0x3FFF
MAX_CURRENT_A = 1.0
BATCH = 65_536  # samples per write, so commands are read between batches of a backlog
# Our assumptions for the reply's timing (USB full speed: 1 ms frames, 64-byte bulk packets);
# Nordic documents neither.
USB_FRAME_S = 0.001
USB_PACKET = 64
DEFAULTS = {  # the constants ppk2-api and Nordic's app fall back to
    "R": (1031.64, 101.65, 10.15, 0.94, 0.043),
    "GS": (1.0,) * 5,
    "GI": (1.0,) * 5,
    "O": (0.0,) * 5,
    "S": (0.0,) * 5,
    "I": (0.0,) * 5,
    "UG": (1.0,) * 5,
}
# Command byte -> total length in bytes (command included).
COMMAND_LENGTHS = {0x19: 1, 0x0D: 3, 0x11: 2, 0x0C: 2, 0x06: 1, 0x07: 1, 0x20: 1, 0x25: 6,
                   0x15: 1, 0x16: 1}


class Ppk2Simulator:
    """The instrument side of a pty pair; :meth:`start` returns the path a driver opens.

    ``metadata`` overrides lines of the GetMetadata reply (``{"GS3": "-nan"}``; ``None``
    removes a key); a constant that does not read as a usable number falls back to its default
    in the simulator's own arithmetic, as it does in the driver.
    """

    def __init__(
        self, timeline: LoadTimeline, faults: SimFaults | None = None, *,
        metadata: dict[str, str | None] | None = None, hw: str = "9173-tinypowersim",
    ) -> None:
        self.timeline = timeline
        self.faults = faults or SimFaults()
        self.hw = hw
        self.overrides = dict(metadata or {})
        self._calibration = self._constants()
        self.mode = 1  # 1 ampere meter, 2 source meter
        self.regulator_mv = 3700
        self.dut_power = False
        self.streaming = False
        self.commands: list[bytes] = []  # every command parsed, for tests
        self.acquisition_start_s = 0.0
        self._emitted = 0  # sample periods consumed since AverageStart (sent or lost)
        self._pin_low_from: float | None = None  # sample position of the open low pulse
        self._pulses = 0  # low pulses begun since AverageStart
        self._hiding_pulse = False
        self._carry = b""  # bytes of a word held back for the next write (quirks)
        self._more = False  # a backlog is due: do not sleep between batches
        self._inbuf = b""
        self._backed_up = False  # a write was given up: the host stopped reading
        self._port: PtyPort | None = None
        self._thread: threading.Thread | None = None

    # -- plumbing -------------------------------------------------------------------------

    def start(self) -> str:
        self._port = PtyPort()
        self._thread = threading.Thread(target=self._serve, name="ppk2-sim", daemon=True)
        self._thread.start()
        return self._port.path

    def close(self) -> None:
        if self._port is not None:
            self._port.closed.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._port is not None:
            self._port.close()

    def __enter__(self) -> Ppk2Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, data: bytes) -> None:
        """Send ``data``. While the host does not read, keep taking its commands (a USB device
        receives OUT packets while its IN data waits), and drop the rest of ``data`` once an
        AverageStop is among them: ppk2-api stops reading before it sends AverageStop."""
        while data:
            sent = self._port.write_some(data)
            if sent is None:
                return
            data = data[sent:]
            if data:
                incoming = self._port.read(0.005)
                if incoming is None:
                    return
                self._inbuf += incoming
                if self._stop_waiting():
                    self._backed_up = True
                    return

    def _stop_waiting(self) -> bool:
        """Whether the unparsed input holds a whole AverageStop command."""
        at = 0
        while at < len(self._inbuf):
            if self._inbuf[at] == 0x07:
                return True
            at += COMMAND_LENGTHS.get(self._inbuf[at], 1)
        return False

    def _serve(self) -> None:
        while (chunk := self._port.read(0 if self._more else 0.005)) is not None:
            self._inbuf += chunk
            self._parse()
            if self.streaming:
                self._more = self._stream()

    # -- commands -------------------------------------------------------------------------

    def _parse(self) -> None:
        while self._inbuf:
            length = COMMAND_LENGTHS.get(self._inbuf[0], 1)
            if len(self._inbuf) < length:
                return
            cmd, self._inbuf = self._inbuf[:length], self._inbuf[length:]
            self.commands.append(cmd)
            self._handle(cmd)

    def _handle(self, cmd: bytes) -> None:
        op = cmd[0]
        if op == 0x19:
            self._send_metadata()
        elif op == 0x0D:
            mv = (cmd[1] << 8) | cmd[2]
            if 800 <= mv <= 5000:
                self.regulator_mv = mv
        elif op == 0x11 and cmd[1] in (1, 2):
            self.mode = cmd[1]
        elif op == 0x0C:
            self.dut_power = bool(cmd[1])
            self.timeline.set_powered(self.dut_power)  # the source meter feeds the DUT
        elif op == 0x06:
            self._start_stream()
        elif op == 0x07 and self.streaming:
            if not self._backed_up:
                while self._stream():  # everything due up to now, then silence
                    pass
                self._flush_carry()
            self._carry = b""
            self._backed_up = False
            self.streaming = False
        elif op == 0x20:
            self.streaming = False
            self.dut_power = False
            self.timeline.set_powered(False)
            self.mode = 1
        # 0x25 user gains and 0x15/0x16 spike filter are accepted and change nothing here.

    def metadata_text(self) -> str:
        lines = {"Calibrated": "1"}
        for key, values in DEFAULTS.items():
            for rng, value in enumerate(values):
                lines[f"{key}{rng}"] = f"{value:.6f}"
        lines.update(VDD=str(self.regulator_mv), HW=self.hw, mode=str(self.mode), IA="56")
        lines.update(self.overrides)
        return "".join(f"{k}: {v}\n" for k, v in lines.items() if v is not None) + "END\n"

    def _send_metadata(self) -> None:
        blob = self.metadata_text().encode("ascii")
        time.sleep(USB_FRAME_S)  # the command leaves the host in the next frame at the earliest
        if self.faults.quirks:
            for at in range(0, len(blob), USB_PACKET):
                self._write(blob[at : at + USB_PACKET])
        else:
            self._write(blob)

    def _constants(self) -> dict[str, np.ndarray]:
        """The calibration the simulator's ADC inverts: what its metadata says, or defaults."""
        out = {}
        for key, defaults in DEFAULTS.items():
            values = []
            for rng, default in enumerate(defaults):
                text = self.overrides.get(f"{key}{rng}", str(default))
                try:
                    value = float(text) if text is not None else math.nan
                except ValueError:
                    value = math.nan
                usable = math.isfinite(value) and not (key == "R" and value == 0)
                values.append(value if usable else default)
            out[key] = np.asarray(values)
        return out

    # -- streaming ------------------------------------------------------------------------

    def _start_stream(self) -> None:
        with self.timeline.lock:
            self.acquisition_start_s = self.timeline.clock.now()
        self._emitted = 0
        self._pulses = 0
        self._pin_low_from = None
        self._hiding_pulse = False
        self.streaming = True

    def encode(self, current_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ADC code and range per sample: the lowest range whose ADC holds the current, by
        inverting ``I = UG*(x*(GS*x + GI) + S*VDD/1000 + I0)``, ``x = (4*ADC - O)*k/R``."""
        c = self._calibration
        vdd = self.regulator_mv / 1000
        x_top = (4 * ADC_MAX - c["O"]) * ADC_MULT / c["R"]
        full_scale = c["UG"] * (x_top * (c["GS"] * x_top + c["GI"]) + c["S"] * vdd + c["I"])
        rng = np.searchsorted(np.maximum.accumulate(full_scale), current_a)
        over = (rng > 4) | (current_a > MAX_CURRENT_A)
        rng = np.minimum(rng, 4)
        k = {key: values[rng] for key, values in c.items()}
        target = current_a / k["UG"] - k["S"] * vdd - k["I"]
        root = np.sqrt(np.maximum(k["GI"] ** 2 + 4 * k["GS"] * target, 0.0))
        x = 2 * target / (k["GI"] + root)  # the stable root of GS*x^2 + GI*x - target = 0
        code = np.clip(np.rint((x * k["R"] / ADC_MULT + k["O"]) / 4), 0, ADC_MAX)
        code[over] = ADC_MAX
        rng[over] = 4
        return code.astype(np.uint32), rng.astype(np.uint32)

    def _stream(self) -> bool:
        """Send the next batch of whole sample periods that virtual time has passed; True
        while more are due."""
        f = self.faults
        with self.timeline.lock:
            now = self.timeline.clock.now()
            due = int((now - self.acquisition_start_s) * RATE_HZ)
            if f.stall_after is not None:
                due = min(due, f.stall_after)
            count = min(due - self._emitted, BATCH)
            if count > 0:
                t0 = self.acquisition_start_s + self._emitted * PERIOD_S
                charges = self.timeline.charge_per_sample(t0, PERIOD_S, count)
                edges = self.timeline.edges_between(t0, t0 + count * PERIOD_S)
        if count <= 0:
            self._flush_carry()
            return False
        k0 = self._emitted
        k = k0 + np.arange(count, dtype=np.int64)
        current = charges * RATE_HZ if self.dut_power else np.zeros(count)
        code, rng = self.encode(current)
        level = self._pin_levels(edges, k0, count)
        words = code | (rng << 14) | ((k % 64).astype(np.uint32) << 18) | (level << 24)
        keep = np.ones(count, dtype=bool)
        if f.drop_at is not None:
            keep &= ~((k >= f.drop_at) & (k < f.drop_at + f.drop_count))
        if f.unplug_after is not None:
            keep &= k < f.unplug_after
        if f.garble_at is not None and k0 <= f.garble_at < k0 + count:
            words[f.garble_at - k0] |= np.uint32(7 << 14)  # range field 7, counter intact
        words = words[keep]
        self._emitted += count
        data = words.astype("<u4").tobytes()
        if f.unplug_after is not None and k0 + count >= f.unplug_after:
            self._write(self._carry + data)
            self._port.unplug()
            return False
        if f.quirks:  # the host sees the stream cut mid-word: hold two bytes back
            data, self._carry = self._carry + data[:-2], data[-2:]
        self._write(data)
        return due - self._emitted > 0

    def _flush_carry(self) -> None:
        if self._carry:
            self._write(self._carry)
            self._carry = b""

    def _pin_levels(self, edges: list[PinEdge], k0: int, count: int) -> np.ndarray:
        """D0 per sample: 0 where a low period of the timestamp pin overlaps the sample."""
        marks = np.zeros(count + 1, dtype=np.int64)

        def mark_low(start: float, end: float) -> None:
            a = max(math.floor(start), 0)
            b = min(max(math.ceil(end), math.floor(start) + 1), count)
            if b > a:
                marks[a] += 1
                marks[b] -= 1

        for edge in edges:
            pos = (edge.time_s - self.acquisition_start_s) * RATE_HZ - k0
            if edge.polarity == "fall" and self._pin_low_from is None and not self._hiding_pulse:
                self._hiding_pulse = self._pulses == self.faults.lose_event
                self._pulses += 1
                if not self._hiding_pulse:
                    self._pin_low_from = pos
            elif edge.polarity == "rise":
                if self._pin_low_from is not None:
                    mark_low(self._pin_low_from, pos)
                self._pin_low_from = None
                self._hiding_pulse = False
        if self._pin_low_from is not None:  # still low at the batch's end
            mark_low(self._pin_low_from, count)
            self._pin_low_from -= count
        low = np.cumsum(marks[:count]) > 0
        return (~low).astype(np.uint32)
