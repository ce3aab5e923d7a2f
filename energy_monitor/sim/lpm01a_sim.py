"""A simulated ST X-NUCLEO-LPM01A (PowerShield) on a pty, speaking the real instrument's bytes.

It answers the command set the MLPerf Tiny benchmark uses with the ``PowerShield > `` prefix
(acks, errors with ``Error detail:``), validates format x rate x output as the instrument does,
and streams either ``ascii_dec`` (samples, ``TimeStamp:`` lines every 1000 samples, ``event NN
ris`` lines for timestamp-pin edges) or ``bin_hexa`` up to 100 kHz (current words built a block
at a time with numpy, with ``F3`` timestamp frames every 1000 samples, ``F2`` info frames for
the edges, ``F5`` on overcurrent and ``F4`` at the end). What it streams is the exact integral of
a :class:`~energy_monitor.sim.load.LoadTimeline` over each sample period, so tests know the
ground truth. It reproduces the ASCII stream's quirks (a NUL after a TimeStamp, two samples run
together on one line) and can inject faults in both formats: an unplugged cable, a stall,
garbage (a garbled line, or an invalid frame), lost samples, a lost edge.

Reference: ``shared/reference/instruments.md`` §1. Behaviour the manual leaves open is marked
UNVERIFIED there and in ``docs/monitors/lpm01a.md``; the choices made here are the ones the
MLCommons runner expects, and the same ones the driver makes.
"""

from __future__ import annotations

import threading

import numpy as np

from energy_monitor.lpm01a_format import (
    ASCII_LIMITED_MAX_S,
    ASCII_UNLIMITED_MAX_HZ,
    F_END,
    F_ERROR,
    F_INFO,
    F_OVERCURRENT,
    F_POWER,
    F_VOLTAGE,
    FREQUENCIES_HZ,
    OVERCURRENT_A,
    TIMESTAMP_EVERY,
    encode_currents,
    format_frequency,
    format_sample,
    frame,
    parse_number,
    text_frame,
    timestamp_frame,
)
from energy_monitor.sim.faults import SimFaults
from energy_monitor.sim.load import LoadTimeline
from energy_monitor.sim.pty_port import PtyPort

PROMPT = "PowerShield > "
GARBLED_FRAME = b"\xf0\xfa\x47"  # no such frame type, and an odd length that shifts the words
CONFIG_COMMANDS = {"volt", "freq", "acqtime", "trigsrc", "trigdelay", "eventsrc", "output",
                   "format", "pwr", "lcd", "acqmode", "funcmode", "currthres", "pwrend"}
FIRMWARE_VERSION = "1.0.6"


