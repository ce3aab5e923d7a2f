"""The virtual lab's DUT: the MLPerf Tiny firmware's serial protocol, served from a thread.

With no board attached, ``tinypower measure`` still runs the real host code end to end: the
client opens this DUT's pty (or loopback socket) exactly as it opens a board's UART, and the
simulated energy monitor measures the current this DUT books on the shared
:class:`~energy_monitor.sim.load.LoadTimeline`. The replies follow the reference firmware
(``mlcommons/tiny:benchmark/api/internally_implemented.cpp``) byte for byte, quirks included:
``infer N`` without W runs 10 warm-ups, ``db print`` ends an odd-sized buffer with an empty line,
the boot calls the timestamp once (a pin pulse in energy mode, an ``m-lap-us-`` line in
performance mode). Where the reference would carry on with garbage it answers ``e-[...]``:
an over-long command, ``infer`` without a complete input, ``results`` before any ``infer``.

Time is virtual. An ``infer N W`` books its current and timestamp edges on the timeline (under
the timeline's lock, before the clock moves), then advances the shared clock by the time the
board would have taken, so a 100 s window costs milliseconds of wall time. The model itself runs
once per ``infer`` command, in the host's tflite-micro interpreter: its output for an identical
input is identical, so running it N + W times would only cost wall time.
"""

from __future__ import annotations

import os
import re
import select
import socket
import string
import threading
import time
import tty
from collections.abc import Callable
from functools import partial
from types import TracebackType

from energy_monitor.sim.load import LoadTimeline
from energy_monitor.sim.pty_port import UartPacer
from tinypower.boards import Board
from tinypower.dut.protocol import DUT_COMMAND_CHARS, FIRMWARE_INFER_WARMUPS
from tinypower.suites.benchmarks import Suite
from tinypower.suites.reference import ReferenceModel

MODES = ("performance", "energy")
TRANSPORTS = ("pty", "tcp")
FW_VERSION = "ULPMark for tinyML Firmware V0.0.1"
US_COUNTER_WRAP = 2**32  # the DUT's free-running 32-bit µs counter
DB_PRINT_BYTES_PER_LINE = 8
HELP_LINES = (
    FW_VERSION,
    "",
    "help         : Print this information",
    "name         : Print the name of the device",
    "timestsamp   : Generate a timetsamp",
    "db SUBCMD    : Manipulate a generic byte buffer",
    "  load N     : Allocate N bytes and set load counter",
    "  db HH[HH]* : Load 8-bit hex byte(s) until N bytes",
    "  print [N=16] [offset=0]",
    "             : Print N bytes at offset as hex",
    "infer N [W=0]: Load input, execute N inferences after W warmup loops",
    "results      : Return the result fp32 vector",
)
_HEX_DIGITS = frozenset(string.hexdigits)
_ATOI = re.compile(r"\s*([+-]?\d+)")


