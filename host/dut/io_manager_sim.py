"""A simulated IO manager: the energy-mode UART path between the host and an isolated DUT.

In energy mode the DUT is powered only by the energy monitor, so the host cannot share its
UART; an IO manager relays it (``shared/reference/mlperf-tiny-protocol.md`` §10). This
simulator stands where that board stands: it opens the DUT's port with pyserial, as the board's
UART faces the DUT, and offers the host a real pty at 115200 baud. Two kinds:

- ``arduino``: EEMBC's Arduino UNO IO Manager (``io-manager_1.0.3.hex``). DUT output is
  forwarded as soon as it arrives, ``[dut]: `` prefixed, even outside a passthrough (the EEMBC
  logs show the DUT's boot banner that way). Its DUT UART is fixed at 9600 baud. With a
  ``timeline`` (the DUT's timestamp pin wired to D3) and the timer enabled it prints
  ``m-lap-us-N`` for each timestamp edge, falling only after ``tm 0``.
- ``mlcommons``: the STM32H573I-DK "tinyML Enhanced Interface Board"
  (``mlcommons/tiny:benchmark/interface``). Its DUT UART feeds a 100-byte receive queue that
  only a passthrough reads (``Uart.cpp``), so what the DUT prints between commands comes out at
  the start of the next passthrough, and whatever overflows the queue is lost. Its DUT baud is
  kept in flash: ``setbaud N`` writes it and resets the board, ``checkbaud`` reads it.

Both answer ``dut <cmd>%`` with ``m-dut-passthrough(<cmd>)``, ``m-ready``, then each DUT line
prefixed ``[dut]: `` up to and including ``[dut]: m-ready``; a passthrough waits for that
``m-ready`` however long it takes (``DeviceUnderTest.cpp``), so a DUT that never answers leaves
the board deaf to the host. When the board's baud differs from the DUT's (``dut_baud``), the
bytes each side sends arrive as garbage: the DUT gets 0xFF bytes, the board hears nothing.

The interface board's replies are quoted from its firmware
(``benchmark/interface/Application/CLI/InterfaceMenu.cpp``, ``Menu.cpp``): ``checkbaud`` ->
``baud is: N``, ``setbaud N`` -> ``set baud to: N`` (both ended by a bare LF), an unknown
command -> just ``m-ready``, and nothing at all when it boots. Replies marked UNVERIFIED below
are not in any public source (the Arduino's ``name``, ``version``, ``res`` and error
replies); the client does not depend on their wording. Faults for tests: a passthrough header
cut short, and output the DUT prints on its own (which on the Arduino also fractures the next
command, as its half-duplex software UART does).
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass

import serial

from energy_monitor.sim.load import LoadTimeline
from energy_monitor.sim.pty_port import UartPacer
from tinypower.dut.io_manager import (
    ARDUINO_DUT_BAUD,
    DEFAULT_DUT_BAUD,
    DUT_PREFIX,
    HOST_BAUD,
    KINDS,
    MLCOMMONS_BOARD_NAME,
)

ARDUINO_NAME = "m-name-[io-manager]"  # UNVERIFIED
ARDUINO_VERSION = "1.0.3"  # the EEMBC image is io-manager_1.0.3.hex; the reply format is UNVERIFIED
RX_QUEUE_BYTES = 100  # the interface board's DUT receive queue (Uart.cpp RX_QUEUE_SIZE)
US_COUNTER_WRAP = 2**32  # the Arduino's micros()
POLL_S = 0.01
BOOT_BANNER = ("m-timestamp-mode-energy", "m-init-done", "m-ready")  # a DUT that rebooted
ARDUINO_HELP = (  # the commands of io_manager.py's docstring, in our words
    "help          this list",
    "name          device name",
    "res           reset polarity 0*,1",
    "enable-timer  enable the timestamp timer ISR",
    "disable-timer disable it",
    "dut           DUT passthrough",
    "i2c-enable    N: I2C slave mode, send N bytes (mod 16)",
    "i2c-disable   end I2C slave mode",
    "load-vdata    load 16 random bytes into vdata",
    "show-vdata    show vdata",
    "et            start the energy monitor",
    "tm            timestamp mode 0=fall, 1*=change",
    "tp            [res]",
    "version       firmware version",
)
ARDUINO_NOT_SIMULATED = ("i2c-enable", "i2c-disable", "load-vdata", "show-vdata", "et", "tp")
MLCOMMONS_NOT_SIMULATED = ("play", "print_dutycycle")  # SD-card audio and SWW duty cycle


@dataclass(frozen=True)
class IoManagerFaults:
    """Faults to inject; passthroughs are counted from 0, ``None`` means never."""

    header_fault_at: int | None = None  # this passthrough's two-line header is cut short...
    header_lines_kept: int = 0  # ...to this many lines (0: none, 1: no board m-ready)
    unsolicited_after: int | None = None  # after this many passthroughs the DUT speaks unasked
    unsolicited_lines: tuple[str, ...] = BOOT_BANNER


class IoManagerSimulator:
    """The board between the host's pty and the DUT's port; :meth:`start` returns the pty path.

    ``dut_baud`` is the DUT firmware's UART baud; ``stored_baud`` the interface board's flash
    setting (the Arduino's is fixed at 9600). ``flash_writes``, ``resets`` and
    ``passthroughs`` count what happened, for tests.
    """

    def __init__(
        self,
        dut_url: str,
        kind: str = "arduino",
        dut_baud: int = DEFAULT_DUT_BAUD,
        *,
        stored_baud: int = DEFAULT_DUT_BAUD,
        timeline: LoadTimeline | None = None,
        faults: IoManagerFaults | None = None,
        reset_s: float = 0.2,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"IO manager kind must be one of {', '.join(KINDS)}, not {kind!r}")
        self.dut_url = dut_url
        self.kind = kind
        self.dut_baud = dut_baud
        self.stored_baud = ARDUINO_DUT_BAUD if kind == "arduino" else stored_baud
        self.timeline = timeline
        self.faults = faults or IoManagerFaults()
        self.reset_s = reset_s
        # Both UARTs take their time (bytes x 10 / baud): host side 115200, DUT side dut_baud.
        self._host_pacer = UartPacer(HOST_BAUD)
        self._dut_pacer = UartPacer(dut_baud)
        self.passthroughs = 0
        self.flash_writes = 0
        self.resets = 0
        self.timer_enabled = False
        self.timestamp_mode = 1  # tm: 0 = falling edges, 1 = both (the default)
        self.reset_polarity = 0
        self._lap_from_s = 0.0
        self._fracture_next = False
        self._reset_pending = False
        self._host_rx = bytearray()
        self._dut_rx = bytearray()  # DUT bytes not yet forwarded (the interface board's queue)
        self._closed = threading.Event()
        self._dut: serial.SerialBase | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._thread: threading.Thread | None = None
        self._commands: dict[str, Callable[[str], list[str]]] = (
            {
                "help": lambda _: list(ARDUINO_HELP),
                "name": lambda _: [ARDUINO_NAME],
                "version": lambda _: [f"m-version[{ARDUINO_VERSION}]"],
                "res": self._res,
                "tm": self._tm,
                "enable-timer": self._enable_timer,
                "disable-timer": self._disable_timer,
            }
            if kind == "arduino"
            else {
                "name": lambda _: [MLCOMMONS_BOARD_NAME],
                # InterfaceMenu.cpp CheckBaud: SendString("baud is: " + ... + "\n") (no CR)
                "checkbaud": lambda _: [f"baud is: {self.stored_baud}\n"],
                "setbaud": self._setbaud,
                "ls": lambda _: [],  # the simulated SD card is empty
                "record_detections": lambda _: ["Now recording detections"],
                "print_detections": lambda _: ["Detection Timestamps (ms)"],
            }
        )
        for name in ARDUINO_NOT_SIMULATED if kind == "arduino" else MLCOMMONS_NOT_SIMULATED:
            self._commands[name] = lambda _, name=name: [f"e-[{name}: not simulated]"]

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> str:
        """Open the DUT's port, start serving and return the pty the host opens."""
        try:
            self._dut = serial.serial_for_url(self.dut_url, baudrate=self.dut_baud, timeout=POLL_S)
        except (serial.SerialException, ValueError) as exc:
            raise RuntimeError(
                f"the IO manager simulator cannot open the DUT at {self.dut_url!r}: {exc}"
            ) from exc
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        if self.faults.unsolicited_after == 0:
            self._unsolicited()
        self._thread = threading.Thread(target=self._serve, name=f"io-manager-{self.kind}",
                                        daemon=True)
        self._thread.start()
        return os.ttyname(self._slave)

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._dut is not None:
            self._dut.close()
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = self._dut = None

    def __enter__(self) -> IoManagerSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving --------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([self._master], [], [], POLL_S)
                if ready:
                    self._host_rx += os.read(self._master, 4096)
                    while (end := self._host_rx.find(b"%")) >= 0 and not self._closed.is_set():
                        text = self._host_rx[:end].decode("latin-1")
                        del self._host_rx[: end + 1]
                        self._handle(text)
                self._idle_dut()
        except (OSError, serial.SerialException):
            return  # closed under us

    def _handle(self, text: str) -> None:
        if self._fracture_next:  # the host's bytes arrived while the DUT was talking
            self._fracture_next = False
            text = text[: len(text) // 2] + text[len(text) // 2 + 1 :]
        word, _, args = text.partition(" ")
        if word == "dut":
            self._passthrough(args)
            return
        handler = self._commands.get(word)
        if handler is not None:
            lines = handler(args)
        elif self.kind == "arduino":
            lines = [f"e-[Unknown command: {word}]"]  # UNVERIFIED
        else:
            lines = []  # Menu::Default: just m-ready
        self._write_lines([*lines, "m-ready"])
        if self._reset_pending:
            self._reset()

    def _passthrough(self, cmd: str) -> None:
        index = self.passthroughs
        self.passthroughs += 1
        header = [f"m-dut-passthrough({cmd})", "m-ready"]
        if self.faults.header_fault_at == index:
            header = header[: self.faults.header_lines_kept]
        self._write_lines(header)
        payload = f"{cmd}%".encode("latin-1")
        for piece in self._dut_pacer.pieces(payload if self._link_ok() else b"\xff" * len(payload)):
            self._dut.write(piece)
        while not self._closed.is_set():
            line = self._pop_dut_line()
            if line is None:
                data = self._dut.read(max(1, self._dut.in_waiting))
                if data and self._link_ok():
                    self._dut_rx += data
                continue
            self._laps()
            self._write_lines([DUT_PREFIX + line])
            if line == "m-ready":
                break
        if self.kind == "mlcommons":
            del self._dut_rx[RX_QUEUE_BYTES:]
        if self.faults.unsolicited_after == self.passthroughs:
            self._unsolicited()

    def _idle_dut(self) -> None:
        """DUT bytes between passthroughs: forwarded (Arduino) or queued (interface board)."""
        waiting = self._dut.in_waiting
        data = self._dut.read(waiting) if waiting else b""
        if not self._link_ok():
            return  # garbage at the wrong baud: nothing the board can read
        if self.kind == "mlcommons":
            self._dut_rx += data[: max(RX_QUEUE_BYTES - len(self._dut_rx), 0)]
            return
        self._dut_rx += data
        while (line := self._pop_dut_line()) is not None:
            self._write_lines([DUT_PREFIX + line])

    def _unsolicited(self) -> None:
        """The DUT prints without being asked (a reboot, a debug print)."""
        if self.kind == "arduino":
            self._write_lines([DUT_PREFIX + line for line in self.faults.unsolicited_lines])
            self._fracture_next = True
        else:
            self._dut_rx += "".join(f"{ln}\r\n" for ln in self.faults.unsolicited_lines).encode()
            del self._dut_rx[RX_QUEUE_BYTES:]

    def _reset(self) -> None:
        """The interface board reboots: host input is lost meanwhile and its queue emptied."""
        self._reset_pending = False
        self.resets += 1
        deadline = time.monotonic() + self.reset_s
        while (left := deadline - time.monotonic()) > 0 and not self._closed.is_set():
            if select.select([self._master], [], [], left)[0]:
                os.read(self._master, 4096)
        self._host_rx.clear()
        self._dut_rx.clear()
        self._dut.reset_input_buffer()
        # The firmware prints nothing of its own when it boots: main() starts the ThreadX
        # tasks and the CLI waits for a command (Menu::Run reads until '%').

    # -- board commands -------------------------------------------------------------------

    def _setbaud(self, args: str) -> list[str]:
        try:
            baud = int(args)
        except ValueError:
            return [f"e-[setbaud needs a baud rate, not {args!r}]"]  # UNVERIFIED
        self.stored_baud = baud
        self.flash_writes += 1
        self._reset_pending = True
        # InterfaceMenu.cpp SetBaud: SendString("set baud to: " + args + "\n"); SendEnd();
        # then NVIC_SystemReset().
        return [f"set baud to: {args}\n"]

    def _res(self, args: str) -> list[str]:
        if args.strip():
            self.reset_polarity = 1 if args.strip() == "1" else 0
        return [f"m-reset-polarity-{self.reset_polarity}"]  # UNVERIFIED

    def _tm(self, args: str) -> list[str]:
        if args.strip():
            self.timestamp_mode = 0 if args.strip() == "0" else 1
        self.timer_enabled = False
        mode = "FALLING" if self.timestamp_mode == 0 else "CHANGE"  # CHANGE is inferred
        return [f"m-timestmp-mode-{mode}", "m-[Timer disabled after mode change]"]

    def _enable_timer(self, _: str) -> list[str]:
        self.timer_enabled = True
        if self.timeline is not None:
            with self.timeline.lock:
                self._lap_from_s = self.timeline.clock.now()
        return ["m-timer-enabled"]

    def _disable_timer(self, _: str) -> list[str]:
        self.timer_enabled = False
        return ["m-timer-disabled"]

    # -- helpers --------------------------------------------------------------------------

    def _laps(self) -> None:
        """D3 debug laps for the timestamp edges since the last look (Arduino, timer on)."""
        if not (self.timer_enabled and self.timeline is not None):
            return
        with self.timeline.lock:
            now = self.timeline.clock.now()
            edges = self.timeline.edges_between(self._lap_from_s, now)
        self._lap_from_s = now
        self._write_lines([
            f"m-lap-us-{int(e.time_s * 1e6) % US_COUNTER_WRAP}"
            for e in edges
            if self.timestamp_mode == 1 or e.polarity == "fall"
        ])

    def _link_ok(self) -> bool:
        return self.stored_baud == self.dut_baud

    def _pop_dut_line(self) -> str | None:
        end = self._dut_rx.find(b"\n")
        if end < 0:
            return None
        raw = bytes(self._dut_rx[:end])
        del self._dut_rx[: end + 1]
        return raw.decode("latin-1").replace("\r", "")

    def _write_lines(self, lines: list[str]) -> None:
        # A line that ends in "\n" is sent as it is: the firmware ends a few replies with a
        # bare LF (see checkbaud and setbaud); every other line ends as SendEndLine's "\r\n".
        text = "".join(line if line.endswith("\n") else f"{line}\r\n" for line in lines)
        for piece in self._host_pacer.pieces(text.encode("latin-1")):
            view = memoryview(piece)
            while view and not self._closed.is_set():
                select.select([], [self._master], [], POLL_S)
                try:
                    view = view[os.write(self._master, view) :]
                except BlockingIOError:
                    continue