class Lpm01aSimulator:
    """The instrument side of a pty pair; :meth:`start` returns the path a driver opens."""

    def __init__(
        self, timeline: LoadTimeline, *, serial: str = "tinypowersim-LPM01A-0001",
        faults: SimFaults | None = None, firmware: str = FIRMWARE_VERSION,
    ) -> None:
        self.timeline = timeline
        self.serial = serial
        self.firmware = firmware
        self.faults = faults or SimFaults()
        self.voltage_v = 3.3
        self.freq_hz = 100.0
        self.acqtime_s = 10.0
        self.output = "current"
        self.format = "ascii_dec"
        self.event_polarity: str | None = None
        # `pwr` defaults to auto: "On first run, power-on when acquisition start" (the
        # firmware's help, quoted in the MLCommons runner's power_manager_lpm.py), so the
        # target is unpowered until `pwr on` or `start`. The output feeds the timeline's board.
        self.pwr_mode = "auto"
        # What the TimeStamp counter reads at `start` (0: it restarts; whether the real board's
        # does is UNVERIFIED, so the driver counts from the first TimeStamp it sees).
        self.timestamp_base_ms = 0
        self.powered = False
        self.host_control = False
        self._acquiring = False
        self._acq_start_s = 0.0
        self._emitted = 0  # sample periods consumed since start (sent or lost)
        self._event_counter = 0
        self._announce = False  # binary: send the voltage and power frames first
        self._port: PtyPort | None = None
        self._thread: threading.Thread | None = None
        self._inbuf = b""

    # -- plumbing -------------------------------------------------------------------------

    def start(self) -> str:
        self._port = PtyPort()
        self._thread = threading.Thread(target=self._serve, name="lpm01a-sim", daemon=True)
        self._thread.start()
        return self._port.path

    def close(self) -> None:
        if self._port is not None:
            self._port.closed.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._port is not None:
            self._port.close()

    def __enter__(self) -> Lpm01aSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, text: str) -> None:
        self._write_bytes(text.encode("ascii"))

    def _write_bytes(self, data: bytes) -> None:
        self._port.write(data)

    def _reply(self, text: str) -> None:
        self._write(f"{PROMPT}{text}\r\n")

    def _error(self, cmd: str, detail: str) -> None:
        if self._acquiring and self.format == "bin_hexa":
            # Text would corrupt the binary stream: the error travels in an F1 frame
            # (our reading of the manual, UNVERIFIED).
            self._write_bytes(text_frame(F_ERROR, f"error {cmd}: {detail}"))
            return
        self._write(f"{PROMPT}error {cmd}\r\nError detail: {detail}\r\n")

    def _serve(self) -> None:
        while (chunk := self._port.read(0.01)) is not None:
            if chunk:
                self._inbuf += chunk
                while b"\n" in self._inbuf:
                    line, self._inbuf = self._inbuf.split(b"\n", 1)
                    self._handle(line.decode("ascii", "replace").strip())
            if self._acquiring:
                self._stream()

    # -- commands -------------------------------------------------------------------------

    def _handle(self, line: str) -> None:
        if not line:
            return
        words = line.split()
        name, args = words[0], words[1:]
        # `pwr` "Can be used during acquisition" (the firmware's help, in the MLCommons
        # runner's power_manager_lpm.py), and the runner sends `pwr off` before `stop`.
        if self._acquiring and name not in ("stop", "pwr"):
            self._error(line, "acquisition running: send stop first")
            return
        if name in CONFIG_COMMANDS and not self.host_control:
            self._error(line, "host control required: send htc first")
            return
        handler = getattr(self, f"_cmd_{name}", None)
        if handler is None:
            self._error(line, f"unknown command '{name}'")
            return
        try:
            reply = handler(args)
        except (ValueError, IndexError) as exc:
            self._error(line, str(exc) or "bad argument")
            return
        self._reply(f"ack {line}" + (f" {reply}" if reply else ""))

    def _cmd_htc(self, args: list[str]) -> None:
        self.host_control = True

    def _cmd_hrc(self, args: list[str]) -> None:
        self.host_control = False

    def _cmd_powershield(self, args: list[str]) -> str:
        return self.serial

    def _cmd_version(self, args: list[str]) -> str:
        return f"version: {self.firmware}"

    def _cmd_status(self, args: list[str]) -> str:
        return "ok"

    def _cmd_lcd(self, args: list[str]) -> None:
        pass

    def _cmd_volt(self, args: list[str]) -> str | None:
        if args[0] == "get":
            return f"{round(self.voltage_v * 1000)}m"
        volts = parse_number(args[0])
        if not 1.8 - 1e-9 <= volts <= 3.3 + 1e-9:
            raise ValueError("voltage out of range [1800m;3300m]")
        self.voltage_v = volts
        return None

    def _cmd_freq(self, args: list[str]) -> None:
        hz = parse_number(args[0])
        if hz not in FREQUENCIES_HZ:
            raise ValueError(f"frequency not in {', '.join(map(format_frequency, FREQUENCIES_HZ))}")
        self.freq_hz = hz

    def _cmd_acqtime(self, args: list[str]) -> None:
        value = 0.0 if args[0] == "inf" else parse_number(args[0])
        if value != 0 and not 100e-6 <= value <= 100:
            raise ValueError("acquisition time out of range [100u;100] (0 or inf: infinite)")
        self.acqtime_s = value

    def _cmd_trigsrc(self, args: list[str]) -> None:
        if args[0] not in ("sw", "d7"):
            raise ValueError("trigger source must be sw or d7")

    def _cmd_trigdelay(self, args: list[str]) -> None:
        if not 0 <= parse_number(args[0]) <= 30:
            raise ValueError("trigger delay out of range [0;30]")

    def _cmd_eventsrc(self, args: list[str]) -> None:
        if args[0] != "d7" or args[1] not in ("fal", "ris"):
            raise ValueError("event source must be 'd7 fal' or 'd7 ris'")
        self.event_polarity = "fall" if args[1] == "fal" else "rise"

    def _cmd_output(self, args: list[str]) -> None:
        if args[0] not in ("current", "energy"):
            raise ValueError("output must be current or energy")
        self.output = args[0]

    def _cmd_format(self, args: list[str]) -> None:
        if args[0] not in ("ascii_dec", "bin_hexa"):
            raise ValueError("format must be ascii_dec or bin_hexa")
        self.format = args[0]

    def _cmd_pwr(self, args: list[str]) -> str | None:
        if args[0] == "get":
            return "on" if self.powered else "off"
        if args[0] not in ("on", "off", "auto"):
            raise ValueError("pwr takes on, off, auto or get")
        if args[1:] and args[1] not in ("status", "nostatus"):
            raise ValueError("pwr's second argument is status or nostatus")
        self.pwr_mode = args[0]
        if args[0] != "auto":  # auto: the state changes when an acquisition starts
            self._set_power(args[0] == "on")
        return None

    def _set_power(self, on: bool) -> None:
        self.powered = on
        self.timeline.set_powered(on)

    def _cmd_start(self, args: list[str]) -> None:
        if self.format == "bin_hexa" and self.output == "energy":
            # The manual documents no binary energy format: our choice (UNVERIFIED).
            raise ValueError("output energy is not available in bin_hexa: send output current")
        limit = ASCII_LIMITED_MAX_S.get(int(self.freq_hz))
        if self.format == "ascii_dec" and self.freq_hz > ASCII_UNLIMITED_MAX_HZ and (
            limit is None or self.acqtime_s == 0 or self.acqtime_s > limit
        ):
            raise ValueError(
                f"{format_frequency(self.freq_hz)}Hz in ascii_dec is limited: use at most "
                f"{format_frequency(ASCII_UNLIMITED_MAX_HZ)} for an unlimited acquisition, "
                "or bin_hexa"
            )
        with self.timeline.lock:
            self._acq_start_s = self.timeline.clock.now()
        self._emitted = 0
        self._announce = self.format == "bin_hexa"
        self._acquiring = True
        if self.pwr_mode == "auto":
            self._set_power(True)

    def _cmd_stop(self, args: list[str]) -> None:
        if self._acquiring:
            self._stream()
        if self._acquiring:
            self._end()
        self._write(f"{PROMPT}Acquisition completed\r\n")

    def _end(self) -> None:
        self._acquiring = False
        if self.format == "bin_hexa":
            self._write_bytes(frame(F_END))
        else:
            self._write("end\r\n")

    def _unplug(self, data: bytes) -> None:
        """Send what came before the fault, then close the port as a pulled cable does."""
        self._write_bytes(data)
        self._port.unplug()

    # -- streaming ------------------------------------------------------------------------

    def _stream(self) -> None:
        """Send every whole sample period that virtual time has passed since the last call."""
        f = self.faults
        with self.timeline.lock:
            now = self.timeline.clock.now()
            due = int((now - self._acq_start_s) * self.freq_hz)
            if self.acqtime_s:
                due = min(due, round(self.acqtime_s * self.freq_hz))
            if f.stall_after is not None:
                due = min(due, f.stall_after)
            count = due - self._emitted
            if count <= 0:
                return
            period = 1.0 / self.freq_hz
            t0 = self._acq_start_s + self._emitted * period
            charges = self.timeline.charge_per_sample(t0, period, count)
            edges = self.timeline.edges_between(t0, t0 + count * period)
        scale = self.voltage_v if self.output == "energy" else self.freq_hz
        if not self.powered:
            scale = 0.0
        edge_at: dict[int, list[str]] = {}
        for e in edges:
            if e.polarity == self.event_polarity:
                k = int((e.time_s - self._acq_start_s) * self.freq_hz)
                # The MLCommons runner configures `eventsrc d7 fal` and reads the edges as
                # lines matching r"event \d+ ris" (power_manager_lpm.py read_loop,
                # script.py _gather_power_results), on real benches: the firmware labels
                # the configured D7 edge `ris`, whichever polarity was set.
                edge_at.setdefault(k, []).append("ris")
        send = self._send_binary if self.format == "bin_hexa" else self._send_ascii
        if not send(charges * scale, edge_at):
            return  # unplugged
        self._emitted += count
        if self._acquiring and self.acqtime_s and (
            self._emitted >= round(self.acqtime_s * self.freq_hz)
        ):
            self._end()
            self._write(f"{PROMPT}Acquisition completed\r\n")

    def _event_label(self, polarity: str) -> str | None:
        """The next edge's text, or ``None`` when the fault loses it."""
        counter = self._event_counter
        self._event_counter += 1
        if counter == self.faults.lose_event:
            return None
        return f"event {counter % 100:02d} {polarity}"

    def _send_ascii(self, values: np.ndarray, edge_at: dict[int, list[str]]) -> bool:
        """One block of ``ascii_dec``; False once a fault unplugged the port."""
        f = self.faults
        first, last = self._emitted, self._emitted + len(values)
        in_block = [k for k in (f.unplug_after, f.garble_at, f.garble_sample_at)
                    if k is not None and first <= k < last]
        dropping = f.drop_at is not None and f.drop_at < last and f.drop_at + f.drop_count > first
        if in_block or dropping:
            return self._send_ascii_each(values, edge_at)
        self._write_bytes(self._ascii_block(values, edge_at))
        return True

    def _ascii_block(self, values: np.ndarray, edge_at: dict[int, list[str]]) -> bytes:
        """What :meth:`_send_ascii_each` sends for a block with no fault in it, byte for byte,
        without its per-sample Python work: each distinct value (a few: the current is
        piecewise constant) is formatted once, and the timestamps, edges and run-on lines are
        spliced in where that loop puts them."""
        first, last = self._emitted, self._emitted + len(values)
        distinct, which = np.unique(values, return_inverse=True)
        line = np.array([f"{format_sample(v)}\r\n".encode("ascii") for v in distinct], "S9")
        lines = line[which].tobytes()
        # Text sent before sample p: the timestamp ending the 1000 samples before it, then p's
        # edges (p == last: a timestamp after the block's last sample).
        before: dict[int, list[str]] = {}
        for p in range(-(-(first + 1) // TIMESTAMP_EVERY) * TIMESTAMP_EVERY, last + 1,
                       TIMESTAMP_EVERY):
            ms = self.timestamp_base_ms + round(p / self.freq_hz * 1000)
            nul = "\x00" if self.faults.quirks else ""
            before[p] = [f"TimeStamp: {ms // 1000:03d}s {ms % 1000:03d}ms, buff 00%\r\n{nul}"]
        for k in sorted(edge_at):
            if first <= k < last:
                labels = [f"{label}\r\n" for pol in edge_at[k] if (label := self._event_label(pol))]
                before.setdefault(k, []).extend(labels)
        run_on = {
            k for k in range(first + (996 - first) % 997, last - 1, 997)
            if (k + 1) % TIMESTAMP_EVERY and k + 1 not in edge_at
        } if self.faults.quirks else set()
        out: list[bytes] = []
        done = first  # samples before this one are in out
        for p in sorted(before.keys() | {k + 1 for k in run_on}):
            chunk = lines[(done - first) * 9 : (p - first) * 9]
            out += [chunk[:-2] if p - 1 in run_on else chunk,
                    "".join(before.get(p, ())).encode("ascii")]
            done = p
        out.append(lines[(done - first) * 9 :])
        return b"".join(out)

    def _send_ascii_each(self, values: np.ndarray, edge_at: dict[int, list[str]]) -> bool:
        """Sample by sample, for a block a fault touches."""
        f = self.faults
        count = len(values)
        out: list[str] = []
        for i in range(count):
            k = self._emitted + i
            if k == f.unplug_after:
                self._unplug("".join(out).encode("ascii"))
                return False
            for pol in edge_at.get(k, ()):
                if label := self._event_label(pol):
                    out.append(f"{label}\r\n")
            if k == f.garble_at:
                out.append("#\x7f?G@rbl3d\r\n")
            lost = f.drop_at is not None and f.drop_at <= k < f.drop_at + f.drop_count
            if k == f.garble_sample_at:
                sample = format_sample(values[i])
                out.append(sample[0] + sample[2:] + "\r\n")  # one character lost in transit
            elif not lost:
                sample = format_sample(values[i])
                run_on = i + 1 < count and (k + 1) % TIMESTAMP_EVERY and k + 1 not in edge_at
                if f.quirks and k % 997 == 996 and run_on:
                    out.append(sample)  # the next sample runs on without a line break
                else:
                    out.append(sample + "\r\n")
            if (k + 1) % TIMESTAMP_EVERY == 0:
                ms = self.timestamp_base_ms + round((k + 1) / self.freq_hz * 1000)
                out.append(f"TimeStamp: {ms // 1000:03d}s {ms % 1000:03d}ms, buff 00%\r\n")
                if f.quirks:
                    out.append("\x00")
        self._write("".join(out))
        return True

    def _send_binary(self, currents: np.ndarray, edge_at: dict[int, list[str]]) -> bool:
        """One block of ``bin_hexa``: the samples as words, frames spliced in between."""
        f = self.faults
        first, last = self._emitted, self._emitted + len(currents)
        inserts: dict[int, list[bytes]] = {}  # frames sent before sample k
        for k in range(-(-(first + 1) // TIMESTAMP_EVERY) * TIMESTAMP_EVERY, last + 1,
                       TIMESTAMP_EVERY):
            inserts.setdefault(k, []).append(timestamp_frame(round(k * 1000 / self.freq_hz)))
        for k in sorted(edge_at):
            for pol in edge_at[k]:
                if label := self._event_label(pol):
                    inserts.setdefault(k, []).append(text_frame(F_INFO, label))
        if f.garble_at is not None and first <= f.garble_at < last:
            inserts.setdefault(f.garble_at, []).append(GARBLED_FRAME)
        over = np.flatnonzero(currents > OVERCURRENT_A)
        overcurrent = first + int(over[0]) if len(over) else None
        unplug = f.unplug_after
        if unplug is not None and not first <= unplug < last:
            unplug = None
        stop = min(k for k in (overcurrent, unplug, last) if k is not None)
        keep = np.ones(len(currents), dtype=bool)
        if f.drop_at is not None:
            keep[max(f.drop_at - first, 0) : max(f.drop_at + f.drop_count - first, 0)] = False
        words = encode_currents(currents).astype(">u2")
        pieces: list[bytes] = []
        if self._announce:
            self._announce = False
            pieces += [frame(F_VOLTAGE, round(self.voltage_v * 1000).to_bytes(2, "big")),
                       frame(F_POWER, bytes((int(self.powered),)))]
        a = first
        for k in sorted(k for k in inserts if k < stop or k == stop == last):
            pieces.append(words[a - first : k - first][keep[a - first : k - first]].tobytes())
            pieces.extend(inserts[k])
            a = k
        pieces.append(words[a - first : stop - first][keep[a - first : stop - first]].tobytes())
        if stop == unplug:
            self._unplug(b"".join(pieces))
            return False
        self._write_bytes(b"".join(pieces))
        if stop == overcurrent:  # the protection cuts the target and ends the acquisition
            self._set_power(False)
            self._write_bytes(frame(F_OVERCURRENT))
            self._end()
        return True