class SoftwareDut:
    """A simulated MLPerf Tiny DUT on a pty or a loopback TCP port.

    ``corrupt_download_byte`` flips every bit of the byte received at that offset of a ``db``
    download, as a UART error would, so tests can prove the host notices. ``uart_baud`` makes
    its replies take the UART's time (bytes x 10 / baud), on the virtual clock unless
    ``realtime``. It boots when ``timeline.powered``
    and whenever the timeline's supply is switched on; unpowered it is silent. ``realtime``
    makes an ``infer`` take its time on the wall clock instead of jumping the virtual clock,
    so a meter streams its window as a real one does (for hosts that read the stream as it
    comes, like the MLCommons runner, which cannot take 10 s of samples at once).
    """

    def __init__(
        self,
        *,
        model: bytes,
        suite: Suite,
        board: Board,
        timeline: LoadTimeline,
        mode: str,
        macs: int,
        name: str = "tinypowersim-software-dut",
        corrupt_download_byte: int | None = None,
        uart_baud: int | None = None,
        realtime: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if board.cycle_model is None or board.energy_model is None:
            raise ValueError(
                f"board {board.name!r} has no [cycle_model] or [energy_model]: the software DUT "
                "needs a virtual board such as sim-m4"
            )
        self.suite = suite
        self.mode = mode
        self.name = name
        self.timeline = timeline
        self.corrupt_download_byte = corrupt_download_byte
        self.latency_s = board.cycle_model.latency_s(macs, board.clock_hz, model)
        self.energy = board.energy_model
        self.url: str | None = None
        self._reference = ReferenceModel(model, suite)
        self._commands: dict[str, Callable[[list[str]], list[str]]] = {
            "name": lambda _: [f"m-name-dut-[{self.name}]"],
            "timestamp": lambda _: self._timestamp(),
            "profile": lambda _: [f"m-profile-[{FW_VERSION}]", f"m-model-[{suite.name}]"],
            "help": lambda _: list(HELP_LINES),
            "db": self._db,
            "infer": self._infer,
            "results": self._results,
            "mode": self._mode,
        }
        self._cmd = bytearray()
        self._cmd_overflow = False
        self._buffer = bytearray()  # the `db load` buffer
        self._loaded = 0  # bytes of it received so far
        self._last_results: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()  # close() writes to it to end any wait at once
        self._power_r, self._power_w = os.pipe()  # the supply switched: b"1" on, b"0" off
        self._closers: list[Callable[[], None]] = [
            partial(os.close, fd)
            for fd in (self._wake_r, self._wake_w, self._power_r, self._power_w)
        ]
        self._pacer = UartPacer(uart_baud, None if realtime else timeline)
        self.realtime = realtime
        self._powered = timeline.powered
        timeline.on_power(self._power_switched)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, transport: str = "pty") -> str:
        """Boot and serve; return the URL to open (a pty path, or ``socket://127.0.0.1:PORT``).

        On a pty the banner is printed at once, so a client that opens the port later (and
        flushes its input, as pyserial does) misses it, as it would miss a real board's.
        Over TCP the DUT boots when its one client connects.
        """
        if self._thread is not None or self._stop.is_set():
            raise RuntimeError("a software DUT starts once: make a new one")
        if transport == "pty":
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._closers += [partial(os.close, master), partial(os.close, slave)]
            self.url = os.ttyname(slave)
            target = partial(self._run, master)
        elif transport == "tcp":
            listener = socket.create_server(("127.0.0.1", 0))
            self._closers.append(listener.close)
            self.url = f"socket://127.0.0.1:{listener.getsockname()[1]}"
            target = partial(self._accept_and_run, listener)
        else:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        self._thread = threading.Thread(target=target, name=f"software-dut {self.url}", daemon=True)
        self._thread.start()
        return self.url

    def close(self) -> None:
        """Stop serving at once and release the pty or socket."""
        if self._stop.is_set():
            return
        self._stop.set()
        os.write(self._wake_w, b"x")  # never drained: every later wait returns at once
        if self._thread is not None:
            self._thread.join()
        for closer in self._closers:
            closer()
        self._closers.clear()

    def __enter__(self) -> SoftwareDut:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------

    def _accept_and_run(self, listener: socket.socket) -> None:
        self._wait([listener])
        if self._stop.is_set():
            return
        conn, _ = listener.accept()
        with conn:
            conn.setblocking(False)
            self._run(conn.fileno())

    def _power_switched(self, on: bool) -> None:
        """The timeline's supply changed (called from the simulated monitor's thread)."""
        if not self._stop.is_set():
            os.write(self._power_w, b"1" if on else b"0")

    def _boot(self, fd: int) -> None:
        """Power-on reset: state cleared, the banner printed (with the boot's timestamp)."""
        self._cmd.clear()
        self._cmd_overflow = False
        self._buffer = bytearray()
        self._loaded = 0
        self._last_results = None
        banner = [f"m-timestamp-mode-{self.mode}", *self._timestamp(), "m-init-done"]
        self._write(fd, _encode([*banner, "m-ready"]))

    def _run(self, fd: int) -> None:
        """Boot when powered, then answer commands until close() or until the peer hangs up.

        Unpowered (in energy mode only the monitor supplies the DUT), it is silent and what it
        is sent is lost; switching the supply on boots it again."""
        try:
            if self._powered:
                self._boot(fd)
            while True:
                ready = self._wait([fd, self._power_r])
                if self._stop.is_set():
                    return
                if self._power_r in ready:
                    for switch in os.read(self._power_r, 64):
                        was, self._powered = self._powered, switch == ord("1")
                        if self._powered and not was:
                            self._boot(fd)
                if fd not in ready:
                    continue
                try:
                    data = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                if not data:
                    return
                if not self._powered:
                    continue  # an unpowered MCU hears nothing
                for byte in data:
                    reply = self._receive(byte)
                    if reply:
                        self._write(fd, reply)
        except OSError:
            return  # the client hung up (a closed socket); nothing is left to answer

    def _write(self, fd: int, data: bytes) -> None:
        """Send ``data`` at the UART's baud (when given): the firmware's printf blocks."""
        for piece in self._pacer.pieces(data):
            view = memoryview(piece)
            while view:
                self._wait([], [fd])
                if self._stop.is_set():
                    return
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    continue

    def _wait(
        self, read: list[int | socket.socket], write: list[int] | None = None
    ) -> list[int | socket.socket]:
        """Block until one of the fds is ready or close() is called; the readable ones."""
        return select.select([*read, self._wake_r], write or [], [])[0]

    def _receive(self, byte: int) -> bytes:
        """One received byte, as ``ee_serial_callback``: a reply when it ends a command."""
        if byte != ord("%"):
            if len(self._cmd) < DUT_COMMAND_CHARS:
                self._cmd.append(byte)
            else:
                self._cmd_overflow = True
            return b""
        text, overflow = self._cmd.decode("latin-1"), self._cmd_overflow
        self._cmd.clear()
        self._cmd_overflow = False
        if overflow:
            lines = [f"e-[Command too long: more than {DUT_COMMAND_CHARS} characters before '%']"]
        else:
            lines = self._execute(text)
        return _encode([*lines, "m-ready"])

    def _execute(self, text: str) -> list[str]:
        words = [w for w in text.split(" ") if w]  # strtok: runs of spaces are one delimiter
        command = words[0] if words else ""
        handler = self._commands.get(command)
        if handler is None:
            return [f"e-[Unknown command: {command}]"]
        try:
            return handler(words[1:])
        except Exception as exc:  # a fault in the simulation must still end with m-ready
            return [f"e-[{type(exc).__name__}: {exc}]"]

    # -- commands -------------------------------------------------------------------------

    def _timestamp(self) -> list[str]:
        """The ``timestamp`` command (and the boot's call): a pulse or lap now, then the
        pin's hold time passes, as it does inside ``th_timestamp()`` in both modes."""
        with self.timeline.lock:
            lines = self._pulse(self.timeline.clock.now())
            self.timeline.clock.advance(self.energy.timestamp_hold_s)
        return lines

    def _pulse(self, at_s: float) -> list[str]:
        """``th_timestamp()`` at virtual time ``at_s``: pin edges (energy) or a lap line."""
        if self.mode == "energy":
            self.timeline.add_edge(at_s, "fall")
            self.timeline.add_edge(at_s + self.energy.timestamp_hold_s, "rise")
            return []
        return [f"m-lap-us-{int(at_s * 1e6) % US_COUNTER_WRAP}"]

    def _book_current(self, current_a: float) -> None:
        with self.timeline.lock:
            self.timeline.set_current(self.timeline.clock.now(), current_a)

    def _mode(self, args: list[str]) -> list[str]:
        """tinypower's extension (firmware/harness, not in the reference firmware): switch
        between energy and performance timestamps at run time; alone, say the mode."""
        if args:
            if args[0] not in MODES:
                return [f"e-[Unknown mode '{args[0]}': send mode energy or mode performance]"]
            self.mode = args[0]
        return [f"m-mode-[{self.mode}]"]

    def _db(self, args: list[str]) -> list[str]:
        if not args:
            return ["e-[Command 'db' requires a subcommand]"]
        if args[0] == "load":
            return self._db_load(args[1:])
        if args[0] == "print":
            return self._db_print()
        return self._db_hex(args[0])

    def _db_load(self, args: list[str]) -> list[str]:
        if not args:
            return ["e-[Command 'db load' requires the # of bytes]"]
        size = _atoi(args[0])
        if size <= 0:
            return ["e-[Command 'db load' must be >0 bytes]"]
        self._loaded = 0
        self._book_current(self.energy.io_current_a)
        if size > self.suite.input_bytes:  # the firmware's buffer is MAX_DB_INPUT_SIZE bytes
            self._buffer = bytearray()  # where the firmware would overrun it, take nothing
            return [f"Supplied buffer size {size} exceeds maximum of {self.suite.input_bytes}"]
        self._buffer = bytearray(size)
        return [f"m-[Expecting {size} bytes]"]

    def _db_print(self) -> list[str]:
        step = DB_PRINT_BYTES_PER_LINE
        lines = [
            "m-buffer-" + "-".join(f"{b:02x}" for b in self._buffer[i : i + step])
            for i in range(0, len(self._buffer), step)
        ]
        # The firmware ends a buffer that is not a multiple of 8 bytes with one more CR/LF.
        return lines + [""] if len(self._buffer) % step else lines

    def _db_hex(self, digits: str) -> list[str]:
        if len(digits) % 2:
            return ["e-[Insufficent number of hex digits]"]  # sic, as the firmware spells it
        for i in range(0, len(digits), 2):
            pair = digits[i : i + 2]
            if not _HEX_DIGITS.issuperset(pair):
                return [f"e-[Invalid hex digit '{pair}']"]
            if self._loaded == len(self._buffer):
                break  # the firmware disregards digits past the announced size
            value = int(pair, 16)
            if self._loaded == self.corrupt_download_byte:
                value ^= 0xFF
            self._buffer[self._loaded] = value
            self._loaded += 1
            if self._loaded == len(self._buffer):
                self._book_current(self.energy.idle_current_a)
                return ["m-load-done"]
        return []

    def _infer(self, args: list[str]) -> list[str]:
        n = _atoi(args[0]) if args else 1
        if n <= 0:
            return ["e-[Inference iterations must be >0]"]
        warmups = _atoi(args[1]) if len(args) > 1 else FIRMWARE_INFER_WARMUPS
        if warmups < 0:
            return ["e-[Inference warmup must be >=0]"]
        wire = bytes(self._buffer[: self._loaded])
        if len(wire) != self.suite.input_bytes:
            return [
                f"e-[Input buffer holds {len(wire)} bytes, {self.suite.name} needs "
                f"{self.suite.input_bytes}: send db load {self.suite.input_bytes} and db first]"
            ]
        self._last_results = self._reference.results_payload(wire)
        lat, hold = self.latency_s, self.energy.timestamp_hold_s
        with self.timeline.lock:
            start = self.timeline.clock.now()
            self.timeline.set_current(start, self.energy.active_current_a)
            first = start + warmups * lat  # only the N inferences lie between the timestamps
            second = first + hold + n * lat
            end = second + hold
            laps = self._pulse(first) + self._pulse(second)
            self.timeline.set_current(end, self.energy.idle_current_a)
            if not self.realtime:
                self.timeline.clock.advance(end - start)
        if self.realtime:
            time.sleep(end - start)
        return [
            f"m-warmup-start-{warmups}",
            "m-warmup-done",
            f"m-infer-start-{n}",
            *laps,
            "m-infer-done",
            f"m-results-[{self._last_results}]",
        ]

    def _results(self, _: list[str]) -> list[str]:
        if self._last_results is None:
            return ["e-[No results yet: run infer first]"]
        return [f"m-results-[{self._last_results}]"]


def _atoi(text: str) -> int:
    """C ``atoi``: the leading integer, 0 when there is none."""
    m = _ATOI.match(text)
    return int(m.group(1)) if m else 0


def _encode(lines: list[str]) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode("latin-1")
