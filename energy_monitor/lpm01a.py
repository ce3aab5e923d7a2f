"""Driver for the ST X-NUCLEO-LPM01A (PowerShield) energy monitor, ASCII and binary streams.

At up to 5 kHz the board streams ``ascii_dec``: one sample per line, a ``TimeStamp:`` line every
1000 samples and an ``event NN ris`` line for each edge on its D7 timestamp input (the
MLCommons runner sets ``eventsrc d7 fal`` and parses ``event \\d+ ris``, so the word does not
tell the polarity: the driver records the edge it configured),
interleaved with ``PowerShield > `` command replies. ASCII cannot go faster without a time limit
on the acquisition, so above 5 kHz (up to 100 kHz) the driver switches to ``bin_hexa``: two
bytes per current sample, with metadata frames (timestamps, errors, end, overcurrent) between
them, decoded a block at a time with numpy. In binary the D7 edges are taken to arrive as
``F2`` info frames carrying ``event NN ris`` (UNVERIFIED: the manual does not say; the
simulator does the same).

One reader thread owns the port: it appends every byte to the raw file (flushed each second),
sorts the stream into samples, edges and replies, checks each timestamp against the samples
received to detect drops (counting from the first ``TimeStamp:`` after ``start``), and
survives the ASCII stream's known quirks (NUL bytes, two samples run together on one line). As
the MLCommons runner does, an unknown ASCII line is skipped (and noted in the transcript); a
sample line damaged in transit is one lost sample at that exact index (a NaN and a
:class:`Drop`), so only a window that contains it is refused. Unreadable binary marks the
stream corrupt: the run fails with the sample number, and the raw file keeps the evidence.

Reference: ``shared/reference/instruments.md`` §1, ``mlperf-tiny-protocol.md`` §10; the limits
and choices per format are in ``docs/monitors/lpm01a.md``.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import serial

from energy_monitor.lpm01a_format import (
    ASCII_UNLIMITED_MAX_HZ,
    F_END,
    F_ERROR,
    F_INFO,
    F_OVERCURRENT,
    F_TIMESTAMP,
    FREQUENCIES_HZ,
    OVERCURRENT_A,
    RANGE_MAX_A,
    SAMPLE_LINES_RE,
    SAMPLE_RE,
    BinaryDecoder,
    Frame,
    Garbled,
    Item,
    expected_samples,
    format_frequency,
    parse_sample_lines,
)
from energy_monitor.meter import MeterError, MeterIdentity
from energy_monitor.store import SampleStore
from energy_monitor.stream import EdgeWaiting, RawLog, StreamHealth
from energy_monitor.trace import Drop, Event, Trace

BAUD = 3_686_400
PROMPT = "PowerShield >"
MIN_FIRMWARE = (1, 0, 6)
SAMPLES_LINE_RE = re.compile(r"(?:\d{4}[+-]\d{2})+")
# A line of one sample's length, mostly its characters, that is not a sample: one damaged in
# transit (a dropped or flipped character). Anything else unknown is skipped, not counted.
GARBLED_SAMPLE_RE = re.compile(r"(?=(?:.*[\d+-]){5})[^\s]{5,8}")
TIMESTAMP_RE = re.compile(r"timestamp:\s*(\d+)s\s+(\d+)ms", re.IGNORECASE)
EVENT_RE = re.compile(r"event\s+(\d+)\s+(ris|fal)", re.IGNORECASE)
EVENT_POLARITY = "fall"  # configure() sets `eventsrc d7 fal`: every event is that edge
INFO_LINES = ("end", "pwr on", "pwr off", "summary begin", "summary end")
FORMATS = {"ascii": "ascii_dec", "binary": "bin_hexa"}
OUTPUTS = ("energy", "current")


class Lpm01a(EdgeWaiting):
    """An LPM01A reached through any pyserial URL (``/dev/ttyACM0``, a pty, ``socket://``)."""

    kind = "lpm01a"

    def __init__(
        self, url: str, *, measured_as: str = "hardware", output: str = "auto",
        format: str = "auto", command_timeout_s: float = 3.0, stall_timeout_s: float = 3.0,
        on_command: Callable[[str, str], None] | None = None,
    ) -> None:
        """``format`` is the stream: ``ascii`` (``ascii_dec``, at most 5 kHz), ``binary``
        (``bin_hexa``, at most 100 kHz, current only) or ``auto`` (binary above 5 kHz).
        ``output`` is what each sample holds: ``energy`` (J per sample period, the MLPerf Tiny
        choice; ASCII only), ``current`` (A) or ``auto`` (energy in ASCII, current in binary).
        ``on_command(direction, text)`` sees every command and reply, for the transcript."""
        if output not in (*OUTPUTS, "auto"):
            raise ValueError(f"output must be 'energy', 'current' or 'auto', not {output!r}")
        if format not in (*FORMATS, "auto"):
            raise ValueError(f"format must be 'ascii', 'binary' or 'auto', not {format!r}")
        if (format, output) == ("binary", "energy"):
            raise ValueError(
                "the LPM01A's binary format carries current only: use output='current' (the "
                "trace is the same energy) or format='ascii' (at most 5 kHz)"
            )
        self.url = url
        self.measured_as = measured_as
        self._output_choice = output
        self._format_choice = format
        self.output, self.format = self._resolve(100.0)
        self._on_command = on_command or (lambda direction, text: None)
        self.command_timeout_s = command_timeout_s
        self._health = StreamHealth(
            "the LPM01A", stall_timeout_s, "Check the USB cable and the board's power"
        )
        try:
            self._port = serial.serial_for_url(url, baudrate=BAUD, timeout=0.05)
        except (serial.SerialException, OSError) as exc:
            raise MeterError(
                f"cannot open the LPM01A at {url}: {exc}. Check it is plugged in and that no "
                "other program (STM32CubeMonitor-Power, another runner) holds the port"
            ) from exc
        self.sample_rate_hz = 100.0
        self.voltage_v = 3.3
        self._replies: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._reset_acquisition(None)
        self._raw = RawLog(None)
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="lpm01a-reader", daemon=True)
        self._reader.start()

    # -- Meter protocol -------------------------------------------------------------------

    def identify(self) -> MeterIdentity:
        """Serial and firmware; firmware older than 1.0.6 is refused (its ``pwr off`` fails,
        ``eembc/energyrunner#8``, and the MLPerf Tiny runners require 1.0.6)."""
        serial_no = self._command("powershield").removeprefix("powershield").strip()
        version = self._command("version").removeprefix("version").strip(" :")
        m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)\S*", version)
        if not m:
            raise MeterError(
                f"the LPM01A answered 'version' with {version!r}, not a firmware version: check "
                f"that {self.url} is an X-NUCLEO-LPM01A (PowerShield) and not another device"
            )
        if tuple(int(g) for g in m.groups()) < MIN_FIRMWARE:
            raise MeterError(
                f"LPM01A firmware {version} is older than "
                f"{'.'.join(map(str, MIN_FIRMWARE))}, which the benchmark needs ('pwr off' "
                "fails on older firmware): update it with STM32CubeProgrammer from ST's "
                "X-NUCLEO-LPM01A firmware package"
            )
        return MeterIdentity("lpm01a", "X-NUCLEO-LPM01A", serial_no, version, self.measured_as)

    def configure(self, *, voltage_v: float, sample_rate_hz: float) -> None:
        """The MLCommons runner's setup: host control, infinite software-triggered acquisition,
        falling edges on D7 as events, the output and format for this rate (energy per sample
        in ASCII up to 5 kHz, current in binary above), then power the target."""
        output, fmt = self._resolve(float(sample_rate_hz))
        self.output, self.format = output, fmt
        self.sample_rate_hz = float(sample_rate_hz)
        self.voltage_v = float(voltage_v)
        for cmd in (
            "htc", "pwr off", "acqtime 0", "trigsrc sw", "trigdelay 0", "eventsrc d7 fal",
            f"output {output}", f"format {FORMATS[fmt]}",
            f"freq {format_frequency(sample_rate_hz)}", f"volt {round(voltage_v * 1000)}m",
            "pwr on",
        ):
            self._command(cmd)

    def _resolve(self, rate_hz: float) -> tuple[str, str]:
        """(output, format) for a rate; refuses what the instrument would refuse, before any
        command changes its state."""
        if rate_hz not in FREQUENCIES_HZ:
            raise MeterError(
                f"the LPM01A cannot sample at {rate_hz:g} Hz: pick one of "
                f"{', '.join(f'{format_frequency(f)}' for f in FREQUENCIES_HZ)} (Hz)"
            )
        fmt = self._format_choice
        if fmt == "auto":
            fmt = "binary" if rate_hz > ASCII_UNLIMITED_MAX_HZ else "ascii"
        output = self._output_choice
        if output == "auto":
            output = "current" if fmt == "binary" else "energy"
        if fmt == "ascii" and rate_hz > ASCII_UNLIMITED_MAX_HZ:
            raise MeterError(
                f"the LPM01A streams ASCII at most at {ASCII_UNLIMITED_MAX_HZ} Hz without a time "
                f"limit, not {rate_hz:g} Hz: use format='binary' (current output, up to 100 kHz) "
                "or a lower rate"
            )
        if fmt == "binary" and output == "energy":
            raise MeterError(
                f"energy output at {rate_hz:g} Hz needs the binary format, which carries current "
                f"only: use output='current' (the trace is the same energy) or measure at "
                f"{ASCII_UNLIMITED_MAX_HZ} Hz or less"
            )
        return output, fmt

    def start(self, folder: Path | None = None) -> None:
        """Start acquiring; with a folder, the raw stream (``lpm01a-raw.txt`` in ASCII,
        ``lpm01a-raw.bin`` in binary) and the samples (``lpm01a-samples.f64``) are written
        there as they arrive."""
        raw_name = "lpm01a-raw.bin" if self.format == "binary" else "lpm01a-raw.txt"
        with self._lock:
            self._reset_acquisition(folder / "lpm01a-samples.f64" if folder else None)
            self._raw = RawLog(folder / raw_name if folder else None)
            self._acquiring = True
            self._health.data_arrived()
        self._command("start")

    def sample_count(self) -> int:
        with self._lock:
            return self._count

    def stop(self) -> Trace:
        """Stop and return the trace. A corrupt or broken stream raises :class:`MeterError`
        after the raw file is closed, so the data measured so far stays on disk."""
        try:
            if self._health.failure is None:
                self._stopping = True
                self._command("stop", expect="Acquisition completed")
        finally:
            with self._lock:
                self._acquiring = False
                self._samples.close()
                self._raw.close()
        self._raise_if_failed()
        return self.trace()

    def trace(self) -> Trace:
        """What has been measured so far (also after a failure, for the session folder)."""
        with self._lock:
            samples = self._samples.array()
            common = {"events": list(self._events), "drops": list(self._drops)}
        if self.output == "energy":
            return Trace(sample_rate_hz=self.sample_rate_hz, energy_j=samples, **common)
        # The LPM01A regulates its output: one voltage for every sample, held as a view.
        voltage = np.broadcast_to(np.float64(self.voltage_v), samples.shape)
        return Trace(
            sample_rate_hz=self.sample_rate_hz, current_a=samples, voltage_v=voltage, **common
        )

    def close(self) -> None:
        if not self._closing.is_set() and self._health.failure is None:
            with contextlib.suppress(MeterError):  # closing anyway; the port may be gone
                self._command("hrc")
        self._closing.set()
        self._reader.join(timeout=1)
        self._port.close()

    # -- commands -------------------------------------------------------------------------

    def _command(self, cmd: str, expect: str | None = None) -> str:
        """Send one command and return the text after ``ack <cmd>``; errors raise."""
        self._raise_if_failed()
        while not self._replies.empty():
            self._replies.get_nowait()
        self._on_command(">", cmd)
        self._port.write(f"{cmd}\r\n".encode("ascii"))
        deadline = time.monotonic() + self.command_timeout_s
        while time.monotonic() < deadline:
            try:
                reply = self._replies.get(timeout=0.05)
            except queue.Empty:
                self._raise_if_failed()
                continue
            if expect and expect in reply:
                return reply
            if reply.startswith(f"ack {cmd}"):
                if not expect:
                    return reply.removeprefix(f"ack {cmd}").strip()
                continue
            if reply.startswith(f"error {cmd}"):
                detail = self._error_detail()
                raise MeterError(f"the LPM01A refused '{cmd}': {detail}")
        raise MeterError(
            f"the LPM01A did not answer '{cmd}' within {self.command_timeout_s:g} s: check the "
            f"port ({self.url}) is the PowerShield's and that its firmware is 1.0.6 or later"
        )

    def _error_detail(self) -> str:
        try:
            detail = self._replies.get(timeout=0.5)
        except queue.Empty:
            return "no detail given"
        return detail.removeprefix("Error detail:").strip()

    # -- the stream -----------------------------------------------------------------------

    def _reset_acquisition(self, samples_path: Path | None = None) -> None:
        self._samples = SampleStore(samples_path)
        self._events: list[Event] = []
        self._drops: list[Drop] = []
        self._count = 0  # samples received (the trace also holds NaN for lost ones)
        self._checked_up_to = 0  # samples confirmed by the last TimeStamp
        self._ts_origin: tuple[float, int] | None = None  # (seconds, samples) at the first
        self._acquiring = False
        self._stopping = False
        self._decoder: BinaryDecoder | None = None  # set while the binary stream runs

    def _raise_if_failed(self) -> None:
        self._health.check(self._acquiring, self._count)

    def _read_loop(self) -> None:
        pending = b""
        while not self._closing.is_set():
            try:
                chunk = self._port.read(1)  # waits at most the port's timeout
                if chunk:
                    chunk += self._port.read(self._port.in_waiting)
            except (serial.SerialException, OSError) as exc:
                if not self._closing.is_set():
                    self._health.fail(
                        f"lost the LPM01A at {self.url} after {self._count} samples ({exc}): "
                        "was it unplugged? The samples received so far are kept"
                    )
                return
            if not chunk:
                continue
            self._health.data_arrived()
            with self._lock:
                self._raw.write(chunk)
            pending = self._consume(pending + chunk)

    def _consume(self, data: bytes) -> bytes:
        """Handle every whole line or binary item in ``data``; return the unfinished rest.

        The binary stream runs from the ``ack start`` line to the end-of-acquisition frame;
        replies around it are text lines."""
        while data:
            if self._decoder is not None:
                self._handle_items(self._decoder.feed(data))
                if not self._decoder.ended:
                    return b""
                data, self._decoder = self._decoder.remainder, None
                continue
            end = data.rfind(b"\n") + 1
            binary = self._consume_lines(data[:end])
            if binary is None:
                return data[end:]
            data = binary + data[end:]
        return b""

    def _consume_lines(self, text: bytes) -> bytes | None:
        """Handle whole lines: runs of plain sample lines in one go (the bulk of an ASCII
        stream), anything else line by line. None, or what follows the line that started a
        binary stream."""
        done = 0
        for run in SAMPLE_LINES_RE.finditer(text):
            binary = self._handle_lines(text[done : run.start()])
            if binary is not None:
                return binary + text[run.start() :]
            self._handle_samples(parse_sample_lines(run.group()))
            done = run.end()
        return self._handle_lines(text[done:])

    def _handle_lines(self, text: bytes) -> bytes | None:
        *lines, rest = text.split(b"\n")
        for i, raw_line in enumerate(lines):
            self._handle_line(raw_line.replace(b"\x00", b"").decode("ascii", "replace").strip())
            if self._decoder is not None:  # binary from the byte after this line
                return b"\n".join([*lines[i + 1 :], rest])
        return None

    def _handle_samples(self, values: np.ndarray) -> None:
        with self._lock:
            if self._acquiring:  # stray output outside an acquisition carries no data
                self._samples.extend_array(values)
                self._count += len(values)

    def _handle_line(self, line: str) -> None:
        if not line:
            return
        if line.startswith(PROMPT) or line.startswith("Error detail:"):
            self._on_command("<", line)
            reply = line.removeprefix(PROMPT).strip()
            if reply.startswith("ack start") and self.format == "binary":
                self._decoder = BinaryDecoder()
            self._replies.put(reply)
            return
        with self._lock:
            if not self._acquiring:
                return  # stray output outside an acquisition carries no data
            if SAMPLES_LINE_RE.fullmatch(line):
                values = [float(f"{m}e{e}") for m, e in SAMPLE_RE.findall(line)]
                self._samples.extend(values)
                self._count += len(values)
            elif EVENT_RE.fullmatch(line):
                index = len(self._samples)
                self._events.append(
                    Event(
                        index=index,
                        time_s=index / self.sample_rate_hz,
                        polarity=EVENT_POLARITY,
                    )
                )
            elif m := TIMESTAMP_RE.match(line):
                self._timestamp(int(m.group(1)) + int(m.group(2)) / 1000)
            elif line.lower() in INFO_LINES or line.lower().startswith(("pwr ", "summary")):
                return
            elif GARBLED_SAMPLE_RE.fullmatch(line):
                # A sample line with damaged characters: that sample is lost, here exactly.
                index = len(self._samples)
                self._samples.extend([float("nan")])
                self._drops.append(Drop(index=index + 1, missing=1, earliest=index))
                self._on_command("<", f"[garbled sample {index}, counted as lost] {line!r}")
            else:
                # As the MLCommons runner does (power_manager_lpm.py read_loop queues any other
                # line as a message): skip it, but say so in the transcript.
                self._on_command("<", f"[unknown line after sample {self._count}, skipped] "
                                      f"{line[:80]!r}")

    def _handle_items(self, items: list[Item]) -> None:
        """Samples, frames and garbage from the binary stream, in stream order."""
        with self._lock:
            if not self._acquiring:
                return  # after a failed stop: the files are closed
            for item in items:
                if isinstance(item, np.ndarray):
                    self._samples.extend_array(item)
                    self._count += len(item)
                elif isinstance(item, Garbled):
                    self._health.fail(
                        f"unreadable bytes from the LPM01A after sample {self._count}: "
                        f"{item.data.hex(' ')}. The stream is corrupt (USB noise, or another "
                        "program on the port); the run is kept but cannot be scored"
                    )
                else:
                    self._handle_frame(item)

    def _handle_frame(self, frame: Frame) -> None:
        if frame.kind == F_TIMESTAMP:
            self._check_drops(*expected_samples(frame.timestamp_ms, self.sample_rate_hz))
        elif frame.kind == F_INFO and EVENT_RE.fullmatch(frame.text):
            index = len(self._samples)
            self._events.append(
                Event(
                    index=index,
                    time_s=index / self.sample_rate_hz,
                    polarity=EVENT_POLARITY,
                )
            )
        elif frame.kind == F_ERROR:
            self._health.fail(
                f"the LPM01A reported an error after sample {self._count}: {frame.text!r}. "
                "The samples received so far are kept; check the transcript for the command "
                "it refers to"
            )
        elif frame.kind == F_OVERCURRENT:
            self._health.fail(
                f"current above the LPM01A's range after sample {self._count}: it measures up "
                f"to {RANGE_MAX_A * 1e3:g} mA and its protection trips at "
                f"{OVERCURRENT_A * 1e3:g} mA. Check the DUT's supply wiring (only CN14 VOUT may "
                "feed it) or use a monitor with a larger range; the samples so far are kept"
            )
        elif frame.kind == F_END and not self._stopping:
            self._health.fail(
                f"the LPM01A ended the acquisition by itself after {self._count} samples: "
                "check its acquisition time (acqtime 0) and that no other program sent stop; "
                "the samples received so far are kept"
            )
        else:
            self._on_command("<", f"[frame {frame.kind:02X}] {frame.describe()}")

    def _timestamp(self, seconds: float) -> None:
        """A ``TimeStamp:`` line: seconds of acquisition, counted from the first one after
        ``start`` (a board whose counter does not restart at ``start`` would otherwise look
        like it lost every sample since its own zero)."""
        if self._ts_origin is None:
            self._ts_origin = (seconds, len(self._samples))
            self._checked_up_to = len(self._samples)
            return
        first_s, first_count = self._ts_origin
        expected = first_count + round((seconds - first_s) * self.sample_rate_hz)
        self._check_drops(expected, max(1, round(self.sample_rate_hz / 1000)))

    def _check_drops(self, expected: int, tolerance: int) -> None:
        """A timestamp says how many samples the meter has sent (``expected``, to within
        ``tolerance``); fewer received = a drop.

        Where in the last block the samples went missing is unknown, so the drop is recorded
        as possibly anywhere since the previous timestamp, and the gap is padded with NaN to
        keep later indices on the meter's clock.
        """
        missing = expected - len(self._samples)
        if missing >= tolerance:
            earliest = self._checked_up_to
            self._samples.extend([float("nan")] * missing)
            self._drops.append(Drop(index=len(self._samples), missing=missing, earliest=earliest))
        self._checked_up_to = len(self._samples)
